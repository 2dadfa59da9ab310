"""Small typed readers for environment variables.

Each helper fails loudly with the variable's name and what was wrong, so a bad
deployment stops at start-up instead of misbehaving later.
"""

import os
from urllib.parse import parse_qs, unquote, urlparse


class ImproperlyConfiguredEnv(Exception):
    """An environment variable holds a value the application cannot use."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfiguredEnv(
        f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off"
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfiguredEnv(f"{name}={value} must be at least {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


_DB_ENGINES = {
    "postgres": "django.db.backends.postgresql",
    "postgresql": "django.db.backends.postgresql",
    "sqlite": "django.db.backends.sqlite3",
}


def parse_database_url(name: str, url: str) -> dict:
    """Turn ``postgresql://user:pass@host:port/db`` or ``sqlite:///path`` into DATABASES['default']."""
    parsed = urlparse(url)
    engine = _DB_ENGINES.get(parsed.scheme)
    if engine is None:
        raise ImproperlyConfiguredEnv(
            f"{name}={url!r}: unsupported scheme {parsed.scheme!r}; "
            "use postgresql://user:password@host:5432/dbname or sqlite:///path/to/file.sqlite3"
        )
    if engine.endswith("sqlite3"):
        # sqlite:////abs/path -> /abs/path, sqlite:///rel/path -> rel/path (dj-database-url style)
        path = unquote(parsed.path)[1:]
        if not path:
            raise ImproperlyConfiguredEnv(f"{name}={url!r}: a SQLite URL needs a file path")
        return {
            "ENGINE": engine,
            "NAME": path,
            # Several processes (web, worker, beat, emulator tools) share the file.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
            },
        }
    dbname = unquote(parsed.path.lstrip("/"))
    if not dbname:
        raise ImproperlyConfiguredEnv(f"{name}={url!r}: the URL names no database")
    options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    return {
        "ENGINE": engine,
        "NAME": dbname,
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": options,
    }
