"""``HttpBackOffice``: the ``BackOffice`` seam over the JSON contract (``docs/back-office-api.md``).

Every call is one ``POST`` with a JSON body; the company's answer is checked against the contract
before a flow sees it. A read (the customer look-ups, the identity check, an operation declared
``read_only``) is tried again after a time-out, a refused connection or a 5xx, at most ``retries``
more times; a write is sent once, with its idempotency key, so that the company can recognise it
if it is ever sent again. A call therefore takes at most
``timeout_s * (1 + retries) + sum(RETRY_BACKOFF_S[:retries])`` for a read and ``timeout_s`` for a
write. Every other failure (a 4xx, invalid JSON, an answer of the wrong shape or too large) is
final at once: asking again would get the same answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp

from bot.backoffice.protocol import (
    CUSTOMER_BY_PHONE,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    FIND_CUSTOMER,
    VERIFY_IDENTITY,
    BackOfficeUnavailable,
    CustomerRecord,
    OperationSpec,
    UnknownOperation,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

FIND_PATH: Final = "/customers/find"
BY_PHONE_PATH: Final = "/customers/by-phone"
VERIFY_PATH: Final = "/identity/verify"
OPERATIONS_PATH: Final = "/operations/"

MAX_ANSWER_BYTES: Final = 1024 * 1024
# a larger answer is parsed in the default executor: ~1 ms of json.loads per 100 KiB
INLINE_PARSE_BYTES: Final = 64 * 1024
# the pause before the first and the second retry of a read; later retries use the last one
RETRY_BACKOFF_S: Final = (0.2, 0.5)
# flows wait on these, so a burst of turns queues here rather than opening a socket each
MAX_CONNECTIONS: Final = 32


class _AttemptFailed(Exception):
    """One request that did not give a usable answer; ``retryable`` for reads only."""

    def __init__(self, why: str, *, status: int | None = None, retryable: bool) -> None:
        super().__init__(why)
        self.why = why
        self.status = status
        self.retryable = retryable


class HttpBackOffice:
    """The company's back office over HTTP; ``close()`` releases its connections."""

    def __init__(
        self,
        url: str,
        operations: Mapping[str, OperationSpec],
        *,
        token: str = "",
        hmac_secret: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the back-office URL must start with http:// or https://")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        for name, spec in operations.items():
            if spec.name != name:
                raise ValueError(f"operation {name!r} is declared with the name {spec.name!r}")
        self.url = url.rstrip("/")
        self.operations = dict(operations)
        self.timeout_s = timeout_s
        self.retries = retries
        self._token = token
        self._hmac_secret = hmac_secret.encode("utf-8")
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def find_customer(self, customer_id: str) -> CustomerRecord | None:
        body = {"customer_id": customer_id}
        return await self._post(FIND_CUSTOMER, FIND_PATH, body, _customer_answer)

    async def customer_by_phone(self, phone: str) -> CustomerRecord | None:
        return await self._post(
            CUSTOMER_BY_PHONE, BY_PHONE_PATH, {"phone": phone}, _customer_answer
        )

    async def verify_identity(
        self, customer_id: str, factors: Mapping[str, str]
    ) -> CustomerRecord | None:
        body = {"customer_id": customer_id, "factors": dict(factors)}
        return await self._post(VERIFY_IDENTITY, VERIFY_PATH, body, _verify_answer)

    async def call(
        self, operation: str, args: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        spec = self.operations.get(operation)
        if spec is None:
            raise UnknownOperation(f"the pack does not declare the operation {operation!r}")
        return await self._post(
            operation,
            OPERATIONS_PATH + quote(operation, safe=""),
            {"args": dict(args)},
            _operation_answer,
            read_only=spec.read_only,
            idempotency_key=idempotency_key,
        )

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            # let the connector's transports close before the loop moves on
            await asyncio.sleep(0)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            )
        return self._session

    async def _post(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        read: Callable[[dict[str, Any]], _T],
        *,
        read_only: bool = True,
        idempotency_key: str | None = None,
    ) -> _T:
        """The answer as ``read`` makes it, after at most ``retries`` retries for a read."""
        raw = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        request_id = uuid.uuid4().hex  # the same on every attempt: one call, one id
        attempts = 1 + self.retries if read_only else 1
        for attempt in range(1, attempts + 1):
            headers = self._headers(raw, request_id, idempotency_key)
            try:
                return await self._attempt(path, raw, headers, read)
            except _AttemptFailed as failure:
                again = failure.retryable and attempt < attempts
                log.warning(
                    "back-office request failed",
                    extra={
                        "operation": operation,
                        "status": failure.status,
                        "attempt": attempt,
                        "reason": failure.why,
                        "will_retry": again,
                        "request_id": request_id,
                    },
                )
                if not again:
                    raise BackOfficeUnavailable(operation, failure.why) from None
            await asyncio.sleep(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S)) - 1])
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _headers(self, raw: bytes, request_id: str, idempotency_key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._hmac_secret:
            timestamp = str(int(time.time()))
            digest = hmac.new(self._hmac_secret, timestamp.encode() + b"." + raw, hashlib.sha256)
            headers["X-Triage-Timestamp"] = timestamp
            headers["X-Triage-Signature"] = "sha256=" + digest.hexdigest()
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    async def _attempt(
        self, path: str, raw: bytes, headers: dict[str, str], read: Callable[[dict[str, Any]], _T]
    ) -> _T:
        if self._closed:
            raise _AttemptFailed("the connector is closed", retryable=False)
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._http().post(
                    self.url + path, data=raw, headers=headers, allow_redirects=False
                ) as resp:
                    if resp.status >= 500:
                        raise _AttemptFailed(
                            f"HTTP {resp.status}", status=resp.status, retryable=True
                        )
                    if not 200 <= resp.status < 300:
                        raise _AttemptFailed(
                            f"HTTP {resp.status}", status=resp.status, retryable=False
                        )
                    content = await _read_bounded(resp)
                    status = resp.status
        except TimeoutError:
            raise _AttemptFailed(f"no answer in {self.timeout_s:g} s", retryable=True) from None
        except aiohttp.ClientError as exc:
            # the text of a connection error names only our host and port; keep it short anyway
            why = f"connection failed ({type(exc).__name__})"
            raise _AttemptFailed(why, retryable=True) from None
        answer = await _json_object(content, status)
        try:
            return read(answer)
        except ValueError as exc:  # the message names the field, never its value
            raise _AttemptFailed(str(exc), status=status, retryable=False) from None


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length > MAX_ANSWER_BYTES:
        raise _AttemptFailed("answer over 1 MiB", status=resp.status, retryable=False)
    content = bytearray()
    async for chunk in resp.content.iter_any():
        content += chunk
        if len(content) > MAX_ANSWER_BYTES:
            raise _AttemptFailed("answer over 1 MiB", status=resp.status, retryable=False)
    return bytes(content)


async def _json_object(content: bytes, status: int) -> dict[str, Any]:
    try:
        if len(content) > INLINE_PARSE_BYTES:
            data = await asyncio.get_running_loop().run_in_executor(None, json.loads, content)
        else:
            data = json.loads(content)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _AttemptFailed("invalid JSON", status=status, retryable=False) from None
    if not isinstance(data, dict):
        raise _AttemptFailed("the answer is not a JSON object", status=status, retryable=False)
    return data


def _customer_answer(answer: dict[str, Any]) -> CustomerRecord | None:
    if "customer" not in answer:
        raise ValueError("customer is missing")
    return None if answer["customer"] is None else CustomerRecord.from_dict(answer["customer"])


def _verify_answer(answer: dict[str, Any]) -> CustomerRecord | None:
    verified = answer.get("verified")
    if not isinstance(verified, bool):
        raise ValueError("verified must be true or false")
    return CustomerRecord.from_dict(answer.get("customer")) if verified else None


def _operation_answer(answer: dict[str, Any]) -> dict[str, Any]:
    result = answer.get("result")
    if not isinstance(result, dict):
        raise ValueError("result must be an object")
    return result
