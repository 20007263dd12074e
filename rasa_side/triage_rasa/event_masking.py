"""What of a Rasa event is stored: texts masked with ``triage_pii.masking``, as the gateway's own
store masks them, and so the entity values the masking took out of the text."""

from __future__ import annotations

import json
from typing import Any

from triage_pii.masking import redact
from triage_rasa.event_log import ACTION_EVENT, EventRow


def masked_event(data: dict[str, Any]) -> dict[str, Any]:
    """The event as it is stored: the texts of user and bot messages masked, and so the values
    of entities the masking took out of the text (a number the NLU read as an entity)."""
    text = data.get("text")
    if not isinstance(text, str):
        return data
    masked = redact(text)
    if masked == text:
        return data
    data["text"] = masked
    parse_data = data.get("parse_data")
    if isinstance(parse_data, dict):
        entities = parse_data.get("entities")
        if isinstance(entities, list):
            entities = [_masked_entity(e, text, masked) for e in entities]
        data["parse_data"] = {**parse_data, "text": masked, "entities": entities}
    return data


def _masked_entity(entity: Any, text: str, masked: str) -> Any:
    value = entity.get("value") if isinstance(entity, dict) else None
    if value is None or isinstance(value, (dict, list)):
        return entity
    literal = str(value)
    if literal and literal in text and literal not in masked:
        return {**entity, "value": "*" * len(literal)}
    return entity


def event_row(type_name: str, data: dict[str, Any]) -> EventRow:
    """The row of an event (``event.as_dict()``), masked."""
    data = masked_event(data)
    action = data.get("name") if type_name == ACTION_EVENT else None
    return EventRow(type_name, action, json.dumps(data))
