"""``TriageChannel``: the gateway's input channel into Rasa, at ``/webhooks/triage/webhook``.

Runs inside the Rasa process (Python 3.10), named in the credentials file the gateway writes.
One request is one turn, and its answer carries all the gateway needs from it, read under the
conversation's lock right after the turn: the bot's messages, the parse of the user message (the
tracker's latest message), the slots and the active loop. With Rasa's REST channel the gateway
needed a second request for the tracker after every turn (14 % of Rasa's CPU under chat load),
and a turn that failed inside Rasa still answered 200 with whatever messages it had collected.
Here a failed turn answers 500 (Sanic's error page), so the gateway keeps the message as failed.

Request: ``{"sender": ID, "message": TEXT, "metadata": {...}, "message_id": KEY}``.
Answer: ``{"messages": [...], "latest_message": {...}, "slots": {...}, "active_loop": NAME}``.

``message_id`` is the gateway's key of the stored customer message. A turn is run again with the
same key, and ``"rerun": true`` in its metadata, when the gateway died before recording it (the
gateway's crash recovery); whatever the first run left in the tracker (the message, and the
bot's actions after it, complete or not) is dropped first, so the dialogue holds the message
once. A first run has nothing to drop and looks for nothing. Only the latest message of a
conversation can be run again: the gateway sends its messages in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import (  # type: ignore[import-not-found]
    CollectingOutputChannel,
    InputChannel,
    UserMessage,
)
from rasa.shared.core.events import UserUttered  # type: ignore[import-not-found]
from sanic import Blueprint, response  # type: ignore[import-not-found]
from sanic.request import Request  # type: ignore[import-not-found]
from sanic.response import HTTPResponse  # type: ignore[import-not-found]


async def forget_earlier_run(store: Any, sender: str, message_id: str) -> None:
    """Drop what an earlier, interrupted run of this message left in the tracker."""
    tracker = await store.retrieve(sender)
    if tracker is None:
        return
    latest = next((e for e in reversed(tracker.events) if isinstance(e, UserUttered)), None)
    if latest is None or latest.message_id != message_id:
        return
    # Rasa wraps the configured store in its FailSafeTrackerStore
    inner = getattr(store, "_tracker_store", store)
    forget = getattr(inner, "forget_from_message", None)
    if forget is None:
        raise TypeError(
            f"the tracker store {type(inner).__name__} cannot drop an interrupted turn; "
            "the triage tracker store is required"
        )
    await forget(sender, message_id)


def _bad_request(reason: str) -> HTTPResponse:
    return response.json({"error": "bad_request", "reason": reason}, status=400)


class TriageChannel(InputChannel):  # type: ignore[misc]
    @classmethod
    def name(cls) -> str:
        return "triage"

    def blueprint(self, on_new_message: Callable[[Any], Awaitable[Any]]) -> Blueprint:
        webhook = Blueprint("triage_webhook", __name__)

        @webhook.route("/", methods=["GET"])  # type: ignore[untyped-decorator]
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"])  # type: ignore[untyped-decorator]
        async def receive(request: Request) -> HTTPResponse:
            body = request.json if isinstance(request.json, dict) else None
            if body is None:
                return _bad_request("the body must be a JSON object")
            sender, text = body.get("sender"), body.get("message")
            metadata: Any | None = body.get("metadata")
            if not isinstance(sender, str) or not sender:
                return _bad_request("sender must be a non-empty string")
            if not isinstance(text, str):
                return _bad_request("message must be a string")
            if metadata is not None and not isinstance(metadata, dict):
                return _bad_request("metadata must be an object")
            message_id = body.get("message_id")
            if message_id is not None and not (isinstance(message_id, str) and message_id):
                return _bad_request("message_id must be a non-empty string")
            agent = request.app.ctx.agent
            if agent is None or not agent.is_ready():
                return response.json({"error": "not_ready"}, status=503)
            collector = CollectingOutputChannel()
            message = UserMessage(
                text,
                collector,
                sender,
                input_channel=self.name(),
                message_id=message_id,
                metadata=metadata,
            )
            # an error inside the turn becomes Sanic's 500: the gateway keeps the message failed
            async with agent.lock_store.lock(sender):
                if message_id is not None and (metadata or {}).get("rerun") is True:
                    # only a run again can find an earlier run of the same message
                    await forget_earlier_run(agent.tracker_store, sender, message_id)
                await agent.processor.handle_message(message)
                tracker = await agent.tracker_store.retrieve(sender)
                state = {
                    "messages": collector.messages,
                    "latest_message": tracker._latest_message_data() if tracker else None,
                    "slots": tracker.current_slot_values() if tracker else {},
                    "active_loop": tracker.active_loop_name if tracker else None,
                }
            return response.json(state)

        return webhook
