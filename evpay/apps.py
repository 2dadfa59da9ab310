from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig
from django.db.models.signals import post_migrate


class EvpayConfig(AppConfig):
    name = "evpay"
    verbose_name = "evpay"

    def ready(self):
        # After every migrate, new models' permissions are added to the role groups.
        post_migrate.connect(_sync_after_migrate, dispatch_uid="evpay.sync_roles")
        from django.contrib.auth.signals import user_logged_in

        from evpay.security import start_idle_clock

        # The idle clock starts at log-in (the session is saved then anyway), not with an
        # extra session write on the first page.
        user_logged_in.connect(start_idle_clock, dispatch_uid="evpay.idle_clock")
        from evpay.i18n import load_preference

        # The stored language goes into the session at log-in, so pages need no query for it.
        user_logged_in.connect(load_preference, dispatch_uid="evpay.language")
        from django.core import checks

        from evpay.i18n import check_compiled_catalogues

        checks.register(check_compiled_catalogues, "translation")


def _sync_after_migrate(sender, using="default", **kwargs):
    from django.apps import apps
    from django.contrib.auth.management import create_permissions

    from evpay.roles import sync_role_permissions

    if sender.name != "evpay":
        return
    # Permissions of every app must exist before the groups are synced.
    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)
    sync_role_permissions()


class EvpayAdminConfig(AdminConfig):
    default_site = "evpay.admin.EvpayAdminSite"
