"""The states of a conversation and of its messages (the store keeps their values)."""

from __future__ import annotations

from enum import StrEnum


class ConversationState(StrEnum):
    BOT = "bot"  # the bot handles it (also after a callback is booked)
    QUEUED = "queued"  # waiting for a person
    WITH_AGENT = "with_agent"  # a person handles it
    CLOSED = "closed"  # over; a new message starts it again with the bot


WITH_A_PERSON = (ConversationState.QUEUED, ConversationState.WITH_AGENT)


class MessageStatus(StrEnum):
    """Where a stored message is: a customer's goes from ``received`` to one of the others."""

    RECEIVED = "received"  # stored and acknowledged; its turn has not completed
    PROCESSED = "processed"  # its turn completed and the replies are stored
    RELAYED = "relayed"  # for the person handling the conversation; no bot turn
    REJECTED = "rejected"  # empty or too long: answered with a system message
    FAILED = "failed"  # the NLU was unavailable: answered with a system message
    SENT = "sent"  # the bot's, an agent's or the system's message


def turn_key(message_id: int) -> str:
    """The key of a customer message's turn, as the NLU and the action webhook see it."""
    return str(message_id)
