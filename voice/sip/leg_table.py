"""The calls in progress of the SIP user agent, and how a request finds its call."""

from __future__ import annotations

from voice.errors import SipParseError
from voice.sip.dialog import DialogKey
from voice.sip.leg import CallLeg
from voice.sip.message import SipRequest
from voice.sip.transaction import InviteServerTransaction

Origin = tuple[str, str, int]  # Call-ID, From tag, CSeq of a dialog-creating INVITE


def origin(invite: SipRequest) -> Origin:
    """What identifies an INVITE across paths; ``SipParseError`` if it cannot be read."""
    return (invite.call_id, invite.from_addr.tag or "", invite.cseq.number)


class LegTable:
    """Every ``CallLeg`` from its INVITE accepted to its dialog ended, by dialog, by INVITE
    transaction (for CANCEL) and by origin (for merged requests, RFC 3261 §8.2.2.2)."""

    def __init__(self) -> None:
        self._by_dialog: dict[DialogKey, CallLeg] = {}
        self._by_invite: dict[InviteServerTransaction, CallLeg] = {}
        self._by_origin: dict[Origin, CallLeg] = {}

    def __len__(self) -> int:
        return len(self._by_dialog)

    def legs(self) -> list[CallLeg]:
        """A copy of the legs now: the table may change while the caller walks it."""
        return list(self._by_dialog.values())

    def add(self, leg: CallLeg) -> None:
        self._by_dialog[leg.dialog.key] = leg
        self._by_invite[leg.invite] = leg
        self._by_origin[origin(leg.invite.request)] = leg

    def remove(self, leg: CallLeg) -> None:
        self._by_dialog.pop(leg.dialog.key, None)
        self._by_invite.pop(leg.invite, None)
        self._by_origin.pop(origin(leg.invite.request), None)

    def for_request(self, request: SipRequest) -> CallLeg | None:
        """The leg whose dialog ``request`` belongs to (by Call-ID and tags), or None."""
        try:
            key = (request.call_id, request.to_addr.tag or "", request.from_addr.tag or "")
        except SipParseError:
            return None
        return self._by_dialog.get(key)

    def for_invite(self, invite: InviteServerTransaction) -> CallLeg | None:
        return self._by_invite.get(invite)

    def has_origin(self, invite: SipRequest) -> bool:
        """Whether a leg began with this INVITE, received by another path (a merged request)."""
        return origin(invite) in self._by_origin
