"""Settings: defaults, BFF_* overrides, and one clear line for every bad value."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from config.loader import ConfigError, load_settings, redact_url, unknown_variables

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s" * 40


def test_defaults_run_on_the_embedded_backend(tmp_path):
    settings = load_settings({}, base_dir=tmp_path)
    assert settings.server.port == 8080 and settings.server.host == "127.0.0.1"
    assert settings.database.is_sqlite and settings.redis.url == ""
    # Development keeps a generated secret under ./var/, readable by the owner only.
    secret_file = tmp_path / "var" / "jwt-secret"
    assert secret_file.read_text() == settings.jwt.secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert load_settings({}, base_dir=tmp_path).jwt.secret == settings.jwt.secret


def test_environment_overrides(tmp_path):
    settings = load_settings(
        {
            "BFF_HOST": "0.0.0.0",
            "BFF_PORT": "9000",
            "BFF_WORKERS": "2",
            "BFF_DATABASE_URL": "mysql+aiomysql://root@127.0.0.1:3306/bff",
            "BFF_REDIS_URL": "redis://127.0.0.1:6379/0",
            "BFF_JWT_SECRET": SECRET,
            "BFF_JWT_ISSUER": "shop-issuer",
        },
        base_dir=tmp_path,
    )
    assert (settings.server.host, settings.server.port, settings.server.workers) == (
        "0.0.0.0",
        9000,
        2,
    )
    assert not settings.database.is_sqlite
    assert settings.jwt.secret == SECRET and settings.jwt.issuer == "shop-issuer"


def test_deadlines_default_shorter_for_reads_and_come_from_the_environment(tmp_path):
    database = load_settings({}, base_dir=tmp_path).database
    assert 0 < database.read_timeout_seconds < database.write_timeout_seconds
    assert database.write_timeout_seconds < database.bulk_timeout_seconds
    settings = load_settings(
        {
            "BFF_DATABASE_READ_TIMEOUT_SECONDS": "0.5",
            "BFF_DATABASE_WRITE_TIMEOUT_SECONDS": "1.5",
            "BFF_DATABASE_BULK_TIMEOUT_SECONDS": "30",
            "BFF_DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
            "BFF_REDIS_TIMEOUT_SECONDS": "0.25",
        },
        base_dir=tmp_path,
    )
    assert settings.database.read_timeout_seconds == 0.5
    assert settings.database.write_timeout_seconds == 1.5
    assert settings.database.bulk_timeout_seconds == 30
    assert settings.database.connect_timeout_seconds == 2
    assert settings.redis.socket_timeout_seconds == 0.25


def test_config_file_layers_over_defaults(tmp_path):
    extra = tmp_path / "bff.toml"
    extra.write_text("[wallet]\nmax_unused_per_shop = 10\n[server]\nport = 8181\n")
    settings = load_settings({"BFF_CONFIG": str(extra), "BFF_PORT": "8282"}, base_dir=tmp_path)
    assert settings.wallet.max_unused_per_shop == 10
    assert settings.server.port == 8282  # the environment wins over the file


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"BFF_DATABASE_URL": "postgresql://x/y"}, "unknown scheme 'postgresql'"),
        ({"BFF_PORT": "eighty"}, "server.port (BFF_PORT) must be a number, got 'eighty'"),
        ({"BFF_WORKERS": "abc"}, "server.workers (BFF_WORKERS) must be a number"),
        ({"BFF_PORT": "70000"}, "server.port (BFF_PORT) must be 1-65535"),
        ({"BFF_WORKERS": "0"}, "workers"),
        ({"BFF_REDIS_URL": "memcached://x"}, "unknown scheme 'memcached'"),
        ({"BFF_ENV": "production"}, "jwt.secret (BFF_JWT_SECRET) is empty"),
        ({"BFF_ENV": "production", "BFF_JWT_SECRET": "short"}, "at least 32 bytes"),
        ({"BFF_JWT_ALGORITHM": "none"}, "jwt.algorithm"),
        ({"BFF_JWT_ALGORITHM": "RS256"}, "public_key_file"),
        ({"BFF_SHOP_TIMEZONE": "Mars/Olympus"}, "unknown time zone"),
        ({"BFF_ACCESS_LOG": "maybe"}, "server.access_log (BFF_ACCESS_LOG) must be true or false"),
        ({"BFF_POINTS_DENOMINATIONS": "5,x"}, "(BFF_POINTS_DENOMINATIONS) must be a number"),
        ({"BFF_IDENTITY_PROVIDER": "ldap"}, "identity.provider"),
        ({"BFF_CONFIG": "/nonexistent.toml"}, "config file not found"),
        ({"BFF_DATABASE_READ_TIMEOUT_SECONDS": "0"}, "BFF_DATABASE_READ_TIMEOUT_SECONDS"),
        ({"BFF_DATABASE_WRITE_TIMEOUT_SECONDS": "-1"}, "database.write_timeout_seconds"),
        ({"BFF_DATABASE_BULK_TIMEOUT_SECONDS": "1e9"}, "at most 300 seconds"),
        (
            {"BFF_REDIS_TIMEOUT_SECONDS": "soon"},
            "redis.socket_timeout_seconds (BFF_REDIS_TIMEOUT_SECONDS) must be a number",
        ),
        ({"BFF_OTEL_EXPORTER": "jaeger"}, "tracing.exporter (BFF_OTEL_EXPORTER)"),
    ],
)
def test_bad_values_raise_one_clear_line(tmp_path, environ, fragment):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ, base_dir=tmp_path)
    message = str(caught.value)
    assert fragment in message and "\n" not in message


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("holders_users = -1", "claim.holders_users"),
        ("holders_users = 1000000000", "claim.holders_users"),
        ("holders_error = 0", "claim.holders_error"),
        ("holders_error = 1.5", "claim.holders_error"),
        ("holders_ttl_seconds = 5", "claim.holders_ttl_seconds"),
    ],
)
def test_bad_holders_filter_settings_raise_one_clear_line(tmp_path, line, fragment):
    config = tmp_path / "bff.toml"
    config.write_text(f"[claim]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"BFF_CONFIG": str(config)}, base_dir=tmp_path)
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_redact_url_hides_passwords():
    assert (
        redact_url("mysql+aiomysql://app:hunter2@db:3306/bff")
        == "mysql+aiomysql://app:***@db:3306/bff"
    )
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def _run(args, env_extra, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_py_stops_on_bad_config_with_one_line(tmp_path):
    result = _run([], {"BFF_PORT": "abc"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("config error: server.port (BFF_PORT) must be a number")
    assert "Traceback" not in result.stderr


def test_run_py_token_mints_a_verifiable_token(tmp_path):
    result = _run(
        ["token", "--role", "merchant", "--shop", "s1", "--sub", "m1"],
        {"BFF_JWT_SECRET": SECRET},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    import jwt

    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], issuer="coupon-bff")
    assert (claims["sub"], claims["role"], claims["shop"]) == ("m1", "merchant", "s1")
    refused = _run(
        ["token", "--role", "merchant", "--sub", "m1"], {"BFF_JWT_SECRET": SECRET}, tmp_path
    )
    assert refused.returncode == 2 and "--shop" in refused.stderr
    # The server would refuse a sub outside the id pattern, so the CLI never signs one.
    bad_sub = _run(["token", "--sub", "u 1"], {"BFF_JWT_SECRET": SECRET}, tmp_path)
    assert bad_sub.returncode == 2 and "Traceback" not in bad_sub.stderr, bad_sub.stderr
    assert bad_sub.stdout == ""


def test_cors_origins_from_the_environment_or_a_toml_list(tmp_path):
    settings = load_settings(
        {"BFF_CORS_ORIGINS": " https://H5.example.com/ , http://localhost:5173,"},
        base_dir=tmp_path,
    )
    assert settings.cors.origin_set == {"https://h5.example.com", "http://localhost:5173"}
    assert load_settings({}, base_dir=tmp_path).cors.origin_set == frozenset()
    config = tmp_path / "cors.toml"
    config.write_text('[cors]\norigins = ["https://a.example", "https://b.example:8443"]\n')
    listed = load_settings({"BFF_CONFIG": str(config)}, base_dir=tmp_path)
    assert listed.cors.origin_set == {"https://a.example", "https://b.example:8443"}


@pytest.mark.parametrize("origin", ["h5.example.com", "https://a.example/app", "ftp://a.example"])
def test_a_cors_origin_that_is_not_an_origin_is_refused(tmp_path, origin):
    with pytest.raises(ConfigError, match="BFF_CORS_ORIGINS"):
        load_settings({"BFF_CORS_ORIGINS": origin}, base_dir=tmp_path)


def test_unknown_variables_are_named_with_a_guess():
    environ = {"BFF_PORTS": "1", "BFF_PORT": "1", "BFF_TEST_MYSQL_URL": "x", "HOME": "/"}
    assert unknown_variables(environ) == [
        "unknown variable BFF_PORTS is ignored; did you mean BFF_PORT?"
    ]
