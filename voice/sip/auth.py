"""Digest authentication of the INVITEs a trunk sends us (RFC 3261 §22.4, RFC 8760, RFC 7616).

``DigestAuthenticator.challenges()`` gives the ``WWW-Authenticate`` values of a 401: one per
algorithm, SHA-256 first (RFC 8760 §2.4: in order of preference), ``qop="auth"``. ``verify``
checks an ``Authorization`` value against the configured credentials and says why it failed:
``MISSING`` and ``INVALID`` are answered with a fresh challenge, ``STALE`` with
``stale=true`` so that the client retries with the new nonce without asking anyone.

Nonces are stateless to issue: issue time, random bits and an HMAC over both with a per-process
key, so a forged or altered nonce is refused without a lookup, and one older than
``nonce_lifetime_s`` is stale. Replays are refused by the nonce count: each nonce's highest
``nc`` is remembered (bounded) and a request that does not raise it is answered as stale. A
nonce used without ``qop`` (RFC 2069 clients, no ``nc``) is good for one request.

Nothing here logs: usernames and digests are credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from voice.errors import SipParseError
from voice.sip.grammar import is_token, parse_quoted, quote_string, split_unquoted

DEFAULT_NONCE_LIFETIME_S: Final = 300.0
MAX_TRACKED_NONCES: Final = 4096  # nonce counts remembered; the oldest are forgotten (stale)
_NONCE_RANDOM_BYTES: Final = 12
_NONCE_MAC_BYTES: Final = 16
_KEY_BYTES: Final = 32
_NC_DIGITS: Final = 8
_QOP_AUTH: Final = "auth"
_NO_QOP: Final = -1  # the nonce count recorded for a nonce used without qop


class DigestAlgorithm(StrEnum):
    SHA256 = "SHA-256"
    MD5 = "MD5"

    def hash(self, text: str) -> str:
        data = text.encode("utf-8")
        if self is DigestAlgorithm.SHA256:
            return hashlib.sha256(data).hexdigest()
        return hashlib.md5(data, usedforsecurity=False).hexdigest()


class AuthOutcome(StrEnum):
    OK = "ok"
    MISSING = "missing"  # no Authorization for our realm
    STALE = "stale"  # a good response to an expired or reused nonce: challenge, stale=true
    INVALID = "invalid"  # wrong user, password or request, or a malformed header


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """The one account a trunk authenticates with; ``repr`` hides the password."""

    realm: str
    username: str
    password: str

    def __post_init__(self) -> None:
        for name in ("realm", "username", "password"):
            value = getattr(self, name)
            if not value or "\r" in value or "\n" in value:
                raise ValueError(f"digest {name} must be non-empty text on one line")

    def __repr__(self) -> str:
        return f"DigestCredentials(realm={self.realm!r}, username={self.username!r}, password=***)"


def parse_authorization(value: str) -> tuple[str, dict[str, str]]:
    """The scheme and lower-cased parameter names of a credentials value (quotes removed)."""
    scheme, _, rest = value.strip(" \t").partition(" ")
    if not is_token(scheme):
        raise SipParseError("Authorization header has no scheme")
    params: dict[str, str] = {}
    for part in split_unquoted(rest, ","):
        name, equals, raw = part.partition("=")
        name = name.strip(" \t").lower()
        raw = raw.strip(" \t")
        if not equals or not is_token(name):
            raise SipParseError("Authorization header has a malformed parameter")
        if raw.startswith('"'):
            text, end = parse_quoted(raw, 0)
            if end != len(raw):
                raise SipParseError("Authorization header has text after a quoted value")
            params[name] = text
        else:
            params[name] = raw
    return scheme, params


def digest_response(
    algorithm: DigestAlgorithm,
    credentials: DigestCredentials,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
) -> str:
    """The ``response`` value a client computes (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1)."""
    ha1 = algorithm.hash(f"{credentials.username}:{credentials.realm}:{credentials.password}")
    ha2 = algorithm.hash(f"{method}:{uri}")
    if qop is None:
        return algorithm.hash(f"{ha1}:{nonce}:{ha2}")
    return algorithm.hash(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


class DigestAuthenticator:
    """Challenges and verifies digest credentials for one realm; see the module docstring."""

    def __init__(
        self,
        credentials: DigestCredentials,
        *,
        nonce_lifetime_s: float = DEFAULT_NONCE_LIFETIME_S,
        algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if nonce_lifetime_s <= 0 or not algorithms:
            raise ValueError("a digest authenticator needs a positive lifetime and an algorithm")
        self.credentials = credentials
        self.nonce_lifetime_s = nonce_lifetime_s
        self.algorithms = algorithms
        self._clock = clock
        self._key = secrets.token_bytes(_KEY_BYTES)
        self._counts: OrderedDict[str, int] = OrderedDict()  # nonce -> highest nc seen
        # Issue time (ms) of the newest nonce forgotten: an older nonce not tracked any more
        # may have been used already, so it is stale rather than fresh.
        self._forgotten_ms = -1

    def challenges(self, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values, most preferred algorithm first, sharing one nonce."""
        nonce = self._new_nonce()
        realm = quote_string(self.credentials.realm)
        suffix = ", stale=true" if stale else ""
        return [
            f'Digest realm={realm}, nonce="{nonce}", algorithm={algorithm.value}, '
            f'qop="{_QOP_AUTH}"{suffix}'
            for algorithm in self.algorithms
        ]

    def verify(self, method: str, request_uri: str, authorizations: list[str]) -> AuthOutcome:
        """Check the request's ``Authorization`` values; the one for our realm decides."""
        params = self._for_our_realm(authorizations)
        if params is None:
            return AuthOutcome.MISSING
        try:
            algorithm = DigestAlgorithm(params.get("algorithm", "MD5").upper())
        except ValueError:
            return AuthOutcome.INVALID
        nonce = params.get("nonce", "")
        qop = params.get("qop")
        if (
            algorithm not in self.algorithms
            or (qop is not None and qop != _QOP_AUTH)
            or params.get("uri") != request_uri
            or not hmac.compare_digest(
                params.get("username", "").encode(), self.credentials.username.encode()
            )
        ):
            return AuthOutcome.INVALID
        expected = digest_response(
            algorithm,
            self.credentials,
            method=method,
            uri=request_uri,
            nonce=nonce,
            qop=qop,
            nc=params.get("nc", ""),
            cnonce=params.get("cnonce", ""),
        )
        if not hmac.compare_digest(params.get("response", "").lower().encode(), expected.encode()):
            return AuthOutcome.INVALID
        # A right answer to a nonce that is not ours (issued before a restart, or made up by
        # someone who knows the password) is stale, not wrong: RFC 2617 §3.2.1.
        if not self._authentic(nonce):
            return AuthOutcome.STALE
        if self._expired(nonce) or not self._count(nonce, params.get("nc") if qop else None):
            return AuthOutcome.STALE
        return AuthOutcome.OK

    def _for_our_realm(self, authorizations: list[str]) -> Mapping[str, str] | None:
        for value in authorizations:
            try:
                scheme, params = parse_authorization(value)
            except SipParseError:
                continue
            if scheme.lower() == "digest" and params.get("realm") == self.credentials.realm:
                return params
        return None

    def _new_nonce(self) -> str:
        issued = f"{int(self._clock() * 1000):x}.{secrets.token_hex(_NONCE_RANDOM_BYTES)}"
        return f"{issued}.{self._mac(issued)}"

    def _mac(self, issued: str) -> str:
        digest = hmac.new(self._key, issued.encode(), hashlib.sha256).digest()
        return digest[:_NONCE_MAC_BYTES].hex()

    def _authentic(self, nonce: str) -> bool:
        issued, _, mac = nonce.rpartition(".")
        return bool(issued) and hmac.compare_digest(mac.encode(), self._mac(issued).encode())

    def _expired(self, nonce: str) -> bool:
        return self._clock() * 1000 - _issued_ms(nonce) > self.nonce_lifetime_s * 1000

    def _count(self, nonce: str, nc: str | None) -> bool:
        """Record a use of ``nonce``; False if it replays an earlier one."""
        if nc is None:
            count = _NO_QOP
        elif len(nc) == _NC_DIGITS and all(c in "0123456789abcdefABCDEF" for c in nc):
            count = int(nc, 16)
        else:
            return False
        last = self._counts.get(nonce)
        if last is None and _issued_ms(nonce) <= self._forgotten_ms:
            return False
        if last is not None and (count == _NO_QOP or last == _NO_QOP or count <= last):
            return False
        self._counts[nonce] = count
        self._counts.move_to_end(nonce)
        while len(self._counts) > MAX_TRACKED_NONCES:
            forgotten, _ = self._counts.popitem(last=False)
            self._forgotten_ms = max(self._forgotten_ms, _issued_ms(forgotten))
        return True


def _issued_ms(nonce: str) -> int:
    """The issue time of one of our (authenticated) nonces."""
    return int(nonce.partition(".")[0], 16)
