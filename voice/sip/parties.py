"""Who calls whom, as an incoming INVITE says: the caller and the dialled number."""

from __future__ import annotations

from typing import Final

from voice.errors import SipParseError
from voice.sip.fields import parse_name_addr
from voice.sip.message import SipRequest
from voice.sip.uri import parse_uri

_ANONYMOUS: Final = "anonymous"


def caller(request: SipRequest, *, trust_pai: bool) -> str | None:
    """The caller's number or user: P-Asserted-Identity first if ``trust_pai``, then From.

    PAI is only believed from a trust domain (RFC 3325 §5): here, a source that passed the
    ``allowed_sources`` list (a known trunk). From is never verified: the brain takes it as a hint.
    """
    identities = request.headers.get_all("P-Asserted-Identity") if trust_pai else []
    candidates = [*identities[:1], request.headers.get("From") or ""]
    for value in candidates:
        try:
            user = parse_uri(parse_name_addr(value).uri).user
        except SipParseError:
            continue
        if user and user.lower() != _ANONYMOUS:
            return user
    return None


def dialled(request: SipRequest) -> str | None:
    """The user part of the Request-URI (the number dialled), if it has one."""
    try:
        return parse_uri(request.uri).user
    except SipParseError:
        return None
