"""The states of a handoff and the transitions between them.

```
callback_requested ─accept─┐
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


def _t(name: str, sources: set[HandoffState], target: HandoffState, conv: str) -> Transition:
    return Transition(name, frozenset(sources), target, conv)


S = HandoffState
OFFER = _t("offer", {S.QUEUED}, S.OFFERED, "queued")
EXPIRE_OFFER = _t("expire_offer", {S.OFFERED}, S.QUEUED, "queued")
DECLINE = _t("decline", {S.OFFERED}, S.QUEUED, "queued")
ACCEPT = _t("accept", {S.QUEUED, S.OFFERED, S.CALLBACK_REQUESTED}, S.ACCEPTED, "with_agent")
TRANSFER = _t("transfer", {S.QUEUED, S.OFFERED, S.ACCEPTED}, S.QUEUED, "queued")
CLOSE = _t("close", {S.ACCEPTED}, S.CLOSED, "closed")
RELEASE = _t("release", {S.ACCEPTED}, S.CLOSED, "bot")  # handed back to the bot
ABANDON = _t("abandon", {S.QUEUED, S.OFFERED}, S.ABANDONED, "closed")
CUSTOMER_LEFT = _t("customer_left", {S.ACCEPTED}, S.CLOSED, "closed")
