"""``HttpBackOffice`` against a real HTTP server on loopback that implements the contract."""

from __future__ import annotations

import gc
import logging
import re
import socket
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio

from bot.backoffice import http
from bot.backoffice.http import RETRY_BACKOFF_S, HttpBackOffice
from bot.backoffice.protocol import (
    CUSTOMER_BY_PHONE,
    FIND_CUSTOMER,
    VERIFY_IDENTITY,
    BackOfficeUnavailable,
    CustomerRecord,
    OperationSpec,
    UnknownOperation,
)
from tests.backoffice_server import (
    BY_PHONE_PATH,
    FIND_PATH,
    OPERATIONS_PATH,
    VERIFY_PATH,
    BackOfficeServer,
    Failure,
)

MARIA = CustomerRecord(
    "CL100001",
    name="Maria Rossi",
    phone="+393331234567",
    language="it",
    vip=True,
    attributes={"contract": "gas", "balance_eur": 45.2},
)
# two customers who share a landline: a look-up by that number finds no one
LUCA = CustomerRecord("CL100002", name="Luca Bianchi", phone="+390212345678", language="it")
GIULIA = CustomerRecord("CL100003", name="Giulia Bianchi", phone="+390212345678", language="en")
FACTORS = {"CL100001": {"postcode": "20123"}}

SUBMIT_READING = "submit_reading"
TICKET_STATUS = "ticket_status"
SUBMIT_PATH = OPERATIONS_PATH + SUBMIT_READING
STATUS_PATH = OPERATIONS_PATH + TICKET_STATUS
OPERATIONS = {
    SUBMIT_READING: OperationSpec(SUBMIT_READING, read_only=False),
    TICKET_STATUS: OperationSpec(TICKET_STATUS, read_only=True),
}
QUICK_TIMEOUT_S = 0.3
MARGIN_S = 1.0

Connect = Callable[..., HttpBackOffice]


def _submit_reading(args: dict[str, Any]) -> dict[str, Any]:
    if args["reading"] < 1200:  # a business outcome: an answer, not an HTTP error
        return {"accepted": False, "reason": "lower_than_last", "last": 1200}
    return {"accepted": True}


async def _ticket_status(args: dict[str, Any]) -> dict[str, Any]:
    return {"exists": args["ticket"] == "TK123456", "status": "open"}


def _server(**kwargs: Any) -> BackOfficeServer:
    return BackOfficeServer(
        customers=[MARIA, LUCA, GIULIA],
        factors=FACTORS,
        operations={SUBMIT_READING: _submit_reading, TICKET_STATUS: _ticket_status},
        **kwargs,
    )


@pytest_asyncio.fixture
async def server() -> AsyncIterator[BackOfficeServer]:
    async with _server() as running:
        yield running


@pytest_asyncio.fixture
async def connect() -> AsyncIterator[Connect]:
    """Makes connectors that the test does not have to close."""
    made: list[HttpBackOffice] = []

    def make(url: str, **kwargs: Any) -> HttpBackOffice:
        kwargs.setdefault("timeout_s", QUICK_TIMEOUT_S)
        made.append(HttpBackOffice(url, OPERATIONS, **kwargs))
        return made[-1]

    yield make
    for back_office in made:
        await back_office.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def resource_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _unclosed(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, ResourceWarning) and "nclosed" in str(w.message)
    ]


# --- answers ----------------------------------------------------------------------------------


async def test_find_customer_returns_the_record_when_found(
    server: BackOfficeServer, connect: Connect
) -> None:
    assert await connect(server.url).find_customer("CL100001") == MARIA
    assert server.requests_to(FIND_PATH)[0].json() == {"customer_id": "CL100001"}


async def test_find_customer_returns_none_when_unknown(
    server: BackOfficeServer, connect: Connect
) -> None:
    assert await connect(server.url).find_customer("CL999999") is None


async def test_customer_by_phone_returns_the_one_customer_with_that_number(
    server: BackOfficeServer, connect: Connect
) -> None:
    assert await connect(server.url).customer_by_phone("+393331234567") == MARIA
    assert server.requests_to(BY_PHONE_PATH)[0].json() == {"phone": "+393331234567"}


async def test_customer_by_phone_returns_none_when_several_share_the_number(
    server: BackOfficeServer, connect: Connect
) -> None:
    back_office = connect(server.url)
    assert await back_office.customer_by_phone("+390212345678") is None
    assert await back_office.customer_by_phone("+390000000000") is None


async def test_verify_identity_returns_the_customer_when_factors_match(
    server: BackOfficeServer, connect: Connect
) -> None:
    found = await connect(server.url).verify_identity("CL100001", {"postcode": "20123"})
    assert found == MARIA
    sent = server.requests_to(VERIFY_PATH)[0].json()
    assert sent == {"customer_id": "CL100001", "factors": {"postcode": "20123"}}


async def test_verify_identity_returns_none_when_factors_differ_or_customer_unknown(
    server: BackOfficeServer, connect: Connect
) -> None:
    back_office = connect(server.url)
    assert await back_office.verify_identity("CL100001", {"postcode": "20100"}) is None
    assert await back_office.verify_identity("CL999999", {"postcode": "20123"}) is None


async def test_call_sends_args_and_idempotency_key_and_returns_the_result(
    server: BackOfficeServer, connect: Connect
) -> None:
    back_office = connect(server.url)
    result = await back_office.call(SUBMIT_READING, {"reading": 1500}, idempotency_key="turn-7")
    assert result == {"accepted": True}
    (request,) = server.requests_to(SUBMIT_PATH)
    assert request.json() == {"args": {"reading": 1500}}
    assert request.headers["Idempotency-Key"] == "turn-7"


async def test_call_returns_business_outcomes_as_results(
    server: BackOfficeServer, connect: Connect
) -> None:
    back_office = connect(server.url)
    lower = await back_office.call(SUBMIT_READING, {"reading": 900}, idempotency_key="k1")
    assert lower == {"accepted": False, "reason": "lower_than_last", "last": 1200}
    missing = await back_office.call(TICKET_STATUS, {"ticket": "TK000000"}, idempotency_key="k2")
    assert missing["exists"] is False


async def test_every_request_carries_json_content_type_and_a_request_id(
    server: BackOfficeServer, connect: Connect
) -> None:
    back_office = connect(server.url)
    await back_office.find_customer("CL100001")
    await back_office.find_customer("CL100002")
    first, second = (r.headers for r in server.requests_to(FIND_PATH))
    assert first["Content-Type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{32}", first["X-Request-Id"])
    assert first["X-Request-Id"] != second["X-Request-Id"]
    assert "Authorization" not in first and "X-Triage-Signature" not in first


# --- credentials ------------------------------------------------------------------------------


async def test_bearer_token_is_accepted_by_the_server_when_right(connect: Connect) -> None:
    async with _server(token="t0ken") as server:
        assert await connect(server.url, token="t0ken").find_customer("CL100001") == MARIA
        assert server.requests[0].headers["Authorization"] == "Bearer t0ken"


async def test_bearer_token_when_wrong_fails_once_without_retry(connect: Connect) -> None:
    async with _server(token="t0ken") as server:
        with pytest.raises(BackOfficeUnavailable, match="HTTP 401") as caught:
            await connect(server.url, token="wrong").find_customer("CL100001")
        assert caught.value.operation == FIND_CUSTOMER
        assert len(server.requests) == 1


async def test_hmac_signature_is_verified_by_the_server_when_secret_matches(
    connect: Connect,
) -> None:
    async with _server(hmac_secret="s3cret") as server:
        back_office = connect(server.url, hmac_secret="s3cret")
        assert await back_office.verify_identity("CL100001", {"postcode": "20123"}) == MARIA
        assert await back_office.call(SUBMIT_READING, {"reading": 2000}, idempotency_key="k")
        headers = server.requests[0].headers
        assert abs(int(headers["X-Triage-Timestamp"]) - time.time()) < 5
        assert re.fullmatch(r"sha256=[0-9a-f]{64}", headers["X-Triage-Signature"])


async def test_hmac_signature_when_secret_differs_is_rejected_without_retry(
    connect: Connect,
) -> None:
    async with _server(hmac_secret="s3cret") as server:
        with pytest.raises(BackOfficeUnavailable, match="HTTP 401"):
            await connect(server.url, hmac_secret="other").find_customer("CL100001")
        with pytest.raises(BackOfficeUnavailable, match="HTTP 401"):
            await connect(server.url).find_customer("CL100001")
        assert len(server.requests) == 2


async def test_signature_matches_the_worked_example_in_the_api_document(
    server: BackOfficeServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "time", SimpleNamespace(time=lambda: 1767225600.4))
    await connect(server.url, hmac_secret="s3cret").find_customer("CL100001")
    (request,) = server.requests
    assert request.body == b'{"customer_id": "CL100001"}'
    assert request.headers["X-Triage-Timestamp"] == "1767225600"
    assert request.headers["X-Triage-Signature"] == (
        "sha256=b2cd47063d12db424a6337184d8c781bf47b2c82b1e81b9f66f2f8a8a44ed248"
    )


# --- failures ---------------------------------------------------------------------------------


async def test_read_fails_within_its_bound_when_the_server_hangs(
    server: BackOfficeServer, connect: Connect
) -> None:
    retries = 2
    server.fail(FIND_PATH, Failure.HANG)
    back_office = connect(server.url, retries=retries)
    started = time.monotonic()
    with pytest.raises(BackOfficeUnavailable, match=r"no answer in 0\.3 s"):
        await back_office.find_customer("CL100001")
    elapsed = time.monotonic() - started
    assert elapsed >= QUICK_TIMEOUT_S * (1 + retries)
    assert elapsed < QUICK_TIMEOUT_S * (1 + retries) + sum(RETRY_BACKOFF_S) + MARGIN_S
    assert len(server.requests_to(FIND_PATH)) == 1 + retries


async def test_write_fails_after_one_timeout_when_the_server_hangs(
    server: BackOfficeServer, connect: Connect
) -> None:
    server.fail(SUBMIT_PATH, Failure.HANG)
    started = time.monotonic()
    with pytest.raises(BackOfficeUnavailable) as caught:
        await connect(server.url).call(SUBMIT_READING, {"reading": 1500}, idempotency_key="k")
    assert time.monotonic() - started < QUICK_TIMEOUT_S + MARGIN_S
    assert caught.value.operation == SUBMIT_READING
    assert len(server.requests_to(SUBMIT_PATH)) == 1


async def test_read_is_tried_one_plus_retries_times_when_the_server_answers_500(
    server: BackOfficeServer, connect: Connect
) -> None:
    server.fail(VERIFY_PATH, Failure.STATUS_500)
    with pytest.raises(BackOfficeUnavailable, match="HTTP 500") as caught:
        await connect(server.url, retries=2).verify_identity("CL100001", {"postcode": "20123"})
    assert caught.value.operation == VERIFY_IDENTITY
    assert len(server.requests_to(VERIFY_PATH)) == 3


async def test_read_only_operation_is_retried_when_the_server_answers_500(
    server: BackOfficeServer, connect: Connect
) -> None:
    server.fail(STATUS_PATH, Failure.STATUS_500)
    with pytest.raises(BackOfficeUnavailable):
        await connect(server.url, retries=1).call(
            TICKET_STATUS, {"ticket": "T"}, idempotency_key="k"
        )
    keys = {r.headers["Idempotency-Key"] for r in server.requests_to(STATUS_PATH)}
    assert len(server.requests_to(STATUS_PATH)) == 2 and keys == {"k"}


async def test_write_is_sent_once_when_the_server_answers_500(
    server: BackOfficeServer, connect: Connect
) -> None:
    server.fail(SUBMIT_PATH, Failure.STATUS_500)
    with pytest.raises(BackOfficeUnavailable, match="HTTP 500"):
        await connect(server.url, retries=2).call(
            SUBMIT_READING, {"reading": 1500}, idempotency_key="k"
        )
    assert len(server.requests_to(SUBMIT_PATH)) == 1


async def test_read_succeeds_when_the_server_fails_once_then_answers(
    server: BackOfficeServer, connect: Connect
) -> None:
    server.fail_then_ok(FIND_PATH, 1)
    assert await connect(server.url, retries=2).find_customer("CL100001") == MARIA
    first, second = server.requests_to(FIND_PATH)
    assert first.headers["X-Request-Id"] == second.headers["X-Request-Id"]


async def test_write_fails_when_the_server_fails_once_then_would_answer(
    server: BackOfficeServer, connect: Connect
) -> None:
    server.fail_then_ok(SUBMIT_PATH, 1)
    with pytest.raises(BackOfficeUnavailable):
        await connect(server.url).call(SUBMIT_READING, {"reading": 1500}, idempotency_key="k")
    assert len(server.requests_to(SUBMIT_PATH)) == 1


ReadCall = Callable[[HttpBackOffice], Awaitable[object]]
EVERY_ENDPOINT: list[tuple[str, ReadCall]] = [
    (FIND_PATH, lambda b: b.find_customer("CL100001")),
    (BY_PHONE_PATH, lambda b: b.customer_by_phone("+393331234567")),
    (VERIFY_PATH, lambda b: b.verify_identity("CL100001", {"postcode": "20123"})),
    (STATUS_PATH, lambda b: b.call(TICKET_STATUS, {"ticket": "TK1"}, idempotency_key="k")),
]


@pytest.mark.parametrize(
    ("failure", "why"),
    [
        (Failure.INVALID_JSON, "invalid JSON"),
        (Failure.WRONG_SHAPE, "must be"),
        (Failure.TOO_LARGE, "over 1 MiB"),
    ],
)
@pytest.mark.parametrize(("path", "read"), EVERY_ENDPOINT, ids=[p for p, _ in EVERY_ENDPOINT])
async def test_read_fails_once_without_retry_when_the_answer_is_garbage(
    server: BackOfficeServer,
    connect: Connect,
    failure: Failure,
    why: str,
    path: str,
    read: ReadCall,
) -> None:
    server.fail(path, failure)
    with pytest.raises(BackOfficeUnavailable, match=why):
        await read(connect(server.url, retries=2))
    assert len(server.requests_to(path)) == 1


@pytest.mark.parametrize(
    ("path", "answer", "why"),
    [
        (FIND_PATH, {"customers": []}, "customer is missing"),
        (FIND_PATH, {"customer": {"id": "CL100001", "vip": "Maria Rossi"}}, "vip"),
        (BY_PHONE_PATH, {"customer": {"name": "Maria Rossi"}}, "customer.id"),
        (VERIFY_PATH, {"verified": True}, "must be a JSON object"),
        (VERIFY_PATH, {"verified": 1, "customer": MARIA.as_dict()}, "verified"),
        (STATUS_PATH, {"result": None}, "result must be an object"),
        (STATUS_PATH, ["Maria Rossi"], "not a JSON object"),
    ],
)
async def test_read_fails_once_with_a_reason_free_of_personal_data_when_the_shape_is_wrong(
    server: BackOfficeServer,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
    path: str,
    answer: Any,
    why: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.backoffice.http")
    server.reply(path, answer)
    read = dict(EVERY_ENDPOINT)[path]
    with pytest.raises(BackOfficeUnavailable, match=why) as caught:
        await read(connect(server.url, retries=2))
    assert len(server.requests_to(path)) == 1
    (record,) = [r for r in caplog.records if r.name == "bot.backoffice.http"]
    assert record.__dict__["status"] == 200 and record.__dict__["reason"] == caught.value.why
    for text in (str(caught.value), record.getMessage()):
        assert "Maria" not in text and "CL100001" not in text


async def test_read_fails_when_the_connection_is_refused(connect: Connect) -> None:
    back_office = connect(f"http://127.0.0.1:{_closed_port()}", retries=1)
    started = time.monotonic()
    with pytest.raises(BackOfficeUnavailable, match="connection failed") as caught:
        await back_office.customer_by_phone("+393331234567")
    assert caught.value.operation == CUSTOMER_BY_PHONE
    assert time.monotonic() - started < RETRY_BACKOFF_S[0] + 2 * QUICK_TIMEOUT_S + MARGIN_S


async def test_undeclared_operation_raises_unknown_operation_without_a_request(
    server: BackOfficeServer, connect: Connect
) -> None:
    with pytest.raises(UnknownOperation):
        await connect(server.url).call("delete_everything", {}, idempotency_key="k")
    assert server.requests == []


async def test_failures_log_one_warning_per_attempt_without_personal_data(
    server: BackOfficeServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.backoffice.http")
    server.fail(BY_PHONE_PATH, Failure.STATUS_500)
    with pytest.raises(BackOfficeUnavailable) as caught:
        await connect(server.url, retries=1).customer_by_phone("+393331234567")
    records = [r for r in caplog.records if r.name == "bot.backoffice.http"]
    assert [(r.__dict__["operation"], r.__dict__["status"]) for r in records] == [
        (CUSTOMER_BY_PHONE, 500),
        (CUSTOMER_BY_PHONE, 500),
    ]
    assert [r.__dict__["attempt"] for r in records] == [1, 2]
    assert [r.__dict__["will_retry"] for r in records] == [True, False]
    for text in [*(r.getMessage() for r in records), str(caught.value)]:
        assert "3331234567" not in text and "Maria" not in text


# --- lifecycle --------------------------------------------------------------------------------


async def test_close_leaves_no_unclosed_session_or_connection(
    server: BackOfficeServer, resource_warnings: list[warnings.WarningMessage]
) -> None:
    back_office = HttpBackOffice(server.url, OPERATIONS, timeout_s=QUICK_TIMEOUT_S)
    await back_office.find_customer("CL100001")
    await back_office.close()
    del back_office
    gc.collect()
    assert _unclosed(resource_warnings) == []


async def test_leak_check_sees_a_connector_that_was_not_closed(
    server: BackOfficeServer, resource_warnings: list[warnings.WarningMessage]
) -> None:
    """The check above would pass vacuously if aiohttp stopped warning: make sure it warns."""
    leaked = HttpBackOffice(server.url, OPERATIONS, timeout_s=QUICK_TIMEOUT_S)
    await leaked.find_customer("CL100001")
    del leaked
    gc.collect()
    assert any("Unclosed client session" in m for m in _unclosed(resource_warnings))


async def test_call_after_close_fails_without_opening_a_session(
    server: BackOfficeServer, resource_warnings: list[warnings.WarningMessage]
) -> None:
    back_office = HttpBackOffice(server.url, OPERATIONS)
    await back_office.close()
    with pytest.raises(BackOfficeUnavailable, match="closed"):
        await back_office.find_customer("CL100001")
    del back_office
    gc.collect()
    assert server.requests == [] and _unclosed(resource_warnings) == []
