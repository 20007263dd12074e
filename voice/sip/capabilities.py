"""What the SIP user agent supports, and the headers that tell a peer (RFC 3261 §8.2.1-§8.2.3).

``validate_request`` checks requests against these; a refusal names what we do support (405 and
501 with Allow, 415 with Accept, 420 with Unsupported), and our 2xx responses announce Allow
and Supported.
"""

from __future__ import annotations

from typing import Final

from voice.sip.message import SipRequest
from voice.sip.validation import DEFAULT_METHODS, SDP_MEDIA_TYPE, unsupported_extensions

ALLOWED_METHODS: Final = DEFAULT_METHODS
# Bodies we read: SDP, the sipfrag of REFER NOTIFYs, DTMF of INFO (answered, not interpreted).
CONTENT_TYPES: Final = (
    SDP_MEDIA_TYPE,
    "message/sipfrag",
    "application/dtmf-relay",
    "application/dtmf",
)
SUPPORTED_EXTENSIONS: Final[tuple[str, ...]] = ()  # no option tags: Require gets 420


def capability_headers() -> list[tuple[str, str]]:
    """Allow and Supported, which our 2xx responses carry."""
    headers = [("Allow", ", ".join(ALLOWED_METHODS))]
    headers.append(("Supported", ", ".join(SUPPORTED_EXTENSIONS)))
    return headers


def refusal_headers(request: SipRequest, status: int) -> list[tuple[str, str]]:
    """What a refusal from ``validate_request`` must carry (RFC 3261 §8.2.1-§8.2.3)."""
    if status in (405, 501):
        return [("Allow", ", ".join(ALLOWED_METHODS))]
    if status == 415:
        return [("Accept", ", ".join(CONTENT_TYPES))]
    if status == 420:
        unsupported = unsupported_extensions(request, SUPPORTED_EXTENSIONS)
        return [("Unsupported", tag) for tag in unsupported]
    return []
