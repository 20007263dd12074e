"""The states of a handoff and the transitions between them.

```
callback_requested ─accept─┐   (queued/offered ─request_callback─► callback_requested)
queued ─offer─► offered ─accept─► accepted ─close/release─► closed
  ▲  │            │ expire/decline   │  │
  │  └─abandon─►  └─────► queued     │  └─customer_left─► closed
  └──────────── transfer ◄───────────┘          (abandoned from queued/offered)
```
A transition is applied in the store as one conditional UPDATE, so two agents accepting the same
customer at once cannot both win, on SQLite or PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class HandoffState(StrEnum):
    QUEUED = "queued"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    CLOSED = "closed"
    ABANDONED = "abandoned"
    CALLBACK_REQUESTED = "callback_requested"


WAITING = (HandoffState.QUEUED, HandoffState.OFFERED)
ENDED = (HandoffState.CLOSED, HandoffState.ABANDONED)


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[HandoffState]
    target: HandoffState
    conversation_state: str  # what the conversation becomes: queued | with_agent | bot | closed
    webhook: str | None  # the signed webhook event it sends, if any


def _t(
    name: str,
    sources: set[HandoffState],
    target: HandoffState,
    conv: str,
    webhook: str | None = None,
) -> Transition:
    return Transition(name, frozenset(sources), target, conv, webhook)


S = HandoffState
OFFER = _t("offer", {S.QUEUED}, S.OFFERED, "queued")
EXPIRE_OFFER = _t("expire_offer", {S.OFFERED}, S.QUEUED, "queued")
DECLINE = _t("decline", {S.OFFERED}, S.QUEUED, "queued")
ACCEPT = _t(
    "accept",
    {S.QUEUED, S.OFFERED, S.CALLBACK_REQUESTED},
    S.ACCEPTED,
    "with_agent",
    "handoff.accepted",
)
TRANSFER = _t(
    "transfer", {S.QUEUED, S.OFFERED, S.ACCEPTED}, S.QUEUED, "queued", "handoff.transferred"
)
CLOSE = _t("close", {S.ACCEPTED}, S.CLOSED, "closed", "handoff.closed")
# handed back to the bot
RELEASE = _t("release", {S.ACCEPTED}, S.CLOSED, "bot", "handoff.released")
ABANDON = _t("abandon", {S.QUEUED, S.OFFERED}, S.ABANDONED, "closed", "handoff.abandoned")
CUSTOMER_LEFT = _t("customer_left", {S.ACCEPTED}, S.CLOSED, "closed", "handoff.closed")
# a phone transfer that failed: the customer is called back instead, and goes on with the bot
REQUEST_CALLBACK = _t(
    "request_callback",
    {S.QUEUED, S.OFFERED},
    S.CALLBACK_REQUESTED,
    "bot",
    "handoff.callback_requested",
)


def created_webhook(state: str) -> str:
    """The webhook event of a new handoff: queued for a person, or a callback requested."""
    return "handoff.callback_requested" if state == S.CALLBACK_REQUESTED else "handoff.queued"
