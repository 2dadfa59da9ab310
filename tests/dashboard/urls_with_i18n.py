"""The project's URLs plus Django's set_language view, as the i18n settings will add them."""

from django.urls import include, path

from evpay.urls import urlpatterns as project_urlpatterns

urlpatterns = [*project_urlpatterns, path("i18n/", include("django.conf.urls.i18n"))]
