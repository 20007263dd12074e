"""Settings: the one place that reads the environment and configuration files.

Every setting has a default that works on a fresh clone (SQLite in the data directory, Rasa on
loopback); each can be overridden by a ``TRIAGE_*`` environment variable or a CLI flag. Values are
cast strictly and a bad value stops start-up with a message naming the variable.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.errors import ConfigError
from bot.failpoints import Failpoints
from bot.packs.loader import DEFAULT_DOMAIN, FileOverrides, Manifest, locate_pack, read_manifest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def _default_manifest() -> Manifest:
    """The sample pack's manifest, read once (three fields of every ``Settings()`` default to
    paths in it)."""
    return read_manifest(locate_pack(DEFAULT_DOMAIN)[0])


def _int(env: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} in the environment is not an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{key}={value} in the environment is outside {lo}..{hi}")
    return value


def _float(env: Mapping[str, str], key: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} in the environment is not a number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{key}={value} in the environment is outside {lo}..{hi}")
    return value


def _path(env: Mapping[str, str], key: str, default: Path) -> Path:
    return _given_path(env, key) or default


def _given_path(env: Mapping[str, str], key: str) -> Path | None:
    raw = env.get(key)
    return Path(os.path.abspath(Path(raw).expanduser())) if raw else None


def _refuse_unknown(env: Mapping[str, str]) -> None:
    """Unknown ``TRIAGE_*`` variables are an error, so that typos do not go unseen."""
    known = {
        "TRIAGE_DATA_DIR",
        "TRIAGE_HTTP_HOST",
        "TRIAGE_HTTP_PORT",
        "TRIAGE_SIP_PORT",
        "TRIAGE_ACTION_PORT",
        "TRIAGE_RASA_PORT",
        "TRIAGE_RASA_WORKERS",
        "TRIAGE_DATABASE_URL",
        "TRIAGE_NLU_DATA_DIR",
        "TRIAGE_ROUTING_FILE",
        "TRIAGE_RASA_PYTHON",
        "TRIAGE_RASA_TIMEOUT_S",
        "TRIAGE_RASA_START_TIMEOUT_S",
        "TRIAGE_MAX_MESSAGE_CHARS",
        "TRIAGE_API_TOKEN",
        "TRIAGE_TEST_POSTGRES_URL",
        "TRIAGE_REQUIRE_SERVICES",
        "TRIAGE_EXTERNAL_RASA_URL",
        "TRIAGE_ACTION_HOST",
        "TRIAGE_CHAT_ORIGINS",
        "TRIAGE_CHAT_RATE_PER_S",
        "TRIAGE_CHAT_BURST",
        "TRIAGE_IDENTITY_SECRET",
        "TRIAGE_OFFER_TIMEOUT_S",
        "TRIAGE_ABANDON_AFTER_S",
        "TRIAGE_DEFAULT_HANDLE_S",
        "TRIAGE_WEBHOOK_URL",
        "TRIAGE_WEBHOOK_SECRET",
        "TRIAGE_VOSK_MODEL_SITE",
        "TRIAGE_PHONE_FILE",
        "TRIAGE_SIP_HOST",
        "TRIAGE_SIP_ADVERTISED_HOST",
        "TRIAGE_RTP_PORT_MIN",
        "TRIAGE_RTP_PORT_MAX",
        "TRIAGE_SIP_MAX_CALLS",
        "TRIAGE_SIP_ALLOWED_SOURCES",
        "TRIAGE_SIP_AUTH_USER",
        "TRIAGE_SIP_AUTH_PASSWORD",
        "TRIAGE_SIP_AUTH_REALM",
        "TRIAGE_SIP_AUTH_MAX_FAILURES",
        "TRIAGE_SIP_AUTH_LOCKOUT_S",
        "TRIAGE_ASR_ENGINE",
        "TRIAGE_VOSK_KEEP_WARM",
        "TRIAGE_ASR_ENDPOINT_SILENCE_MS",
        "TRIAGE_FAILPOINTS",
        "TRIAGE_DOMAIN",
        "TRIAGE_BACKOFFICE_URL",
        "TRIAGE_BACKOFFICE_TOKEN",
        "TRIAGE_BACKOFFICE_HMAC_SECRET",
        "TRIAGE_REDIS_URL",
        "TRIAGE_NODE_ID",
        "TRIAGE_DRAIN_TIMEOUT_S",
        "TRIAGE_TURN_LOCK_WAIT_S",
    }
    unknown = sorted(k for k in env if k.startswith("TRIAGE_") and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in the environment: {', '.join(unknown)}")


@dataclass(frozen=True)
class PackSelection:
    """The domain pack the environment selects (``TRIAGE_DOMAIN``) and the files of it the
    installation replaces; read without reading the pack, which may be what is broken."""

    domain: str
    overrides: FileOverrides


def load_pack_selection(env: Mapping[str, str] | None = None) -> PackSelection:
    """What ``triage domain check`` needs of the environment to check what ``triage serve``
    would load; ``load_settings`` reads the pack's files the same way."""
    env = os.environ if env is None else env
    _refuse_unknown(env)
    return PackSelection(
        domain=env.get("TRIAGE_DOMAIN", "") or DEFAULT_DOMAIN,
        overrides=FileOverrides(
            rasa_data=_given_path(env, "TRIAGE_NLU_DATA_DIR"),
            routing_file=_given_path(env, "TRIAGE_ROUTING_FILE"),
            phone_file=_given_path(env, "TRIAGE_PHONE_FILE"),
        ),
    )


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: PROJECT_ROOT / "var")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    sip_port: int = 5060
    action_port: int = 5055
    rasa_port: int = 5005
    # Rasa processes (ports rasa_port, rasa_port + 1, ...); a conversation always goes to one.
    # One per core, up to two: a Rasa process uses a core and serves one message at a time, and
    # the gateway needs CPU too.
    rasa_workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    database_url: str = ""
    # the domain pack (TRIAGE_DOMAIN: a directory, a package or a pack name; bot/domain.py) and
    # what is read from it: its name, Rasa data, routing and phone lines
    domain: str = DEFAULT_DOMAIN
    domain_name: str = DEFAULT_DOMAIN
    nlu_data_dir: Path = field(default_factory=lambda: _default_manifest().rasa_data)
    routing_file: Path = field(default_factory=lambda: _default_manifest().routing_file)
    rasa_python: Path = field(
        default_factory=lambda: PROJECT_ROOT / ".venv-rasa" / "bin" / "python"
    )
    rasa_timeout_s: float = 10.0
    rasa_start_timeout_s: float = 180.0
    max_message_chars: int = 2000
    api_token: str = ""
    # Containers: Rasa runs in its own container (not supervised here) and calls the action
    # webhook over the compose network, so the webhook binds beyond loopback.
    external_rasa_url: str = ""
    action_host: str = "127.0.0.1"
    # chat and the handoff queue
    chat_origins: tuple[str, ...] = ()  # besides the gateway's own origin
    chat_rate_per_s: float = 1.0  # sustained customer messages per conversation
    chat_burst: int = 5
    identity_secret: str = ""  # HS256 secret for host-signed customer identities
    offer_timeout_s: float = 20.0
    abandon_after_s: float = 600.0  # a waiting customer gone this long has abandoned
    default_handle_s: float = 300.0  # assumed handling time before a queue has history
    webhook_url: str = ""
    webhook_secret: str = ""
    # speech models: where `triage models download` fetches Vosk models (a local mirror works)
    vosk_model_site: str = "https://alphacephei.com/vosk/models/"
    # the phone line
    phone_file: Path = field(default_factory=lambda: _default_manifest().phone_file)
    sip_host: str = "127.0.0.1"  # where the SIP bridge listens (a PBX or trunk sends calls here)
    sip_advertised_host: str = ""  # the address put in Contact and SDP (default: sip_host)
    rtp_port_min: int = 40000
    rtp_port_max: int = 40998
    sip_max_calls: int = 50  # beyond this, INVITEs get 503
    sip_allowed_sources: tuple[str, ...] = ()  # CIDR blocks allowed to send SIP (empty: any)
    sip_auth_user: str = ""  # digest authentication of incoming INVITEs, when set
    sip_auth_password: str = ""
    sip_auth_realm: str = "triage"
    sip_auth_max_failures: int = 5  # wrong digest answers from one IP in a minute: locked out
    sip_auth_lockout_s: float = 300.0
    asr_engine: str = "vosk"  # preferred recogniser: vosk (streaming) or whisper
    asr_endpoint_silence_ms: int = 600  # trailing silence that ends a caller's utterance
    vosk_keep_warm: int = 10  # Vosk recognisers of ended calls kept, graph cache warm, per model
    # the company's back office over HTTP (docs/back-office-api.md): overrides the pack's
    backoffice_url: str = ""
    backoffice_token: str = ""  # sent as a bearer token
    backoffice_hmac_secret: str = ""  # signs every request (X-Triage-Signature)
    # crash tests only: where the process kills itself (bot/failpoints.py); empty in service
    failpoints: frozenset[str] = frozenset()
    # a cluster (docs/cluster.md): Redis for live fan-out and cross-node locks, with PostgreSQL
    redis_url: str = ""
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    drain_timeout_s: float = 300.0  # SIGTERM / `triage drain`: calls may finish for this long
    turn_lock_wait_s: float = 15.0  # a turn waits this long for another node's turn to end

    @property
    def clustered(self) -> bool:
        """Several nodes share the store (PostgreSQL) and the live fan-out (Redis)."""
        return bool(self.redis_url)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'triage.db'}"

    @property
    def rasa_url(self) -> str:
        return self.rasa_urls[0]

    @property
    def rasa_urls(self) -> list[str]:
        if self.external_rasa_url:
            return [self.external_rasa_url]
        return [f"http://127.0.0.1:{self.rasa_port + i}" for i in range(self.rasa_workers)]

    @property
    def action_url(self) -> str:
        return f"http://127.0.0.1:{self.action_port}/webhook"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields changed; ``None`` values are ignored (unset CLI flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read ``TRIAGE_*`` variables once; unknown ones are an error so typos do not go unseen."""
    env = os.environ if env is None else env
    selected = load_pack_selection(env)
    base = Settings()
    manifest = selected.overrides.applied_to(read_manifest(locate_pack(selected.domain)[0]))
    url = env.get("TRIAGE_DATABASE_URL", "")
    if url and not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            "TRIAGE_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    rtp_min = _int(env, "TRIAGE_RTP_PORT_MIN", base.rtp_port_min, 1024, 65534)
    rtp_max = _int(env, "TRIAGE_RTP_PORT_MAX", base.rtp_port_max, 1024, 65535)
    if rtp_min % 2 or rtp_max < rtp_min + 2:
        raise ConfigError(
            "TRIAGE_RTP_PORT_MIN must be even and TRIAGE_RTP_PORT_MAX at least 2 above it"
        )
    return Settings(
        data_dir=_path(env, "TRIAGE_DATA_DIR", base.data_dir),
        http_host=env.get("TRIAGE_HTTP_HOST", base.http_host),
        http_port=_int(env, "TRIAGE_HTTP_PORT", base.http_port, 0, 65535),
        sip_port=_int(env, "TRIAGE_SIP_PORT", base.sip_port, 0, 65535),
        action_port=_int(env, "TRIAGE_ACTION_PORT", base.action_port, 1, 65535),
        rasa_port=_int(env, "TRIAGE_RASA_PORT", base.rasa_port, 1, 65535),
        rasa_workers=_int(env, "TRIAGE_RASA_WORKERS", base.rasa_workers, 1, 8),
        database_url=url,
        domain=selected.domain,
        domain_name=manifest.name,
        nlu_data_dir=manifest.rasa_data,
        routing_file=manifest.routing_file,
        rasa_python=_path(env, "TRIAGE_RASA_PYTHON", base.rasa_python),
        rasa_timeout_s=_float(env, "TRIAGE_RASA_TIMEOUT_S", base.rasa_timeout_s, 0.1, 600),
        rasa_start_timeout_s=_float(
            env, "TRIAGE_RASA_START_TIMEOUT_S", base.rasa_start_timeout_s, 1, 3600
        ),
        max_message_chars=_int(env, "TRIAGE_MAX_MESSAGE_CHARS", base.max_message_chars, 1, 10**6),
        api_token=env.get("TRIAGE_API_TOKEN", ""),
        external_rasa_url=env.get("TRIAGE_EXTERNAL_RASA_URL", "").rstrip("/"),
        action_host=env.get("TRIAGE_ACTION_HOST", base.action_host),
        chat_origins=_origins(env, "TRIAGE_CHAT_ORIGINS"),
        chat_rate_per_s=_float(env, "TRIAGE_CHAT_RATE_PER_S", base.chat_rate_per_s, 0.01, 1000),
        chat_burst=_int(env, "TRIAGE_CHAT_BURST", base.chat_burst, 1, 1000),
        identity_secret=env.get("TRIAGE_IDENTITY_SECRET", ""),
        offer_timeout_s=_float(env, "TRIAGE_OFFER_TIMEOUT_S", base.offer_timeout_s, 1, 3600),
        abandon_after_s=_float(env, "TRIAGE_ABANDON_AFTER_S", base.abandon_after_s, 1, 86400),
        default_handle_s=_float(env, "TRIAGE_DEFAULT_HANDLE_S", base.default_handle_s, 1, 86400),
        webhook_url=_webhook_url(env),
        webhook_secret=env.get("TRIAGE_WEBHOOK_SECRET", ""),
        vosk_model_site=_site(env, "TRIAGE_VOSK_MODEL_SITE", base.vosk_model_site),
        phone_file=manifest.phone_file,
        sip_host=env.get("TRIAGE_SIP_HOST", base.sip_host),
        sip_advertised_host=env.get("TRIAGE_SIP_ADVERTISED_HOST", ""),
        rtp_port_min=rtp_min,
        rtp_port_max=rtp_max,
        sip_max_calls=_int(env, "TRIAGE_SIP_MAX_CALLS", base.sip_max_calls, 1, 10000),
        sip_allowed_sources=_networks(env, "TRIAGE_SIP_ALLOWED_SOURCES"),
        sip_auth_user=env.get("TRIAGE_SIP_AUTH_USER", ""),
        sip_auth_password=_auth_password(env),
        sip_auth_realm=env.get("TRIAGE_SIP_AUTH_REALM", base.sip_auth_realm),
        sip_auth_max_failures=_int(
            env, "TRIAGE_SIP_AUTH_MAX_FAILURES", base.sip_auth_max_failures, 1, 1000
        ),
        sip_auth_lockout_s=_float(
            env, "TRIAGE_SIP_AUTH_LOCKOUT_S", base.sip_auth_lockout_s, 1, 86400
        ),
        asr_engine=_choice(env, "TRIAGE_ASR_ENGINE", base.asr_engine, ("vosk", "whisper")),
        asr_endpoint_silence_ms=_int(
            env, "TRIAGE_ASR_ENDPOINT_SILENCE_MS", base.asr_endpoint_silence_ms, 100, 5000
        ),
        vosk_keep_warm=_int(env, "TRIAGE_VOSK_KEEP_WARM", base.vosk_keep_warm, 0, 1000),
        failpoints=_failpoints(env, "TRIAGE_FAILPOINTS"),
        backoffice_url=_backoffice_url(env),
        backoffice_token=env.get("TRIAGE_BACKOFFICE_TOKEN", ""),
        backoffice_hmac_secret=env.get("TRIAGE_BACKOFFICE_HMAC_SECRET", ""),
        redis_url=_redis_url(env, url),
        node_id=_node_id(env, base.node_id),
        drain_timeout_s=_float(env, "TRIAGE_DRAIN_TIMEOUT_S", base.drain_timeout_s, 0, 86400),
        turn_lock_wait_s=_float(env, "TRIAGE_TURN_LOCK_WAIT_S", base.turn_lock_wait_s, 0.1, 600),
    )


def _redis_url(env: Mapping[str, str], database_url: str) -> str:
    url = env.get("TRIAGE_REDIS_URL", "")
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("TRIAGE_REDIS_URL must be a redis://, rediss:// or unix:// URL")
    if url and not database_url.startswith("postgresql+asyncpg://"):
        raise ConfigError(
            "TRIAGE_REDIS_URL makes this node part of a cluster, whose store is shared: "
            "it needs TRIAGE_DATABASE_URL=postgresql+asyncpg://..."
        )
    return url


def _node_id(env: Mapping[str, str], default: str) -> str:
    value = env.get("TRIAGE_NODE_ID", "") or default
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        raise ConfigError(
            "TRIAGE_NODE_ID must be 1-64 letters, digits, dots, dashes or underscores"
        )
    return value


def _backoffice_url(env: Mapping[str, str]) -> str:
    url = env.get("TRIAGE_BACKOFFICE_URL", "").rstrip("/")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError("TRIAGE_BACKOFFICE_URL must be an http:// or https:// URL")
    return url


def _failpoints(env: Mapping[str, str], key: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in env.get(key, "").split(",") if n.strip())
    try:
        Failpoints(names)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return names


def _choice(env: Mapping[str, str], key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(key, "") or default
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} in the environment is not one of {', '.join(allowed)}")
    return value


def _networks(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    blocks = [b.strip() for b in env.get(key, "").split(",") if b.strip()]
    for block in blocks:
        try:
            ipaddress.ip_network(block, strict=False)
        except ValueError:
            raise ConfigError(f"{key}: {block!r} is not an address or CIDR block") from None
    return tuple(blocks)


def _auth_password(env: Mapping[str, str]) -> str:
    user, password = env.get("TRIAGE_SIP_AUTH_USER", ""), env.get("TRIAGE_SIP_AUTH_PASSWORD", "")
    if bool(user) != bool(password):
        raise ConfigError("TRIAGE_SIP_AUTH_USER and TRIAGE_SIP_AUTH_PASSWORD go together")
    return password


def _site(env: Mapping[str, str], key: str, default: str) -> str:
    url = env.get(key, "") or default
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{key} must be an http:// or https:// URL")
    return url if url.endswith("/") else url + "/"


def _origins(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    raw = [o.strip().rstrip("/") for o in env.get(key, "").split(",") if o.strip()]
    for origin in raw:
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise ConfigError(f"{key}: {origin!r} is not an origin like https://www.example.com")
    return tuple(raw)


def _webhook_url(env: Mapping[str, str]) -> str:
    url = env.get("TRIAGE_WEBHOOK_URL", "")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError("TRIAGE_WEBHOOK_URL must be an http:// or https:// URL")
    if url and not env.get("TRIAGE_WEBHOOK_SECRET"):
        raise ConfigError("TRIAGE_WEBHOOK_URL needs TRIAGE_WEBHOOK_SECRET to sign its requests")
    return url
