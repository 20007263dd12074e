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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from bot.conversation.state import ConversationState


class HandoffState(StrEnum):
    QUEUED = "queued"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    CLOSED = "closed"
    ABANDONED = "abandoned"
    CALLBACK_REQUESTED = "callback_requested"


WAITING = (HandoffState.QUEUED, HandoffState.OFFERED)
ENDED = (HandoffState.CLOSED, HandoffState.ABANDONED)


class HandoffMode(StrEnum):
    LIVE = "live"  # the customer waits for a person
    CALLBACK = "callback"  # the customer is to be called back


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[HandoffState]
    target: HandoffState
    conversation_state: ConversationState  # what the handoff's conversation becomes
    webhook: str | None = None  # the signed webhook event it sends, if any


_WAITING = frozenset(WAITING)
OFFER = Transition(
    "offer", frozenset({HandoffState.QUEUED}), HandoffState.OFFERED, ConversationState.QUEUED
)
EXPIRE_OFFER = Transition(
    "expire_offer",
    frozenset({HandoffState.OFFERED}),
    HandoffState.QUEUED,
    ConversationState.QUEUED,
)
DECLINE = Transition(
    "decline", frozenset({HandoffState.OFFERED}), HandoffState.QUEUED, ConversationState.QUEUED
)
ACCEPT = Transition(
    "accept",
    _WAITING | {HandoffState.CALLBACK_REQUESTED},
    HandoffState.ACCEPTED,
    ConversationState.WITH_AGENT,
    "handoff.accepted",
)
TRANSFER = Transition(
    "transfer",
    _WAITING | {HandoffState.ACCEPTED},
    HandoffState.QUEUED,
    ConversationState.QUEUED,
    "handoff.transferred",
)
CLOSE = Transition(
    "close",
    frozenset({HandoffState.ACCEPTED}),
    HandoffState.CLOSED,
    ConversationState.CLOSED,
    "handoff.closed",
)
# handed back to the bot
RELEASE = Transition(
    "release",
    frozenset({HandoffState.ACCEPTED}),
    HandoffState.CLOSED,
    ConversationState.BOT,
    "handoff.released",
)
ABANDON = Transition(
    "abandon", _WAITING, HandoffState.ABANDONED, ConversationState.CLOSED, "handoff.abandoned"
)
CUSTOMER_LEFT = Transition(
    "customer_left",
    frozenset({HandoffState.ACCEPTED}),
    HandoffState.CLOSED,
    ConversationState.CLOSED,
    "handoff.closed",
)
# a phone transfer that failed: the customer is called back instead, and goes on with the bot
REQUEST_CALLBACK = Transition(
    "request_callback",
    _WAITING,
    HandoffState.CALLBACK_REQUESTED,
    ConversationState.BOT,
    "handoff.callback_requested",
)


def created_webhook(state: str) -> str:
    """The webhook event of a new handoff: queued for a person, or a callback requested."""
    if state == HandoffState.CALLBACK_REQUESTED:
        return "handoff.callback_requested"
    return "handoff.queued"


class _InAQueue(Protocol):
    @property
    def queue(self) -> str: ...


Queued = TypeVar("Queued", bound=_InAQueue)


def numbered(waiting: Iterable[Queued]) -> Iterator[tuple[int, Queued]]:
    """Each handoff with its 1-based position in its own queue.

    ``waiting`` must hold whole queues in service order, as the store's ``waiting`` gives
    them: a queue filtered down to some of its customers would number them wrongly.
    """
    taken: dict[str, int] = {}
    for handoff in waiting:
        taken[handoff.queue] = position = taken.get(handoff.queue, 0) + 1
        yield position, handoff
