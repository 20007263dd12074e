"""A read-only view of the tracker Rasa sends to the action webhook, and the events we return.

The webhook protocol is Rasa's action server API: a POST with ``next_action``, ``sender_id`` and
``tracker``, answered with ``{"events": [...], "responses": [...]}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FALLBACK_INTENTS = frozenset({"nlu_fallback", "out_of_scope"})


@dataclass(frozen=True)
class UserTurn:
    text: str
    intent: str | None
    confidence: float
    timestamp: float | None


@dataclass
class Tracker:
    sender_id: str
    slots: dict[str, Any]
    latest_message: dict[str, Any]
    events: list[dict[str, Any]]
    active_loop: str | None

    @classmethod
    def from_request(cls, body: dict[str, Any]) -> Tracker:
        t = body.get("tracker") or {}
        return cls(
            sender_id=str(body.get("sender_id") or t.get("sender_id") or ""),
            slots=dict(t.get("slots") or {}),
            latest_message=dict(t.get("latest_message") or {}),
            events=list(t.get("events") or []),
            active_loop=(t.get("active_loop") or {}).get("name"),
        )

    @property
    def latest_intent(self) -> str | None:
        return (self.latest_message.get("intent") or {}).get("name")

    def user_turns(self) -> list[UserTurn]:
        turns = []
        for e in self.events:
            if e.get("event") != "user":
                continue
            intent = (e.get("parse_data") or {}).get("intent") or {}
            turns.append(
                UserTurn(
                    text=str(e.get("text") or ""),
                    intent=intent.get("name"),
                    confidence=float(intent.get("confidence") or 0.0),
                    timestamp=e.get("timestamp"),
                )
            )
        return turns

    def _last_user_index(self) -> int:
        return max((i for i, e in enumerate(self.events) if e.get("event") == "user"), default=-1)

    @property
    def turn_message(self) -> str | None:
        """The key of the customer message whose turn this is (the gateway's message key), or
        None when the turn did not come from a stored message."""
        last_user = self._last_user_index()
        key = self.events[last_user].get("message_id") if last_user >= 0 else None
        return key if isinstance(key, str) and key else None

    @property
    def is_rerun(self) -> bool:
        """Whether this turn runs again a message whose first run a crash interrupted (the
        gateway says so in the message's metadata)."""
        last_user = self._last_user_index()
        metadata = self.events[last_user].get("metadata") if last_user >= 0 else None
        return isinstance(metadata, dict) and metadata.get("rerun") is True

    def runs_this_turn(self, action: str) -> int:
        """How many times ``action`` already ran since the latest customer message."""
        return sum(
            1
            for e in self.events[self._last_user_index() + 1 :]
            if e.get("event") == "action" and e.get("name") == action
        )

    def handed_over_this_turn(self) -> bool:
        """Whether an action of this turn already handed the customer to a person."""
        return any(
            e.get("event") == "slot" and e.get("name") == "handoff_id" and e.get("value")
            for e in self.events[self._last_user_index() + 1 :]
        )

    def slots_to_validate(self) -> dict[str, Any]:
        """Slots set since the last user message: the candidates a form validator must check."""
        found: dict[str, Any] = {}
        for e in self.events[self._last_user_index() + 1 :]:
            if e.get("event") == "slot" and e.get("name") != "requested_slot":
                found[str(e["name"])] = e.get("value")
        return found

    def consecutive_fallbacks(self) -> int:
        count = 0
        for turn in reversed(self.user_turns()):
            if turn.intent not in FALLBACK_INTENTS:
                break
            count += 1
        return count


@dataclass
class ActionResult:
    """What an action returns: Rasa events and responses, built with verb-named helpers."""

    events: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    # whether the action changed something outside the dialogue (a write to the back office, an
    # outcome recorded): only such an answer is kept for a turn run again after a crash
    effects: bool = False

    def set_slot(self, name: str, value: Any) -> ActionResult:
        self.events.append({"event": "slot", "name": name, "value": value, "timestamp": None})
        return self

    def utter(self, response: str, **values: Any) -> ActionResult:
        self.responses.append({"response": response, **values})
        return self

    def say(self, text: str) -> ActionResult:
        """A message given as text rather than as one of the Rasa domain's responses."""
        self.responses.append({"text": text})
        return self

    def end_form(self) -> ActionResult:
        self.events.append({"event": "active_loop", "name": None, "timestamp": None})
        return self.set_slot("requested_slot", None)

    def as_json(self) -> dict[str, Any]:
        return {"events": self.events, "responses": self.responses}
