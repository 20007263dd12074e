"""Turn Rasa's JSON into the seam's dataclasses; shared by the HTTP client and the eval worker."""

from __future__ import annotations

from typing import Any

from bot.nlu.client import BotReply, Entity, ParseResult


def parse_result_from_rasa(data: dict[str, Any], text: str) -> ParseResult:
    intent = data.get("intent") or {}
    entities = tuple(
        Entity(
            entity=str(e.get("entity")),
            value=str(e.get("value")),
            start=e.get("start"),
            end=e.get("end"),
            extractor=e.get("extractor"),
        )
        for e in data.get("entities") or ()
    )
    ranking = tuple(
        (str(r.get("name")), float(r.get("confidence") or 0.0))
        for r in data.get("intent_ranking") or ()
    )
    return ParseResult(
        text=text,
        intent=intent.get("name"),
        confidence=float(intent.get("confidence") or 0.0),
        entities=entities,
        ranking=ranking,
    )


def replies_from_rasa(messages: list[dict[str, Any]]) -> tuple[BotReply, ...]:
    replies: list[BotReply] = []
    for m in messages:
        text = m.get("text")
        if not text:
            continue
        buttons = tuple(
            (str(b.get("title", "")), str(b.get("payload", ""))) for b in m.get("buttons") or ()
        )
        replies.append(BotReply(text=str(text), buttons=buttons))
    return tuple(replies)
