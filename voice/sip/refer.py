"""The pure parts of a blind transfer (RFC 3515): the Refer-To value and the NOTIFY's sipfrag.

``refer_to(target_uri, handoff_id)`` is the transfer target with the handoff id carried as URI
headers, so that the PBX copies them into the INVITE it sends the agent: ``X-Handoff-Id`` and
the RFC 7433 ``User-to-User`` (the id's UTF-8 bytes in hex, ``;encoding=hex``), escaped as
RFC 3261 §19.1.1 requires (``;`` and ``=`` of the value become ``%3B`` and ``%3D``).
``sipfrag_status`` reads the status line a ``message/sipfrag`` NOTIFY body reports (RFC 3420).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from voice.errors import SipParseError
from voice.sip.grammar import decimal, is_token
from voice.sip.message import MAX_STATUS, MIN_STATUS
from voice.sip.uri import parse_uri

HANDOFF_HEADER: Final = "X-Handoff-Id"
USER_TO_USER_HEADER: Final = "User-to-User"
SIPFRAG_TYPE: Final = "message/sipfrag"
REFER_EVENT: Final = "refer"
_STATUS_DIGITS: Final = 3
# Long SIP headers are truncated by PBXs; the id is a key, the envelope is fetched by it.
MAX_HANDOFF_ID_CHARS: Final = 64


def user_to_user(handoff_id: str) -> str:
    """The RFC 7433 User-to-User value carrying ``handoff_id``."""
    return f"{handoff_id.encode('utf-8').hex()};encoding=hex"


def check_handoff_id(handoff_id: str) -> None:
    """ValueError unless the id is a short token (it goes into a header verbatim)."""
    if not is_token(handoff_id) or len(handoff_id) > MAX_HANDOFF_ID_CHARS:
        raise ValueError(f"a handoff id must be a token of at most {MAX_HANDOFF_ID_CHARS} chars")


def refer_to(target_uri: str, handoff_id: str) -> str:
    """The ``Refer-To`` value for a transfer to ``target_uri``; ValueError if either is bad."""
    check_handoff_id(handoff_id)
    try:
        target = parse_uri(target_uri)
    except SipParseError as exc:
        raise ValueError(f"transfer target is not a SIP URI: {exc}") from exc
    if target.scheme == "tel":
        raise ValueError("transfer target must be a sip: or sips: URI to carry headers")
    headers = (
        *target.headers,
        (HANDOFF_HEADER, handoff_id),
        (USER_TO_USER_HEADER, user_to_user(handoff_id)),
    )
    return f"<{replace(target, headers=headers)}>"


def sipfrag_status(body: bytes) -> int | None:
    """The status code of a sipfrag body's first line (``SIP/2.0 200 OK``), or None."""
    first_line = body.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    try:
        text = first_line.decode("ascii")
    except UnicodeDecodeError:
        return None
    version, _, rest = text.strip().partition(" ")
    if version.upper() != "SIP/2.0":
        return None
    code = decimal(rest.partition(" ")[0], _STATUS_DIGITS)
    if code is None or not MIN_STATUS <= code <= MAX_STATUS:
        return None
    return code
