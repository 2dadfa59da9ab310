from django.contrib.auth import views as auth_views
from django.shortcuts import render

from evpay.roles import VIEW_PERM, permission_required


@permission_required(VIEW_PERM)
def overview(request):
    return render(request, "overview.html")


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True


def permission_denied(request, exception=None):
    message = str(exception) if exception and str(exception) else "You do not have access to this."
    return render(request, "403.html", {"message": message}, status=403)
