"""The action server's view of a Rasa tracker, and the event JSON actions send back."""

from __future__ import annotations

from typing import Any

from bot.actions.tracker import ActionResult, Tracker, UserTurn


def user_event(text: str, intent: str, confidence: float, timestamp: float) -> dict[str, Any]:
    return {
        "event": "user",
        "text": text,
        "timestamp": timestamp,
        "parse_data": {"intent": {"name": intent, "confidence": confidence}, "entities": []},
    }


def slot_event(name: str, value: Any) -> dict[str, Any]:
    return {"event": "slot", "name": name, "value": value, "timestamp": None}


def webhook_body(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A Rasa action-server request as Rasa 3.6 sends it, trimmed to the fields we read."""
    return {
        "next_action": "validate_check_balance_form",
        "sender_id": "web-42",
        "version": "3.6.20",
        "tracker": {
            "sender_id": "web-42",
            "slots": {"customer_code": "CL100001", "language": "it", "requested_slot": "postcode"},
            "latest_message": {
                "text": "20121",
                "intent": {"name": "inform", "confidence": 0.91},
                "entities": [{"entity": "postcode", "value": "20121"}],
            },
            "events": events,
            "active_loop": {"name": "check_balance_form"},
        },
        "domain": {},
    }


EVENTS = [
    {"event": "action", "name": "action_session_start", "timestamp": 1.0},
    slot_event("language", "it"),
    user_event("quanto devo pagare", "check_balance", 0.95, 2.0),
    {"event": "active_loop", "name": "check_balance_form", "timestamp": 2.1},
    slot_event("requested_slot", "customer_code"),
    user_event("CL100001", "inform", 0.88, 3.0),
    slot_event("customer_code", "CL100001"),
    slot_event("requested_slot", "postcode"),
    {"event": "bot", "text": "Mi dà il CAP?", "timestamp": 3.2},
    user_event("20121", "inform", 0.91, 4.0),
    slot_event("postcode", "20121"),
    slot_event("requested_slot", None),
    slot_event("meter_reading", None),
]


def test_from_request_reads_sender_slots_latest_intent_and_loop() -> None:
    tracker = Tracker.from_request(webhook_body(EVENTS))

    assert tracker.sender_id == "web-42"
    assert tracker.slots["customer_code"] == "CL100001"
    assert tracker.latest_intent == "inform"
    assert tracker.active_loop == "check_balance_form"
    assert tracker.events == EVENTS


def test_from_request_tolerates_a_body_without_tracker() -> None:
    tracker = Tracker.from_request({"sender_id": "web-7"})

    assert tracker.sender_id == "web-7"
    assert tracker.latest_intent is None
    assert tracker.active_loop is None
    assert tracker.user_turns() == []
    assert tracker.slots_to_validate() == {}
    assert tracker.consecutive_fallbacks() == 0


def test_user_turns_lists_user_events_in_order() -> None:
    tracker = Tracker.from_request(webhook_body(EVENTS))

    assert tracker.user_turns() == [
        UserTurn("quanto devo pagare", "check_balance", 0.95, 2.0),
        UserTurn("CL100001", "inform", 0.88, 3.0),
        UserTurn("20121", "inform", 0.91, 4.0),
    ]


def test_slots_to_validate_returns_only_slots_set_after_last_user_event() -> None:
    tracker = Tracker.from_request(webhook_body(EVENTS))

    assert tracker.slots_to_validate() == {"postcode": "20121", "meter_reading": None}


def test_slots_to_validate_is_empty_when_last_event_is_the_user() -> None:
    events = [*EVENTS, user_event("grazie", "thanks", 0.99, 5.0)]

    assert Tracker.from_request(webhook_body(events)).slots_to_validate() == {}


def test_consecutive_fallbacks_counts_only_trailing_fallback_turns() -> None:
    events = [
        user_event("asdf", "nlu_fallback", 0.2, 1.0),
        user_event("quanto devo pagare", "check_balance", 0.9, 2.0),
        user_event("boh", "nlu_fallback", 0.1, 3.0),
        {"event": "bot", "text": "Può riformulare?", "timestamp": 3.1},
        user_event("che tempo fa", "out_of_scope", 0.8, 4.0),
    ]

    assert Tracker.from_request(webhook_body(events)).consecutive_fallbacks() == 2


def test_consecutive_fallbacks_is_zero_after_an_understood_turn() -> None:
    events = [
        user_event("boh", "nlu_fallback", 0.1, 1.0),
        user_event("quanto devo pagare", "check_balance", 0.9, 2.0),
    ]

    assert Tracker.from_request(webhook_body(events)).consecutive_fallbacks() == 0


def test_action_result_builds_rasa_events_and_responses() -> None:
    result = (
        ActionResult()
        .set_slot("postcode", "20121")
        .set_slot("verified", True)
        .utter("utter_balance", amount="89,90", due="15/04")
        .end_form()
    )

    assert result.as_json() == {
        "events": [
            {"event": "slot", "name": "postcode", "value": "20121", "timestamp": None},
            {"event": "slot", "name": "verified", "value": True, "timestamp": None},
            {"event": "active_loop", "name": None, "timestamp": None},
            {"event": "slot", "name": "requested_slot", "value": None, "timestamp": None},
        ],
        "responses": [{"response": "utter_balance", "amount": "89,90", "due": "15/04"}],
    }


def test_action_result_is_empty_by_default_and_not_shared() -> None:
    first = ActionResult().set_slot("language", "en")

    assert ActionResult().as_json() == {"events": [], "responses": []}
    assert len(first.events) == 1
