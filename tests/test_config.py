"""``load_settings``: defaults, strict casting of ``TRIAGE_*`` variables, and overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.channels.phone.line import sip_settings
from bot.config.settings import PROJECT_ROOT, Settings, load_settings
from bot.errors import ConfigError
from voice.sip.settings import SipSettings


def test_load_settings_uses_defaults_with_an_empty_environment() -> None:
    settings = load_settings({})

    assert settings == Settings()
    assert settings.data_dir == PROJECT_ROOT / "var"
    assert settings.http_port == 8080
    assert settings.max_message_chars == 2000
    assert settings.rasa_url == f"http://127.0.0.1:{settings.rasa_port}"
    # one Rasa process per core, up to two, on consecutive ports
    assert settings.rasa_workers == min(2, os.cpu_count() or 1)
    assert settings.rasa_urls == [
        f"http://127.0.0.1:{settings.rasa_port + i}" for i in range(settings.rasa_workers)
    ]


def test_rasa_workers_listen_on_consecutive_ports_unless_rasa_is_external() -> None:
    settings = load_settings({"TRIAGE_RASA_WORKERS": "3", "TRIAGE_RASA_PORT": "7000"})
    assert settings.rasa_urls == [f"http://127.0.0.1:{p}" for p in (7000, 7001, 7002)]
    external = load_settings(
        {"TRIAGE_RASA_WORKERS": "3", "TRIAGE_EXTERNAL_RASA_URL": "http://rasa:5005/"}
    )
    assert external.rasa_urls == ["http://rasa:5005"]
    with pytest.raises(ConfigError, match="TRIAGE_RASA_WORKERS"):
        load_settings({"TRIAGE_RASA_WORKERS": "0"})


def test_load_settings_ignores_variables_outside_its_prefix() -> None:
    assert load_settings({"HOME": "/root", "PATH": "/bin", "TRIAGEX": "1"}) == Settings()


def test_load_settings_reads_valid_values() -> None:
    settings = load_settings(
        {
            "TRIAGE_HTTP_PORT": "9090",
            "TRIAGE_RASA_TIMEOUT_S": "2.5",
            "TRIAGE_MAX_MESSAGE_CHARS": "500",
            "TRIAGE_API_TOKEN": "secret-token",
            "TRIAGE_DATA_DIR": "/srv/triage",
            "TRIAGE_VOSK_KEEP_WARM": "0",
        }
    )

    assert settings.http_port == 9090
    assert settings.rasa_timeout_s == 2.5
    assert settings.max_message_chars == 500
    assert settings.api_token == "secret-token"
    assert settings.data_dir == Path("/srv/triage")
    assert settings.models_dir == Path("/srv/triage/models")
    assert settings.vosk_keep_warm == 0 != Settings().vosk_keep_warm


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TRIAGE_HTTP_PORT", "abc"),
        ("TRIAGE_HTTP_PORT", "70000"),
        ("TRIAGE_HTTP_PORT", "-1"),
        ("TRIAGE_HTTP_PORT", "80.5"),
        ("TRIAGE_RASA_PORT", "0"),
        ("TRIAGE_RASA_TIMEOUT_S", "fast"),
        ("TRIAGE_RASA_TIMEOUT_S", "0"),
        ("TRIAGE_MAX_MESSAGE_CHARS", "0"),
        ("TRIAGE_VOSK_KEEP_WARM", "-1"),
        ("TRIAGE_SIP_AUTH_MAX_FAILURES", "0"),
        ("TRIAGE_SIP_AUTH_MAX_FAILURES", "many"),
        ("TRIAGE_SIP_AUTH_LOCKOUT_S", "0"),
        ("TRIAGE_SIP_AUTH_LOCKOUT_S", "soon"),
    ],
)
def test_load_settings_rejects_bad_values_naming_the_variable(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings({key: value})


def test_the_digest_lockout_variables_reach_the_sip_user_agent() -> None:
    defaults = sip_settings(load_settings({}))
    assert (defaults.auth_max_failures, defaults.auth_lockout_s) == (
        SipSettings().auth_max_failures,
        SipSettings().auth_lockout_s,
    )

    settings = load_settings(
        {"TRIAGE_SIP_AUTH_MAX_FAILURES": "3", "TRIAGE_SIP_AUTH_LOCKOUT_S": "900.5"}
    )
    sip = sip_settings(settings)

    assert (settings.sip_auth_max_failures, settings.sip_auth_lockout_s) == (3, 900.5)
    assert (sip.auth_max_failures, sip.auth_lockout_s) == (3, 900.5)


def test_load_settings_rejects_unknown_variable_naming_it() -> None:
    with pytest.raises(ConfigError, match="TRIAGE_FOO"):
        load_settings({"TRIAGE_FOO": "1", "TRIAGE_HTTP_PORT": "8080"})


@pytest.mark.parametrize(
    "url", ["mysql://localhost/triage", "sqlite:///triage.db", "postgresql://u@h/db"]
)
def test_load_settings_rejects_database_url_with_unsupported_scheme(url: str) -> None:
    with pytest.raises(ConfigError, match="TRIAGE_DATABASE_URL"):
        load_settings({"TRIAGE_DATABASE_URL": url})


def test_effective_database_url_is_sqlite_in_data_dir_by_default(tmp_path: Path) -> None:
    settings = load_settings({"TRIAGE_DATA_DIR": str(tmp_path)})

    assert settings.effective_database_url == f"sqlite+aiosqlite:///{tmp_path / 'triage.db'}"


def test_effective_database_url_is_the_configured_one_when_set() -> None:
    url = "postgresql+asyncpg://triage@127.0.0.1:5432/triage"

    assert load_settings({"TRIAGE_DATABASE_URL": url}).effective_database_url == url


def test_with_overrides_ignores_none_and_changes_the_rest() -> None:
    base = load_settings({})

    changed = base.with_overrides(http_port=9000, rasa_port=None, api_token=None)

    assert changed.http_port == 9000
    assert changed.rasa_port == base.rasa_port
    assert changed.api_token == base.api_token
    assert base.http_port == 8080
