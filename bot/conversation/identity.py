"""Customer identities signed by a host site (JWT, HS256, with an expiry), and resume tokens.

A host site that has signed its visitor in can vouch for them: it signs ``{"sub": <customer
code>, "exp": ...}`` with the shared secret and the widget passes the token in its first frame.
Only such a token marks a chat conversation as verified; nothing a visitor types does.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

import jwt

from bot.errors import BotError

ALGORITHMS = ["HS256"]
LEEWAY_S = 30
MAX_TOKEN_CHARS = 4096
CUSTOMER_CODE = re.compile(r"CL\d{6}")


class IdentityError(BotError):
    """The identity token is malformed, badly signed, expired, or names no customer code."""


@dataclass(frozen=True)
class Identity:
    customer_id: str
    name: str | None


def verify_identity(token: str, secret: str) -> Identity:
    if not secret:
        raise IdentityError("signed identities are not configured (TRIAGE_IDENTITY_SECRET)")
    if len(token) > MAX_TOKEN_CHARS:
        raise IdentityError("identity token too long")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=ALGORITHMS,
            options={"require": ["exp", "sub"]},
            leeway=LEEWAY_S,
        )
    except jwt.ExpiredSignatureError:
        raise IdentityError("identity token expired") from None
    except jwt.InvalidTokenError as exc:
        raise IdentityError(f"invalid identity token: {type(exc).__name__}") from None
    code = str(claims["sub"])
    if not CUSTOMER_CODE.fullmatch(code):
        raise IdentityError("the identity's subject is not a customer code")
    name = claims.get("name")
    return Identity(code, str(name) if isinstance(name, str) else None)


def resume_token(secret: bytes, conversation_id: str) -> str:
    """Proof that a client opened ``conversation_id``; kept by the widget to resume it."""
    return hmac.new(secret, b"resume:" + conversation_id.encode(), hashlib.sha256).hexdigest()


def resume_token_ok(secret: bytes, conversation_id: str, token: str) -> bool:
    return hmac.compare_digest(resume_token(secret, conversation_id), token)
