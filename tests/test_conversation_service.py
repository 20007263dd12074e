"""``ConversationService`` over the real store and routing table, with the NLU seam faked;
``RasaHttpClient`` against tiny real servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from bot.config.routing import Route, RouteKind, load_routing
from bot.conversation.service import SYSTEM_TEXTS, ConversationService
from bot.errors import NluTimeout, NluUnavailable
from bot.nlu.client import BotReply, Entity, TurnOutput
from bot.nlu.fake import FakeNluClient
from bot.nlu.rasa_http import RasaHttpClient
from bot.store.sql.store import SqlStore
from tests.conftest import ENERGY_PACK

ROUTING = load_routing(ENERGY_PACK / "routing.yml")
MAX_MESSAGE_CHARS = 2000
SLOW_TURN_TIMEOUT_S = 5.0


def new_conversation_id() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def make_service(store: SqlStore, nlu: FakeNluClient) -> ConversationService:
    return ConversationService(store, nlu, ROUTING, MAX_MESSAGE_CHARS)


async def stored(store: SqlStore, conversation_id: str) -> list[tuple[str, str, str]]:
    return [
        (m.sender, m.text, m.status) for m in await store.conversations.messages(conversation_id)
    ]


class StoreWatchingNlu(FakeNluClient):
    """Records, at every turn, what the store already held for the conversation."""

    def __init__(self, store: SqlStore) -> None:
        super().__init__()
        self.store = store
        self.seen: list[list[tuple[str, str, str]]] = []

    async def turn(
        self,
        conversation_id: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        message_key: str | None = None,
    ) -> TurnOutput:
        self.seen.append(await stored(self.store, conversation_id))
        return await super().turn(conversation_id, text, metadata, message_key=message_key)


class SlotCountingNlu(FakeNluClient):
    """Records every ``set_slots`` call and the metadata of every turn."""

    def __init__(self) -> None:
        super().__init__()
        self.slot_calls: list[tuple[str, dict[str, Any]]] = []
        self.metadata: list[dict[str, Any] | None] = []

    async def turn(
        self,
        conversation_id: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        message_key: str | None = None,
    ) -> TurnOutput:
        self.metadata.append(metadata)
        return await super().turn(conversation_id, text, metadata, message_key=message_key)

    async def set_slots(self, conversation_id: str, slots: dict[str, Any]) -> None:
        await super().set_slots(conversation_id, slots)
        self.slot_calls.append((conversation_id, dict(slots)))


class DelayedNlu(FakeNluClient):
    """Each text's turn sleeps for its own delay before it is recorded."""

    def __init__(self, delays_s: dict[str, float]) -> None:
        super().__init__()
        self.delays_s = delays_s

    async def turn(
        self,
        conversation_id: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        message_key: str | None = None,
    ) -> TurnOutput:
        await asyncio.sleep(self.delays_s[text])
        return await super().turn(conversation_id, text, metadata, message_key=message_key)


class GatedNlu(FakeNluClient):
    """Turns of the ``gated`` conversation wait until ``gate`` is set."""

    def __init__(self, gated: str) -> None:
        super().__init__()
        self.gated = gated
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def turn(
        self,
        conversation_id: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        message_key: str | None = None,
    ) -> TurnOutput:
        if conversation_id == self.gated:
            self.entered.set()
            await self.gate.wait()
        return await super().turn(conversation_id, text, metadata, message_key=message_key)


class TimingOutNlu(FakeNluClient):
    async def turn(
        self,
        conversation_id: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        *,
        message_key: str | None = None,
    ) -> TurnOutput:
        raise NluTimeout("Rasa did not answer in time")


# normal processing


async def test_message_is_stored_as_processed_with_intent_and_replies_after_it(
    store: SqlStore,
) -> None:
    fake = FakeNluClient(lambda text: ("check_balance", ["Certo.", "Mi dà il codice cliente?"]))
    service = make_service(store, fake)
    cid = new_conversation_id()

    result = await service.handle(cid, "vorrei sapere quanto devo pagare", channel="chat")

    rows = await store.conversations.messages(cid)
    assert [(m.sender, m.text, m.status) for m in rows] == [
        ("user", "vorrei sapere quanto devo pagare", "processed"),
        ("bot", "Certo.", "sent"),
        ("bot", "Mi dà il codice cliente?", "sent"),
    ]
    assert rows[0].intent == "check_balance"
    assert rows[0].confidence == pytest.approx(0.9)
    assert rows[0].id < rows[1].id < rows[2].id
    assert result.message_id == rows[0].id
    assert result.error is None
    assert result.intent == "check_balance"
    assert result.route == Route(RouteKind.FLOW, "check_balance")
    assert [r.text for r in result.replies] == ["Certo.", "Mi dà il codice cliente?"]


async def test_message_is_stored_as_received_before_nlu_sees_it(store: SqlStore) -> None:
    fake = StoreWatchingNlu(store)
    service = make_service(store, fake)
    cid = new_conversation_id()

    await service.handle(cid, "buongiorno", channel="chat")
    await service.handle(cid, "vorrei pagare la bolletta", channel="chat")

    assert fake.seen[0] == [("user", "buongiorno", "received")]
    assert fake.seen[1] == [
        ("user", "buongiorno", "processed"),
        ("bot", "echo: buongiorno", "sent"),
        ("user", "vorrei pagare la bolletta", "received"),
    ]


# input that cannot be processed


@pytest.mark.parametrize("text", ["", "   ", " \n\t ", "\x07\u200b"])
async def test_empty_message_is_rejected_politely_without_calling_nlu(
    store: SqlStore, text: str
) -> None:
    fake = FakeNluClient()
    service = make_service(store, fake)
    cid = new_conversation_id()

    result = await service.handle(cid, text, channel="chat")

    assert result.error == "empty"
    assert result.replies == (BotReply(SYSTEM_TEXTS["empty"]["it"]),)
    assert await stored(store, cid) == [
        ("user", text, "rejected"),
        ("system", SYSTEM_TEXTS["empty"]["it"], "sent"),
    ]
    assert fake.turns == []
    assert fake.slots == {}


async def test_too_long_message_is_rejected_and_stored_in_full(store: SqlStore) -> None:
    fake = FakeNluClient()
    service = make_service(store, fake)
    cid = new_conversation_id()
    text = ("la mia bolletta è sbagliata " * 400)[:10_000]

    result = await service.handle(cid, text, channel="chat")

    assert result.error == "too_long"
    assert str(MAX_MESSAGE_CHARS) in result.replies[0].text
    rows = await store.conversations.messages(cid)
    assert rows[0].sender == "user"
    assert rows[0].status == "rejected"
    assert len(rows[0].text) == 10_000
    assert rows[0].text == text
    assert fake.turns == []
    assert fake.slots == {}


async def test_message_at_the_length_limit_is_processed(store: SqlStore) -> None:
    fake = FakeNluClient()
    service = make_service(store, fake)
    cid = new_conversation_id()
    text = "x" * MAX_MESSAGE_CHARS

    result = await service.handle(cid, text, channel="chat")

    assert result.error is None
    assert fake.turns == [(cid, text)]


async def test_control_characters_are_removed_before_nlu_and_raw_text_is_stored(
    store: SqlStore,
) -> None:
    fake = FakeNluClient()
    service = make_service(store, fake)
    cid = new_conversation_id()
    raw = "\x01ciao\x07 come\tva\u200b\x1b"

    result = await service.handle(cid, raw, channel="chat")

    assert result.error is None
    assert fake.turns == [(cid, "ciao come va")]
    rows = await store.conversations.messages(cid)
    assert rows[0].text == raw
    assert rows[0].status == "processed"


async def test_nul_byte_in_message_is_cleaned_before_nlu_and_message_is_kept(
    store: SqlStore,
) -> None:
    fake = FakeNluClient()
    service = make_service(store, fake)
    cid = new_conversation_id()
    raw = "\x00\x01ciao\x07 come va\u200b"

    result = await service.handle(cid, raw, channel="chat")

    assert result.error is None
    assert fake.turns == [(cid, "ciao come va")]
    rows = await store.conversations.messages(cid)
    # PostgreSQL text cannot hold NUL: U+FFFD in its place is the only change allowed.
    assert rows[0].text in (raw, raw.replace("\x00", "\ufffd"))
    assert rows[0].status == "processed"


# NLU unavailable


@pytest.mark.parametrize(
    ("first", "language"),
    [("I would like to pay my bill", "en"), ("vorrei pagare la bolletta", "it")],
)
async def test_nlu_down_gives_polite_reply_and_conversation_continues_when_back(
    store: SqlStore, first: str, language: str
) -> None:
    fake = FakeNluClient()
    service = make_service(store, fake)
    cid = new_conversation_id()

    fake.down = True
    failed = await service.handle(cid, first, channel="chat")
    fake.down = False
    recovered = await service.handle(cid, "CL100001", channel="chat")

    unavailable = SYSTEM_TEXTS["nlu_unavailable"][language]
    assert failed.error == "nlu_unavailable"
    assert failed.language == language
    assert failed.replies == (BotReply(unavailable),)
    assert recovered.error is None
    assert recovered.language == language
    assert fake.turns == [(cid, "CL100001")]
    assert fake.slots[cid] == {"language": language}
    assert await stored(store, cid) == [
        ("user", first, "failed"),
        ("system", unavailable, "sent"),
        ("user", "CL100001", "processed"),
        ("bot", "echo: CL100001", "sent"),
    ]


async def test_nlu_timeout_is_answered_like_nlu_down(store: SqlStore) -> None:
    service = make_service(store, TimingOutNlu())
    cid = new_conversation_id()

    result = await service.handle(cid, "vorrei pagare la bolletta", channel="phone")

    assert result.error == "nlu_unavailable"
    assert (await store.conversations.messages(cid))[0].status == "failed"


# language


async def test_language_detected_from_first_message_is_kept_for_the_next(
    store: SqlStore,
) -> None:
    fake = SlotCountingNlu()
    service = make_service(store, fake)
    cid = new_conversation_id()

    first = await service.handle(cid, "I would like to pay my bill", channel="chat")
    second = await service.handle(cid, "vorrei pagare la bolletta di marzo", channel="chat")

    assert first.language == "en"
    assert second.language == "en"
    assert (await store.conversations.get_conversation(cid)).language == "en"
    assert fake.metadata == [{"language": "en", "channel": "chat"}] * 2
    assert fake.slots[cid] == {"language": "en"}


async def test_explicit_language_wins_over_detection(store: SqlStore) -> None:
    fake = FakeNluClient()
    service = make_service(store, fake)
    cid = new_conversation_id()

    result = await service.handle(cid, "I would like to pay my bill", channel="chat", language="it")

    assert result.language == "it"
    assert (await store.conversations.get_conversation(cid)).language == "it"
    assert fake.slots[cid] == {"language": "it"}


async def test_language_slot_is_set_once_per_conversation(store: SqlStore) -> None:
    fake = SlotCountingNlu()
    service = make_service(store, fake)
    first, second = new_conversation_id(), new_conversation_id()

    for text in ("buongiorno", "vorrei pagare la bolletta", "grazie"):
        await service.handle(first, text, channel="chat")
    await service.handle(second, "hello, I need help", channel="phone")

    assert fake.slots == {first: {"language": "it"}, second: {"language": "en"}}
    # the turn's metadata carries the language to Rasa's session start: no extra calls
    assert fake.slot_calls == []
    assert fake.metadata[-1] == {"language": "en", "channel": "phone"}


async def test_language_is_fixed_by_first_message_with_evidence(store: SqlStore) -> None:
    fake = SlotCountingNlu()
    service = make_service(store, fake)
    cid = new_conversation_id()

    no_evidence = await service.handle(cid, "CL100001", channel="chat")
    assert (await store.conversations.get_conversation(cid)).language is None
    english = await service.handle(cid, "I would like to pay my bill", channel="chat")
    italian = await service.handle(cid, "vorrei pagare la bolletta", channel="chat")

    assert no_evidence.language == "it"  # the default until the customer shows a language
    assert english.language == "en"
    assert italian.language == "en"
    assert fake.slot_calls == [(cid, {"language": "en"})]
    assert fake.slots[cid] == {"language": "en"}


async def test_language_set_while_nlu_was_down_reaches_nlu_at_session_start(
    store: SqlStore,
) -> None:
    fake = SlotCountingNlu()
    service = make_service(store, fake)
    cid = new_conversation_id()

    fake.down = True
    await service.handle(cid, "CL100001", channel="chat")
    await service.handle(cid, "I would like to pay my bill", channel="chat")
    fake.down = False
    result = await service.handle(cid, "and check my meter", channel="chat")

    assert result.error is None
    assert result.language == "en"
    assert fake.slots[cid] == {"language": "en"}


# ordering and concurrency


@pytest.mark.parametrize("count", [2, 10])
async def test_concurrent_messages_of_one_conversation_are_processed_in_arrival_order(
    store: SqlStore, count: int
) -> None:
    texts = [f"messaggio numero {i}" for i in range(count)]
    # Later messages are faster: without per-conversation ordering they would overtake.
    fake = DelayedNlu({t: 0.02 * (count - i) for i, t in enumerate(texts)})
    service = make_service(store, fake)
    cid = new_conversation_id()

    results = await asyncio.gather(*(service.handle(cid, t, channel="chat") for t in texts))

    assert fake.turns == [(cid, t) for t in texts]
    ids = [r.message_id for r in results]
    assert ids == sorted(ids)
    assert len(set(ids)) == count
    user_rows = [m for m in await store.conversations.messages(cid) if m.sender == "user"]
    assert [m.text for m in user_rows] == texts
    assert [m.id for m in user_rows] == ids


async def test_slow_conversation_does_not_hold_up_another(store: SqlStore) -> None:
    slow_id, fast_id = new_conversation_id(), new_conversation_id()
    fake = GatedNlu(gated=slow_id)
    service = make_service(store, fake)

    slow = asyncio.create_task(service.handle(slow_id, "vorrei pagare", channel="chat"))
    try:
        await asyncio.wait_for(fake.entered.wait(), SLOW_TURN_TIMEOUT_S)
        fast = await asyncio.wait_for(
            service.handle(fast_id, "buongiorno", channel="chat"), SLOW_TURN_TIMEOUT_S
        )
        assert fast.error is None
        assert not slow.done()
    finally:
        fake.gate.set()
        await slow
    assert fake.turns == [(fast_id, "buongiorno"), (slow_id, "vorrei pagare")]


# RasaHttpClient over real sockets


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., RasaHttpClient]]:
    made: list[RasaHttpClient] = []

    def make(base_url: str, timeout_s: float = 5.0) -> RasaHttpClient:
        client = RasaHttpClient(base_url, timeout_s=timeout_s)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_rasa_client_on_closed_port_raises_unavailable_and_is_not_ready(
    make_client: Callable[..., RasaHttpClient],
) -> None:
    client = make_client(f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(NluUnavailable) as parsed:
        await client.parse("ciao")
    with pytest.raises(NluUnavailable):
        await client.turn("c1", "ciao")
    assert not isinstance(parsed.value, NluTimeout)
    assert await client.is_ready() is False


async def test_rasa_client_raises_timeout_when_server_never_answers(
    make_client: Callable[..., RasaHttpClient],
) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def accept_and_stay_silent(
        _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}", timeout_s=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(NluTimeout):
            await client.turn("c1", "ciao")
        with pytest.raises(NluTimeout):
            await client.parse("ciao")
        assert time.monotonic() - started < 3.0
        assert await client.is_ready() is False
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def rasa_app(handlers: dict[tuple[str, str], Handler]) -> web.Application:
    app = web.Application()
    for (method, path), handler in handlers.items():
        app.router.add_route(method, path, handler)
    return app


async def test_rasa_client_names_the_status_of_a_server_error(
    make_client: Callable[..., RasaHttpClient],
) -> None:
    async def crash(_request: web.Request) -> web.Response:
        return web.Response(status=500, text="internal error")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", crash)
    async with TestServer(app) as server:
        client = make_client(str(server.make_url("/")))
        with pytest.raises(NluUnavailable, match="500"):
            await client.turn("c1", "ciao")
        with pytest.raises(NluUnavailable, match="500"):
            await client.parse("ciao")
        assert await client.is_ready() is False


async def test_rasa_client_rejects_a_turn_answer_without_messages(
    make_client: Callable[..., RasaHttpClient],
) -> None:
    answers: list[Any] = [
        [{"text": "a list, as Rasa's REST channel answers"}],
        {"error": "something went wrong"},
        {"messages": [], "latest_message": "not an object"},
        {"messages": [], "slots": ["not", "an", "object"]},
    ]

    async def webhook(_request: web.Request) -> web.Response:
        return web.json_response(answers.pop(0))

    app = rasa_app({("POST", "/webhooks/triage/webhook"): webhook})
    async with TestServer(app) as server:
        client = make_client(str(server.make_url("/")))
        with pytest.raises(NluUnavailable, match="list of messages"):
            await client.turn("c1", "ciao")
        with pytest.raises(NluUnavailable, match="list of messages"):
            await client.turn("c1", "ciao")
        with pytest.raises(NluUnavailable, match="malformed"):
            await client.turn("c1", "ciao")
        with pytest.raises(NluUnavailable, match="malformed"):
            await client.turn("c1", "ciao")


class FakeRasa:
    """Just enough of Rasa's HTTP API (and the project's channel) to answer one turn, recording
    what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    async def _record(self, request: web.Request) -> None:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path_qs, body))

    async def webhook(self, request: web.Request) -> web.Response:
        await self._record(request)
        messages = [
            {
                "recipient_id": "web-42",
                "text": "Vuole la bolletta di marzo?",
                "buttons": [
                    {"title": "Sì", "payload": "/affirm"},
                    {"title": "No", "payload": "/deny"},
                ],
            },
            {"recipient_id": "web-42", "image": "https://example.invalid/x.png"},
            {"recipient_id": "web-42", "text": "Oppure mi dica il mese."},
        ]
        return web.json_response(
            {
                "messages": messages,
                "latest_message": {
                    "text": "codice CL100001",
                    "intent": {"name": "check_balance", "confidence": 0.87},
                    "entities": [
                        {
                            "entity": "customer_code",
                            "value": "CL100001",
                            "start": 7,
                            "end": 15,
                            "extractor": "RegexEntityExtractor",
                        }
                    ],
                    "intent_ranking": [
                        {"name": "check_balance", "confidence": 0.87},
                        {"name": "billing_problem", "confidence": 0.08},
                    ],
                },
                "slots": {"language": "it", "customer_code": "CL100001"},
                "active_loop": "check_balance_form",
            }
        )

    async def events(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"sender_id": request.match_info["sender"]})

    async def parse(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(
            {"text": "ciao", "intent": {"name": "greet", "confidence": 0.99}, "entities": []}
        )

    async def status(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"model_file": "nlu-abc.tar.gz", "num_active_training_jobs": 0})

    def app(self) -> web.Application:
        return rasa_app(
            {
                ("POST", "/webhooks/triage/webhook"): self.webhook,
                ("POST", "/conversations/{sender}/tracker/events"): self.events,
                ("POST", "/model/parse"): self.parse,
                ("GET", "/status"): self.status,
            }
        )


async def test_rasa_client_turn_parses_replies_buttons_intent_entities_and_slots(
    make_client: Callable[..., RasaHttpClient],
) -> None:
    rasa = FakeRasa()
    async with TestServer(rasa.app()) as server:
        client = make_client(str(server.make_url("/")))
        output = await client.turn("web-42", "codice CL100001", {"language": "it"})

    assert output.replies == (
        BotReply("Vuole la bolletta di marzo?", (("Sì", "/affirm"), ("No", "/deny"))),
        BotReply("Oppure mi dica il mese."),
    )
    assert output.parse.text == "codice CL100001"
    assert output.parse.intent == "check_balance"
    assert output.parse.confidence == pytest.approx(0.87)
    assert output.parse.entities == (
        Entity("customer_code", "CL100001", 7, 15, "RegexEntityExtractor"),
    )
    assert output.parse.ranking == (("check_balance", 0.87), ("billing_problem", 0.08))
    assert output.slots == {"language": "it", "customer_code": "CL100001"}
    assert output.active_loop == "check_balance_form"
    assert rasa.requests[0] == (
        "POST",
        "/webhooks/triage/webhook",
        {"sender": "web-42", "message": "codice CL100001", "metadata": {"language": "it"}},
    )
    assert len(rasa.requests) == 1  # one request per turn


async def test_rasa_client_set_slots_posts_slot_events(
    make_client: Callable[..., RasaHttpClient],
) -> None:
    rasa = FakeRasa()
    async with TestServer(rasa.app()) as server:
        client = make_client(str(server.make_url("/")))
        await client.set_slots("web-42", {"language": "en", "verified": True})

    assert rasa.requests == [
        (
            "POST",
            "/conversations/web-42/tracker/events?include_events=NONE",
            [
                {"event": "slot", "name": "language", "value": "en"},
                {"event": "slot", "name": "verified", "value": True},
            ],
        )
    ]


async def test_rasa_client_parse_and_readiness_against_a_loaded_model(
    make_client: Callable[..., RasaHttpClient],
) -> None:
    rasa = FakeRasa()
    async with TestServer(rasa.app()) as server:
        client = make_client(str(server.make_url("/")))
        parsed = await client.parse("ciao")
        ready = await client.is_ready()

    assert parsed.intent == "greet"
    assert parsed.confidence == pytest.approx(0.99)
    assert ready is True
    assert rasa.requests[0] == ("POST", "/model/parse", {"text": "ciao"})


async def test_a_message_a_channel_answered_itself_is_stored_masked_and_answered(
    store: SqlStore,
) -> None:
    fake = FakeNluClient()
    service = make_service(store, fake)
    cid = new_conversation_id()
    await store.conversations.ensure_conversation(cid, "phone", "it")

    row = await service.record_answered(
        cid, "sì, la carta è 4111 1111 1111 1111", intent="affirm", confidence=0.93
    )

    (stored,) = await store.conversations.messages(cid)
    assert stored.id == row.id and "4111 1111 1111 1111" not in stored.text
    assert (stored.status, stored.intent) == ("processed", "affirm")
    assert fake.turns == []  # the dialogue never saw it
    assert await store.conversations.conversations_with_unanswered() == []
