"""Digest authentication (RFC 8760 SHA-256 and RFC 2617 MD5) as a trunk's client computes it.

The client side here is written from the RFCs with hashlib, not with ``digest_response``, so a
mistake shared by both sides cannot pass.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from voice.sip.auth import (
    AuthOutcome,
    DigestAlgorithm,
    DigestAuthenticator,
    DigestCredentials,
    digest_response,
    parse_authorization,
)

CREDENTIALS = DigestCredentials("triage", "trunk1", "s3cret")
URI = "sip:100@192.0.2.1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def challenge_params(value: str) -> dict[str, str]:
    return {k.lower(): v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value)}


def client_authorization(
    challenge: str,
    *,
    password: str = "s3cret",
    username: str = "trunk1",
    uri: str = URI,
    method: str = "INVITE",
    nc: str = "00000001",
    qop: bool = True,
) -> str:
    params = challenge_params(challenge)
    name = params["algorithm"]
    h = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}[name]

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1 = hx(f"{username}:{params['realm']}:{password}")
    ha2 = hx(f"{method}:{uri}")
    cnonce = "0a4f113b"
    if qop:
        response = hx(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        extra = f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        response = hx(f"{ha1}:{params['nonce']}:{ha2}")
        extra = ""
    return (
        f'Digest username="{username}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="{uri}", response="{response}", algorithm={name}{extra}'
    )


def test_the_challenge_offers_sha256_before_md5_with_one_nonce() -> None:
    values = DigestAuthenticator(CREDENTIALS).challenges()
    params = [challenge_params(v) for v in values]
    assert [p["algorithm"] for p in params] == ["SHA-256", "MD5"]
    assert all(p["realm"] == "triage" and p["qop"] == "auth" for p in params)
    assert params[0]["nonce"] == params[1]["nonce"]
    assert all(v.startswith("Digest ") for v in values)


@pytest.mark.parametrize("which", [0, 1], ids=["SHA-256", "MD5"])
def test_a_client_answering_either_challenge_is_accepted(which: int) -> None:
    authenticator = DigestAuthenticator(CREDENTIALS)
    challenge = authenticator.challenges()[which]
    outcome = authenticator.verify("INVITE", URI, [client_authorization(challenge)])
    assert outcome is AuthOutcome.OK


def test_rfc_2069_style_credentials_without_qop_are_accepted_once() -> None:
    authenticator = DigestAuthenticator(CREDENTIALS)
    authorization = client_authorization(authenticator.challenges()[1], qop=False)
    assert authenticator.verify("INVITE", URI, [authorization]) is AuthOutcome.OK
    assert authenticator.verify("INVITE", URI, [authorization]) is AuthOutcome.STALE


@pytest.mark.parametrize(
    "change",
    [
        {"password": "wrong"},
        {"username": "someone"},
        {"uri": "sip:999@192.0.2.1"},
        {"method": "BYE"},
    ],
)
def test_wrong_credentials_or_a_response_for_another_request_are_invalid(
    change: dict[str, str],
) -> None:
    authenticator = DigestAuthenticator(CREDENTIALS)
    authorization = client_authorization(authenticator.challenges()[0], **change)  # type: ignore[arg-type]
    assert authenticator.verify("INVITE", URI, [authorization]) is AuthOutcome.INVALID


def test_no_credentials_for_our_realm_is_missing() -> None:
    authenticator = DigestAuthenticator(CREDENTIALS)
    other = client_authorization(authenticator.challenges()[0]).replace("triage", "elsewhere")
    assert authenticator.verify("INVITE", URI, []) is AuthOutcome.MISSING
    assert authenticator.verify("INVITE", URI, [other]) is AuthOutcome.MISSING
    assert authenticator.verify("INVITE", URI, ["Basic dXNlcjpwYXNz"]) is AuthOutcome.MISSING
    assert authenticator.verify("INVITE", URI, ['Digest realm="triage", x']) is AuthOutcome.MISSING


def test_a_nonce_that_is_not_ours_is_stale_with_the_password_and_invalid_without() -> None:
    # RFC 2617 §3.2.1: stale only for "a valid digest for that nonce"; a nonce from before a
    # restart must not make a trunk's right answers count as wrong ones (they lock it out).
    authenticator = DigestAuthenticator(CREDENTIALS)
    challenge = authenticator.challenges()[0]
    nonce = challenge_params(challenge)["nonce"]
    issued, random_part, mac = nonce.split(".")
    forged = challenge.replace(nonce, f"{int(issued, 16) + 10**6:x}.{random_part}.{mac}")
    other_process = DigestAuthenticator(CREDENTIALS).challenges()[0]
    junk = challenge.replace(nonce, "not-a-nonce-of-ours")
    for foreign in (forged, other_process, junk):
        assert authenticator.verify("INVITE", URI, [client_authorization(foreign)]) is (
            AuthOutcome.STALE
        )
        wrong = client_authorization(foreign, password="guess")
        assert authenticator.verify("INVITE", URI, [wrong]) is AuthOutcome.INVALID


def test_an_expired_nonce_is_stale_so_the_client_retries_silently() -> None:
    clock = Clock()
    authenticator = DigestAuthenticator(CREDENTIALS, nonce_lifetime_s=60, clock=clock)
    challenge = authenticator.challenges()[0]
    clock.now += 61
    authorization = client_authorization(challenge)
    assert authenticator.verify("INVITE", URI, [authorization]) is AuthOutcome.STALE
    assert all("stale=true" in value for value in authenticator.challenges(stale=True))


def test_a_replayed_nonce_count_is_stale_and_a_higher_one_is_accepted() -> None:
    authenticator = DigestAuthenticator(CREDENTIALS)
    challenge = authenticator.challenges()[0]
    first = client_authorization(challenge, nc="00000001")
    assert authenticator.verify("INVITE", URI, [first]) is AuthOutcome.OK
    assert authenticator.verify("INVITE", URI, [first]) is AuthOutcome.STALE
    second = client_authorization(challenge, nc="00000002")
    assert authenticator.verify("INVITE", URI, [second]) is AuthOutcome.OK


def test_digest_response_matches_the_rfc_2617_example() -> None:
    # RFC 2617 §3.5 (an HTTP example, same computation): Mufasa / Circle Of Life.
    credentials = DigestCredentials("testrealm@host.com", "Mufasa", "Circle Of Life")
    response = digest_response(
        DigestAlgorithm.MD5,
        credentials,
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_parse_authorization_unquotes_values_with_commas() -> None:
    scheme, params = parse_authorization('Digest username="a,b", realm="r", nc=00000001')
    assert scheme == "Digest" and params == {"username": "a,b", "realm": "r", "nc": "00000001"}


def test_credentials_hide_the_password_and_refuse_header_breaks() -> None:
    assert "s3cret" not in repr(CREDENTIALS)
    with pytest.raises(ValueError):
        DigestCredentials("triage", "trunk1", "pass\r\nX: y")
