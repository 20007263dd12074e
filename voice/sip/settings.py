"""The configuration of the SIP user agent, validated when it is made."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final

from voice.sip.auth import DigestCredentials
from voice.sip.throttle import DEFAULT_FAILURE_WINDOW_S, DEFAULT_LOCKOUT_S, DEFAULT_MAX_FAILURES
from voice.sip.timers import SipTimers
from voice.sip.transport import parse_networks

SCANNER_USER_AGENTS: Final = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "VaxSIPUserAgent",
    "pplsip",
    "iWar",
    "sundayddr",
)
DEFAULT_RETRY_AFTER_S: Final = 30
DEFAULT_TRANSFER_TIMEOUT_S: Final = 30.0
CLOSE_GRACE_S: Final = 5.0  # how long close() lets calls send their BYE before cancelling


@dataclass(frozen=True, slots=True)
class SipSettings:
    """The user agent's configuration; ``ValueError`` names a bad field."""

    host: str = "127.0.0.1"  # the IP literal the SIP and RTP sockets bind
    port: int = 5060  # 0: any free port (tests)
    advertised_host: str | None = None  # the IP in Contact, Via and SDP; default ``host``
    rtp_port_min: int = 40000
    rtp_port_max: int = 40998
    max_calls: int = 50
    allowed_sources: tuple[str, ...] = ()  # CIDRs allowed to send us SIP; empty: any
    auth: DigestCredentials | None = None  # challenge INVITEs with digest authentication
    # this many wrong digest answers from one IP within the window lock it out (403) a while
    auth_max_failures: int = DEFAULT_MAX_FAILURES
    auth_failure_window_s: float = DEFAULT_FAILURE_WINDOW_S
    auth_lockout_s: float = DEFAULT_LOCKOUT_S
    blocked_user_agents: tuple[str, ...] = SCANNER_USER_AGENTS  # substrings, any case
    timers: SipTimers = field(default_factory=SipTimers)
    ring_s: float = 0.0  # how long to ring (180) before answering
    transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S  # REFER to the final NOTIFY
    retry_after_s: int = DEFAULT_RETRY_AFTER_S  # in 503s at the call limit
    contact_user: str = "triage"
    # closing down between a 200 and its ACK: how long to wait for the ACK, to send the BYE
    answered_shutdown_wait_s: float = 2.0

    def __post_init__(self) -> None:
        host = _ip("host", self.host)
        if self.advertised_host is not None:
            _ip("advertised_host", self.advertised_host)
        elif host.is_unspecified:
            raise ValueError("advertised_host is required when host is a wildcard address")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 0..65535")
        if self.rtp_port_min % 2 or not 0 < self.rtp_port_min <= self.rtp_port_max <= 65535:
            raise ValueError("rtp_port_min..rtp_port_max must be an even start within 1..65535")
        if self.max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        if self.auth_max_failures < 1:
            raise ValueError("auth_max_failures must be at least 1")
        if not (self.auth_failure_window_s > 0 and self.auth_lockout_s > 0):
            raise ValueError("auth_failure_window_s and auth_lockout_s must be > 0")
        parse_networks(self.allowed_sources)
        if self.ring_s < 0 or self.transfer_timeout_s <= 0 or self.retry_after_s < 0:
            raise ValueError("ring_s, retry_after_s must be >= 0 and transfer_timeout_s > 0")
        if not 0 <= self.answered_shutdown_wait_s <= CLOSE_GRACE_S:
            raise ValueError(f"answered_shutdown_wait_s must be in 0..{CLOSE_GRACE_S} s")
        if not self.contact_user.isalnum():
            raise ValueError("contact_user must be alphanumeric")

    @property
    def contact_host(self) -> str:
        """The IP address peers reach us at."""
        return self.advertised_host or self.host


def _ip(name: str, value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{name} must be an IP address (no DNS on the call path)") from None
