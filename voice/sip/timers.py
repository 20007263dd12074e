"""The base SIP timers (RFC 3261 §17.1.1.1): every transaction timer is a multiple of them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

T1_S: Final = 0.5  # RTT estimate (RFC 3261 §17.1.1.1)
T2_S: Final = 4.0  # the longest retransmit interval of non-INVITE requests and INVITE responses
T4_S: Final = 5.0  # the longest a message stays in the network
TIMEOUT_T1_MULTIPLE: Final = 64  # Timers B, F, H, J and L are 64*T1


@dataclass(frozen=True, slots=True)
class SipTimers:
    """The base timers; tests scale them down (``SipTimers().scaled(0.02)``)."""

    t1_s: float = T1_S
    t2_s: float = T2_S
    t4_s: float = T4_S

    def __post_init__(self) -> None:
        if not 0 < self.t1_s <= self.t2_s or self.t4_s <= 0:
            raise ValueError("SIP timers need 0 < t1_s <= t2_s and t4_s > 0")

    @property
    def timeout_s(self) -> float:
        """Timers B, F, H, J and L: how long a transaction waits before giving up."""
        return TIMEOUT_T1_MULTIPLE * self.t1_s

    def scaled(self, factor: float) -> SipTimers:
        """Every timer multiplied by ``factor``."""
        return replace(
            self, t1_s=self.t1_s * factor, t2_s=self.t2_s * factor, t4_s=self.t4_s * factor
        )
