"""A real HTTP back office that implements ``docs/back-office-api.md``, for tests.

    server = BackOfficeServer(
        customers=[CustomerRecord("C1", name="Ada", phone="+39333...")],
        factors={"C1": {"postcode": "20123"}},
        operations={"open_ticket": lambda args: {"ticket": "TK1"}},  # or an async function
        token="t0ken", hmac_secret="s3cret",   # checked when set: 401 otherwise
    )
    async with server:                          # listens on 127.0.0.1, a free port
        back_office = HttpBackOffice(server.url, ...)
        server.fail(FIND_PATH, Failure.HANG)    # every request to that path hangs
        server.fail_then_ok(VERIFY_PATH, 1)     # one 500, then good answers
        server.reply(FIND_PATH, {"customer": 1})  # this JSON instead of the contract's answer
        server.requests                         # every request received, rejected ones too

A repeated ``Idempotency-Key`` for the same operation gets the first result again without running
the handler, as the contract asks of a company. A request that is not the contract's shape gets a
400, an undeclared operation a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy

from bot.backoffice.protocol import CustomerRecord

Handler = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]

# spelled out here, not imported from the client, so that the tests hold the client to the document
FIND_PATH: Final = "/customers/find"
BY_PHONE_PATH: Final = "/customers/by-phone"
VERIFY_PATH: Final = "/identity/verify"
OPERATIONS_PATH: Final = "/operations/"

HANG_S: Final = 60.0  # far beyond any client's timeout; close() releases hanging requests
MAX_SIGNATURE_AGE_S: Final = 300
# wrong for every endpoint: customer neither object nor null, verified no bool, result no object
WRONG_SHAPE_BODY: Final = {"customer": ["not", "an", "object"], "verified": "yes", "result": 42}
TOO_LARGE_BYTES: Final = 1024 * 1024 + 64 * 1024


class Failure(enum.Enum):
    HANG = "hang"  # no answer until the server closes
    STATUS_500 = "status_500"
    INVALID_JSON = "invalid_json"  # 200 with a body that is not JSON
    WRONG_SHAPE = "wrong_shape"  # 200 with JSON that is not the contract's shape
    TOO_LARGE = "too_large"  # 200 with a JSON body over 1 MiB


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    # header names in any case, as HTTP has them
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Failing:
    failure: Failure
    remaining: int | None  # None: for ever


class BackOfficeServer:
    def __init__(
        self,
        *,
        customers: Iterable[CustomerRecord] = (),
        factors: Mapping[str, Mapping[str, str]] | None = None,
        operations: Mapping[str, Handler] | None = None,
        token: str = "",
        hmac_secret: str = "",
    ) -> None:
        self.customers = {c.id: c for c in customers}
        self.factors = {cid: dict(given) for cid, given in (factors or {}).items()}
        self.operations = dict(operations or {})
        self.token = token
        self.hmac_secret = hmac_secret
        self.requests: list[ReceivedRequest] = []
        self._failing: dict[str, _Failing] = {}
        self._replies: dict[str, tuple[int, Any]] = {}
        self._results: dict[tuple[str, str], dict[str, Any]] = {}
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_post(FIND_PATH, self._find)
        app.router.add_post(BY_PHONE_PATH, self._by_phone)
        app.router.add_post(VERIFY_PATH, self._verify)
        app.router.add_post(OPERATIONS_PATH + "{name}", self._operation)
        self._server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self._server.make_url("")).rstrip("/")

    def fail(self, path: str, failure: Failure, *, times: int | None = None) -> None:
        """Answer requests to ``path`` with ``failure``: ``times`` times, or always if None."""
        self._failing[path] = _Failing(failure, times)

    def fail_then_ok(self, path: str, times: int, failure: Failure = Failure.STATUS_500) -> None:
        self.fail(path, failure, times=times)

    def reply(self, path: str, body: Any, *, status: int = 200) -> None:
        """Answer every request to ``path`` with this JSON, whatever it asks."""
        self._replies[path] = (status, body)

    def heal(self) -> None:
        """Answer every path by the contract again."""
        self._failing.clear()
        self._replies.clear()

    def requests_to(self, path: str) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.path == path]

    async def start(self) -> None:
        await self._server.start_server()

    async def close(self) -> None:
        self._released.set()
        await self._server.close()

    async def __aenter__(self) -> BackOfficeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the contract -------------------------------------------------------------------------

    async def _find(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        if isinstance(body, web.StreamResponse):
            return body
        customer_id = body.get("customer_id")
        if not isinstance(customer_id, str):
            return _error(400, "customer_id must be a string")
        return _customer_answer(self.customers.get(customer_id))

    async def _by_phone(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        if isinstance(body, web.StreamResponse):
            return body
        phone = body.get("phone")
        if not isinstance(phone, str):
            return _error(400, "phone must be a string")
        found = [c for c in self.customers.values() if c.phone == phone]
        return _customer_answer(found[0] if len(found) == 1 else None)

    async def _verify(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        if isinstance(body, web.StreamResponse):
            return body
        customer_id, given = body.get("customer_id"), body.get("factors")
        if not isinstance(customer_id, str) or not isinstance(given, dict):
            return _error(400, "customer_id must be a string and factors an object")
        known = self.factors.get(customer_id, {})
        customer = self.customers.get(customer_id)
        if customer is None or not given or any(known.get(k) != v for k, v in given.items()):
            return web.json_response({"verified": False})
        return web.json_response({"verified": True, "customer": customer.as_dict()})

    async def _operation(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        if isinstance(body, web.StreamResponse):
            return body
        name = request.match_info["name"]
        handler = self.operations.get(name)
        if handler is None:
            return _error(404, "unknown operation")
        args, key = body.get("args"), request.headers.get("Idempotency-Key", "")
        if not isinstance(args, dict) or not key:
            return _error(400, "args must be an object and Idempotency-Key is required")
        if (name, key) not in self._results:
            result = handler(args)
            self._results[(name, key)] = await result if inspect.isawaitable(result) else result
        return web.json_response({"result": self._results[(name, key)]})

    async def _receive(self, request: web.Request) -> dict[str, Any] | web.StreamResponse:
        """The request's JSON object, or the answer to give instead (a failure, a 401, a 400)."""
        raw = await request.read()
        self.requests.append(
            ReceivedRequest(request.path, CIMultiDictProxy(CIMultiDict(request.headers)), raw)
        )
        if not self._authorised(request, raw):
            return _error(401, "unauthorised")
        failing = self._failing.get(request.path)
        if failing is not None and failing.remaining != 0:
            if failing.remaining is not None:
                failing.remaining -= 1
            return await self._failure_answer(request, failing.failure)
        if request.path in self._replies:
            status, reply = self._replies[request.path]
            return web.json_response(reply, status=status)
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        return body

    def _authorised(self, request: web.Request, raw: bytes) -> bool:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return False
        if not self.hmac_secret:
            return True
        timestamp = request.headers.get("X-Triage-Timestamp", "")
        signature = request.headers.get("X-Triage-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SIGNATURE_AGE_S:
            return False
        expected = hmac.new(
            self.hmac_secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(signature, "sha256=" + expected)

    async def _failure_answer(self, request: web.Request, failure: Failure) -> web.StreamResponse:
        if failure is Failure.HANG:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), HANG_S)
            return _error(503, "released")
        if failure is Failure.STATUS_500:
            return _error(500, "internal error")
        if failure is Failure.INVALID_JSON:
            return web.Response(text='{"customer": ', content_type="application/json")
        if failure is Failure.WRONG_SHAPE:
            return web.json_response(WRONG_SHAPE_BODY)
        return await _too_large(request)


async def _too_large(request: web.Request) -> web.StreamResponse:
    """Valid JSON over 1 MiB, chunked: no Content-Length warns the client in advance."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b"x" * 64 * 1024
    try:
        await response.write(b'{"customer": null, "padding": "')
        for _ in range(TOO_LARGE_BYTES // len(chunk) + 1):
            await response.write(chunk)
        await response.write(b'"}')
        await response.write_eof()
    except ConnectionError:
        pass  # the client stopped reading at 1 MiB, as it should
    return response


def _customer_answer(customer: CustomerRecord | None) -> web.Response:
    return web.json_response({"customer": customer.as_dict() if customer else None})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
