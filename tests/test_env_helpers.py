import pytest

from evpay.env import ImproperlyConfiguredEnv, env_bool, env_int, env_list, parse_database_url


def test_env_bool_accepts_common_spellings(monkeypatch):
    for raw, expected in [("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False)]:
        monkeypatch.setenv("FLAG", raw)
        assert env_bool("FLAG", not expected) is expected


def test_env_bool_rejects_garbage_naming_the_variable(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfiguredEnv, match=r"DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG", False)


def test_env_int_rejects_non_numbers_and_values_below_minimum(monkeypatch):
    monkeypatch.setenv("N", "ten")
    with pytest.raises(ImproperlyConfiguredEnv, match="N='ten' is not a whole number"):
        env_int("N", 1)
    monkeypatch.setenv("N", "3")
    with pytest.raises(ImproperlyConfiguredEnv, match="N=3 must be at least 5"):
        env_int("N", 10, minimum=5)


def test_env_int_and_list_fall_back_to_defaults_when_unset(monkeypatch):
    monkeypatch.delenv("N", raising=False)
    monkeypatch.delenv("HOSTS", raising=False)
    assert env_int("N", 7) == 7
    assert env_list("HOSTS", ["a"]) == ["a"]
    monkeypatch.setenv("HOSTS", " a.example , b.example ,")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]


def test_database_url_postgres_is_split_into_django_settings():
    db = parse_database_url(
        "DATABASE_URL", "postgresql://u:p%40ss@db.local:5433/evpay?sslmode=require"
    )
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "evpay",
        "u",
        "p@ss",
        "db.local",
        "5433",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}


def test_database_url_sqlite_takes_a_path():
    db = parse_database_url("DATABASE_URL", "sqlite:////tmp/x.sqlite3")
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == "/tmp/x.sqlite3"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "unsupported scheme 'mysql'"),
        ("postgresql://u@h/", "names no database"),
        ("sqlite://", "needs a file path"),
    ],
)
def test_database_url_rejects_unusable_urls(url, message):
    with pytest.raises(ImproperlyConfiguredEnv, match=message):
        parse_database_url("DATABASE_URL", url)
