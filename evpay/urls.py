from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from evpay import account, health, i18n, views
from sessions.api import api

handler403 = "evpay.views.permission_denied"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("", include("terminals.urls")),
    path("", include("sessions.urls")),
    # Receipts for drivers, without login: /receipt/ and /r/<token>/ (evpay.security.PUBLIC_PATHS).
    path("", include("sessions.public_urls")),
    path("exceptions/", views.exceptions, name="exceptions"),
    path("exceptions/<uuid:public_id>/resolve/", views.exception_resolve, name="exception_resolve"),
    path("exceptions/<uuid:public_id>/retry/", views.exception_retry, name="exception_retry"),
    path("exceptions/<uuid:public_id>/assign/", views.exception_assign, name="exception_assign"),
    path(
        "exceptions/<uuid:public_id>/session/<str:action>/",
        views.exception_session_action,
        name="exception_session_action",
    ),
    path("jobs/", views.job_runs, name="job_runs"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/password/", account.PasswordChangeView.as_view(), name="password_change"),
    path("account/otp/setup/", account.otp_setup, name="otp_setup"),
    path("account/otp/verify/", account.otp_verify, name="otp_verify"),
    path("account/language/", i18n.set_staff_language, name="set_staff_language"),
    # Django's set_language (POST, CSRF) for anyone, signed in or not: the driver pages' choice.
    path("i18n/", include("django.conf.urls.i18n")),
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
]
