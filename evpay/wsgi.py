import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evpay.settings")
application = get_wsgi_application()


def _require_collected_static() -> None:
    """With DEBUG off, static URLs come from collectstatic's manifest; without it every page
    that links a stylesheet is a 500. Refuse to start instead, saying what to run."""
    from django.contrib.staticfiles.storage import staticfiles_storage

    manifest = getattr(staticfiles_storage, "manifest_name", None)
    if manifest and not staticfiles_storage.exists(manifest):
        raise ImproperlyConfigured(
            f"static files are not collected ({staticfiles_storage.location}/{manifest} is "
            "missing): run `python manage.py collectstatic --noinput` before starting the web "
            "process (the Procfile's web entry does)"
        )


_require_collected_static()
