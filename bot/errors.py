"""The gateway's error hierarchy.

Every error carries ``retryable``: whether the same request may succeed later without a change
(a Rasa server that is restarting) or not (a malformed message).
"""


class BotError(Exception):
    retryable = False


class ConfigError(BotError):
    """A configuration value is missing or invalid; the message names the key and its source."""


class NluUnavailable(BotError):
    """The Rasa server did not answer, or answered with an error."""

    retryable = True


class NluTimeout(NluUnavailable):
    """The Rasa server did not answer in time."""


class TrainingFailed(BotError):
    """Training a Rasa model failed; the message carries the tail of Rasa's output."""


class NotFound(BotError):
    """A record that was asked for does not exist."""


class Conflict(BotError):
    """The record is not in a state that allows the request (another agent accepted first)."""


class Forbidden(BotError):
    """The signed-in agent's role or queues do not allow the request."""


class BadRequest(BotError):
    """A request's body or parameters are invalid; the message says which and why."""
