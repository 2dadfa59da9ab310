"""evpay settings: one module, driven by environment variables (see README "Configuration")."""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from evpay.env import (
    ImproperlyConfiguredEnv,
    env_bool,
    env_int,
    env_list,
    env_str,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("EVPAY_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

try:
    DEBUG = env_bool("DEBUG", False)
    _missing = []
    SECRET_KEY = env_str("SECRET_KEY")
    if not SECRET_KEY:
        if DEBUG:
            SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"  # noqa: S105
        else:
            _missing.append("SECRET_KEY")
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
    if not ALLOWED_HOSTS:
        _missing.append("ALLOWED_HOSTS")
    if _missing:
        raise ImproperlyConfiguredEnv(
            "DEBUG is off and these settings are missing: "
            + ", ".join(_missing)
            + ". Set them in the environment (or DEBUG=1 for local development)."
        )
    DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'evpay.sqlite3'}")
    DATABASES = {"default": parse_database_url("DATABASE_URL", DATABASE_URL)}
    # Seconds a thread keeps its database connection (0: one per request or task).
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 0, minimum=0)
    # On PostgreSQL every new connection is a new server process: without a pool, live polls
    # of 200 tabs were mostly connection set-up (p99 2.5 s), and 500 terminals' worker threads,
    # each holding one, ran into max_connections. A per-process pool (psycopg_pool, Django's
    # own support) hands a thread a connection only while it works; DB_POOL_MAX_SIZE=0 turns it
    # off (then DB_CONN_MAX_AGE may keep connections instead; Django allows one or the other).
    DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 10, minimum=0)
    if DATABASES["default"]["ENGINE"].endswith("postgresql") and DB_POOL_MAX_SIZE:
        if DATABASES["default"]["CONN_MAX_AGE"]:
            raise ImproperlyConfiguredEnv(
                "DB_CONN_MAX_AGE and the connection pool exclude each other: set "
                "DB_CONN_MAX_AGE=0, or DB_POOL_MAX_SIZE=0 to keep connections without a pool"
            )
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": min(2, DB_POOL_MAX_SIZE),
            "max_size": DB_POOL_MAX_SIZE,
            # A thread that finds every connection in use waits this long, then gets an
            # OperationalError (handled like a database that is briefly away).
            "timeout": env_int("DB_POOL_TIMEOUT", 20, minimum=1),
            # Connections a pool opened during a burst are closed after idling this long.
            "max_idle": 300,
        }
    if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        # A file, not memory: tests start real worker and service processes on the test DB
        # (they get its path in DATABASE_URL). Per process, so two test runs never share one.
        DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
    TIME_ZONE = env_str("TIME_ZONE", "Europe/Amsterdam")
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
    # Trust X-Forwarded-Proto only behind a proxy that sets it: without one, any client could
    # send the header and make a plain-HTTP request look secure.
    EVPAY_BEHIND_PROXY = env_bool("EVPAY_BEHIND_PROXY", False)
    LOG_LEVEL = (env_str("LOG_LEVEL", "INFO") or "INFO").upper()
    CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
    AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
    AXES_COOLOFF_MINUTES = env_int("AXES_COOLOFF_MINUTES", 15, minimum=1)
    # Staff are signed out after this long without a real request (polls do not count).
    EVPAY_SESSION_IDLE_MINUTES = env_int("EVPAY_SESSION_IDLE_MINUTES", 15, minimum=1)
    # Admins must set up a TOTP device before any page (optional for them when off).
    EVPAY_REQUIRE_ADMIN_OTP = env_bool("EVPAY_REQUIRE_ADMIN_OTP", False)
    # Django's technical 404 page instead of ours while DEBUG is on (evpay/errors.py).
    EVPAY_TECHNICAL_404 = env_bool("EVPAY_TECHNICAL_404", False)
    # Payments (see README "Configuration").
    EVPAY_SENT_GRACE_SECONDS = env_int("EVPAY_SENT_GRACE_SECONDS", 60, minimum=1)
    EVPAY_RECOVERY_WINDOW_MINUTES = env_int("EVPAY_RECOVERY_WINDOW_MINUTES", 30, minimum=1)
    EVPAY_MAX_RESENDS = env_int("EVPAY_MAX_RESENDS", 2, minimum=0)
    EVPAY_AUTH_VALIDITY_HOURS = env_int("EVPAY_AUTH_VALIDITY_HOURS", 48, minimum=1)
    EVPAY_AUTH_EXPIRY_MARGIN_MINUTES = env_int("EVPAY_AUTH_EXPIRY_MARGIN_MINUTES", 240, minimum=1)
    EVPAY_AUTHORISE_GIVE_UP_MINUTES = env_int("EVPAY_AUTHORISE_GIVE_UP_MINUTES", 5, minimum=1)
    EVPAY_REFUSED_STOP_THRESHOLD = env_int("EVPAY_REFUSED_STOP_THRESHOLD", 3, minimum=1)
    EVPAY_OFFLINE_AFTER_FAILURES = env_int("EVPAY_OFFLINE_AFTER_FAILURES", 3, minimum=1)
    EVPAY_CLOSING_TIME = env_str("EVPAY_CLOSING_TIME", "03:00")
    # How long an API Idempotency-Key answer is kept for replay (purged hourly by a beat task).
    EVPAY_IDEMPOTENCY_RETENTION_HOURS = env_int("EVPAY_IDEMPOTENCY_RETENTION_HOURS", 48, minimum=1)
    # How far ahead of ours a charger's clock may be when it reports a moment (evpay/validation.py).
    EVPAY_CLOCK_SKEW_SECONDS = env_int("EVPAY_CLOCK_SKEW_SECONDS", 120, minimum=0)
    # Where the device-channel service listens: the terminals' network only, never every
    # interface by default (anyone reaching the port could talk to it).
    EVPAY_DEVICE_CHANNEL_HOST = env_str("EVPAY_DEVICE_CHANNEL_HOST", "127.0.0.1")
    EVPAY_DEVICE_CHANNEL_PORT = env_int("EVPAY_DEVICE_CHANNEL_PORT", 4102, minimum=1)
    # Each admitted connection holds a thread: the total bounds them. A terminal opens channel 1
    # for the length of one request, so hundreds of terminals need far fewer than one each;
    # terminals behind one NAT address share the per-address count.
    EVPAY_DEVICE_CHANNEL_MAX_CONNECTIONS = env_int(
        "EVPAY_DEVICE_CHANNEL_MAX_CONNECTIONS", 256, minimum=1
    )
    EVPAY_DEVICE_CHANNEL_MAX_PER_ADDRESS = env_int(
        "EVPAY_DEVICE_CHANNEL_MAX_PER_ADDRESS", 8, minimum=1
    )
    # Receipts for drivers (README "Receipts for drivers").
    # The address drivers' phones reach the public receipt pages on (QR codes, e-mails); the
    # requesting host when empty.
    EVPAY_PUBLIC_BASE_URL = env_str("EVPAY_PUBLIC_BASE_URL", "")
    EVPAY_RECEIPT_FONT_DIR = env_str("EVPAY_RECEIPT_FONT_DIR", "/usr/share/fonts/truetype/dejavu")
    # Receipt lookups per client address per window; e-mails per address and per session.
    EVPAY_RECEIPT_LOOKUP_LIMIT = env_int("EVPAY_RECEIPT_LOOKUP_LIMIT", 10, minimum=1)
    EVPAY_RECEIPT_LOOKUP_WINDOW_MINUTES = env_int(
        "EVPAY_RECEIPT_LOOKUP_WINDOW_MINUTES", 15, minimum=1
    )
    EVPAY_RECEIPT_EMAIL_LIMIT = env_int("EVPAY_RECEIPT_EMAIL_LIMIT", 3, minimum=1)
    EVPAY_RECEIPT_EMAIL_WINDOW_MINUTES = env_int(
        "EVPAY_RECEIPT_EMAIL_WINDOW_MINUTES", 60, minimum=1
    )
    # Django's e-mail backend: the console (mail printed to the log) unless configured.
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
    EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
    EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
    DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "receipts@evpay.invalid")
    # The OCPP central system (`manage.py ocpp_server`, README "Chargers over OCPP").
    EVPAY_OCPP_HOST = env_str("EVPAY_OCPP_HOST", "127.0.0.1")
    EVPAY_OCPP_PORT = env_int("EVPAY_OCPP_PORT", 9000, minimum=1)
    EVPAY_OCPP_TLS_CERT = env_str("EVPAY_OCPP_TLS_CERT", "") or ""
    EVPAY_OCPP_TLS_KEY = env_str("EVPAY_OCPP_TLS_KEY", "") or ""
    EVPAY_OCPP_MAX_CONNECTIONS = env_int("EVPAY_OCPP_MAX_CONNECTIONS", 1000, minimum=1)
    EVPAY_OCPP_COMMAND_TIMEOUT_SECONDS = env_int(
        "EVPAY_OCPP_COMMAND_TIMEOUT_SECONDS", 30, minimum=1
    )
    EVPAY_OCPP_START_TIMEOUT_SECONDS = env_int("EVPAY_OCPP_START_TIMEOUT_SECONDS", 120, minimum=1)
    # Charger messages not part of a session (heartbeats, status, boots) are kept this long; a
    # session's own stay with it, like its O.P.I. messages.
    EVPAY_OCPP_MESSAGE_RETENTION_DAYS = env_int("EVPAY_OCPP_MESSAGE_RETENTION_DAYS", 30, minimum=1)
    # The process supervisor of `make run` (see README "Operations").
    EVPAY_RESTART_BACKOFF_MAX = env_int("EVPAY_RESTART_BACKOFF_MAX", 60, minimum=1)
except ImproperlyConfiguredEnv as exc:
    raise ImproperlyConfigured(str(exc)) from None

try:
    _h, _m = (int(part) for part in EVPAY_CLOSING_TIME.split(":"))
    if not (0 <= _h < 24 and 0 <= _m < 60):
        raise ValueError
except ValueError:
    raise ImproperlyConfigured(f"EVPAY_CLOSING_TIME={EVPAY_CLOSING_TIME!r} is not HH:MM") from None

if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not a logging level")

INSTALLED_APPS = [
    "evpay.apps.EvpayAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "ninja",
    "template_partials",
    "django_celery_beat",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "csp",
    "evpay.apps.EvpayConfig",
    "terminals",
    "sessions.apps.ChargingConfig",
]

MIDDLEWARE = [
    "evpay.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions, before CommonMiddleware (Django's order): the language cookie, else
    # Accept-Language, else LANGUAGE_CODE. Staff get their stored choice below, after auth.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # After auth: a signed-in staff member's stored language (evpay/i18n.py); before the idle
    # timeout, whose "signed out" message is then in that language.
    "evpay.i18n.StaffLanguageMiddleware",
    # After auth, messages and htmx: signs out idle staff (polls are not activity).
    "evpay.security.IdleTimeoutMiddleware",
    # An admin with a TOTP device (or all admins, EVPAY_REQUIRE_ADMIN_OTP) owes the token first.
    "evpay.security.AdminOTPMiddleware",
    # Before any view or query: NUL and other controls, over-long values, non-finite amounts
    # and out-of-range dates get a 400 naming the field (after auth, so the page shows the
    # menu; after htmx, so an htmx request gets the message out of band).
    "evpay.validation.HostileInputMiddleware",
    # After auth (404.html shows the menu to signed-in users) and CommonMiddleware (slash
    # redirects); a no-op unless DEBUG is on.
    "evpay.errors.ProjectNotFoundMiddleware",
    # Last, as django-axes asks, so it sees the outcome of authentication.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "evpay.urls"
WSGI_APPLICATION = "evpay.wsgi.application"
ASGI_APPLICATION = "evpay.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "evpay.context_processors.roles",
                "evpay.context_processors.stack_alerts",
            ],
        },
    },
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    # 12, not Django's 8: staff accounts move money (issue #18 item 9).
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# English unless the browser (Accept-Language), the language cookie or a staff member's stored
# choice says otherwise. Staff pages: English and Dutch only (evpay.i18n.STAFF_LANGUAGES, other
# languages fall back to English there); the driver pages: all of these. The catalogues are
# in locale/ (README "Languages").
LANGUAGE_CODE = "en-gb"
LANGUAGES = [("en", "English"), ("nl", "Nederlands"), ("de", "Deutsch"), ("fr", "Français")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
# Not on: it would group every number in templates (request ids, ports, years). Money is
# grouped explicitly (evpay/money.py format_money).
USE_THOUSAND_SEPARATOR = False
LANGUAGE_COOKIE_SECURE = not DEBUG
LANGUAGE_COOKIE_HTTPONLY = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Tests and `make run` serve static files straight from the finders, no collectstatic needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_MANIFEST_STRICT = False

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

# Security: sensible whether DEBUG is on or off; HTTPS-only pieces follow DEBUG.
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
# The idle timeout is IdleTimeoutMiddleware's (it can tell polls from activity); the cookie
# and the stored session outlive it by a working day only so that clearsessions can drop
# abandoned ones, and the middleware's "signed out after N minutes" message still shows.
SESSION_COOKIE_AGE = EVPAY_SESSION_IDLE_MINUTES * 60 + 8 * 3600
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
if EVPAY_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp; Django 5.2 has none built in). Everything is served by
# us, no inline scripts or styles (htmx's indicator rules are in evpay.css, print buttons and
# poll marking in static/js/evpay.js). No 'unsafe-eval' either: htmx compiles hx-trigger
# filters (`every 10s [document.visibilityState=='visible']`) with Function(), so templates use
# none; the conditions are data-poll-visible / data-skip-if-* attributes, checked in evpay.js,
# and htmx.config.allowEval is off (templates/base.html) so a filter added by mistake is
# refused by htmx (htmx:evalDisallowedError) rather than by the CSP.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
    }
}
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# django-axes: throttle failed logins per username+IP.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_COOLOFF_TIME = AXES_COOLOFF_MINUTES / 60  # hours
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

OTP_TOTP_ISSUER = "evpay"

# Written by the supervisor of `make run`, read for the staff banner (evpay/supervision.py).
EVPAY_SUPERVISOR_STATE_FILE = VAR_DIR / "supervisor.json"

# Celery (read by evpay/celery.py with namespace CELERY).
_broker_dir = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("out", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # One folder is both in and out: every producer and consumer on this host shares it.
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    # kombu's own filesystem transport reads message files half-written and kills the worker
    # (JSONDecodeError); evpay/broker.py writes them atomically. See benchmarks/broker_stress.py.
    CELERY_BROKER_TRANSPORT = "evpay.broker:Transport"  # = evpay.broker.transport_for(URL)
    # Remote control ("pidbox": inspect, ping, broadcast) and events rewrite shared exchange
    # tables from every process all the time; nothing here uses them on the embedded broker
    # (`celery inspect` needs Redis or RabbitMQ, where they stay on).
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
    CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 600, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 540, minimum=5)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "evpay.logging.RequestIdFilter"},
        "redact": {"()": "evpay.logging.RedactSecretsFilter"},
    },
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s",
        },
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "plain",
            "filters": ["request_id", "redact"],
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        # fpdf2 subsets the receipt fonts and fontTools logs every glyph table at INFO.
        "fontTools": {"level": "WARNING"},
    },
}
