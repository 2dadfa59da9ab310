"""The signed-in staff member's own account: password change and (admins) the TOTP device."""

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.urls import reverse_lazy

from evpay import audit


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's view (login required, CSRF, old password, the validators); on success back to
    the overview with a message instead of a separate "done" page, and an audit row."""

    template_name = "registration/password_change_form.html"
    success_url = reverse_lazy("overview")

    def form_valid(self, form):
        response = super().form_valid(form)  # saves and keeps this session signed in
        user = self.request.user
        audit.record(audit.Actor.user(user), user, "account.password_changed")
        messages.success(self.request, "Your password was changed.")
        return response
