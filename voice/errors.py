"""The voice package's error hierarchy.

Every error carries ``retryable``: whether the same operation may succeed later without a change
(a recogniser model still loading, a busy port range) or not (a malformed packet, a missing model).
Protocol parsers raise ``ValueError`` subclasses from here so that a transport can log, count and
drop bad input without catching anything broader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voice.sip.message import SipRequest


class VoiceError(Exception):
    retryable = False


class SipParseError(VoiceError, ValueError):
    """A SIP message could not be parsed; the message says what and where."""


class SipBadRequest(SipParseError):
    """A malformed request whose headers could still be read: answer it 400 (RFC 3261 §18.3).

    ``request`` holds the method, the headers and, as far as they could be read, the URI and
    version; its body is empty. It is good for addressing a response and for nothing else.
    """

    def __init__(self, message: str, request: SipRequest) -> None:
        super().__init__(message)
        self.request = request


class SdpError(VoiceError, ValueError):
    """An SDP body could not be parsed, or an offer has nothing we can answer."""


class RtpParseError(VoiceError, ValueError):
    """An RTP packet or RFC 4733 payload is malformed."""


class RtpPortsExhausted(VoiceError):
    """Every even port of the configured RTP range is in use; calls ending will free some."""

    retryable = True


class ModelNotFound(VoiceError):
    """A speech model (ASR or TTS voice) is not installed; the message says how to install it."""


class EngineUnavailable(VoiceError):
    """A speech engine failed to start or stopped answering."""

    retryable = True


class ModelDownloadError(VoiceError):
    """A speech model could not be downloaded, verified or unpacked; the message says what to do.

    ``retryable`` is set per error: an unreachable site or a cut-off download may succeed later; an
    archive that fails its checksum or holds paths outside its directory will not.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable
