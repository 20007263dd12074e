"""Assembling the gateway: store, domain pack and its back office, routing, action webhook, Rasa
(trained and supervised), service.

``open_runtime`` is the one place that starts and stops these parts, in order, for ``triage
serve``, ``triage shell``, ``triage nlu`` and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bot.actions.context import ActionContext
from bot.actions.webhook import make_action_app
from bot.backoffice.protocol import BackOffice
from bot.config.routing import RoutingTable, load_routing
from bot.config.settings import Settings
from bot.conversation.language import GENERIC, LanguageDetector
from bot.conversation.service import ConversationService
from bot.conversation.turn_locks import TurnLocks
from bot.domain import EmbeddedContext
from bot.errors import ConfigError
from bot.failpoints import Failpoints
from bot.handoff.desk import Desk, DeskSettings
from bot.handoff.webhooks import WebhookSender
from bot.live.hub import Hub
from bot.live.memory import MemoryHub
from bot.nlu.evaluation import load_examples
from bot.nlu.rasa_http import RasaHttpClient
from bot.nlu.supervisor import RasaSupervisor
from bot.nlu.training import TrainingInputs, ensure_model
from bot.packs.loader import DomainPack, load_pack
from bot.readiness import Readiness
from bot.store.sql.shared_secrets import shared_secret
from bot.store.sql.store import SqlStore
from bot.store.sql.webhook_outbox import WebhookOutbox

log = logging.getLogger(__name__)

LIVE_HUB = "live_hub"  # the readiness part of a cluster's Redis hub


@dataclass
class Runtime:
    settings: Settings
    store: SqlStore
    pack: DomainPack
    back_office: BackOffice
    routing: RoutingTable
    nlu: RasaHttpClient
    conversations: ConversationService
    desk: Desk  # where customers, the bot, the queue and agents meet; channels share it
    readiness: Readiness  # the parts a command starts itself (the SIP line), for /healthz
    # the supervised Rasa workers (none when Rasa runs elsewhere or is reused)
    supervisors: tuple[RasaSupervisor, ...]
    api_token: str
    resume_key: bytes  # signs chat resume tokens (the same on every node)


def _kept_or_new(path: Path, make: Callable[[], str]) -> Callable[[], str]:
    """What generates a shared secret: the one an earlier release kept in ``path``, else new."""

    def value() -> str:
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        return make()

    return value


def _keep(path: Path, value: str) -> None:
    """A copy in the data directory, for the operator to read (the store holds the value)."""
    if path.exists() and path.read_text(encoding="utf-8").strip() == value:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)


async def api_token_for(settings: Settings, store: SqlStore) -> str:
    """The REST API token: configured, or generated once for the whole service (every node of
    a cluster accepts it), with a copy in the data directory for the operator."""
    if settings.api_token:
        return settings.api_token
    path = settings.data_dir / "api_token"
    token = await shared_secret(
        store.db, "api_token", _kept_or_new(path, lambda: secrets.token_urlsafe(32))
    )
    _keep(path, token)
    return token


async def resume_key_for(settings: Settings, store: SqlStore) -> bytes:
    """The key of chat resume tokens, the same on every node (a customer resumes anywhere)."""
    path = settings.data_dir / "secret_key"
    key = await shared_secret(
        store.db, "resume_key", _kept_or_new(path, lambda: secrets.token_bytes(32).hex())
    )
    _keep(path, key)
    return bytes.fromhex(key)


async def open_back_office(settings: Settings, pack: DomainPack, store: SqlStore) -> BackOffice:
    """The pack's back office: the company's over HTTP when a URL is set (the pack's or
    TRIAGE_BACKOFFICE_URL), otherwise the pack's embedded one (its demo data)."""
    config = pack.manifest.back_office
    url = settings.backoffice_url or config.url
    if url or config.kind == "http":
        if not url:
            raise ConfigError(
                f"{pack.manifest.root / 'pack.yml'}: back_office.kind is http but it has no url "
                "and TRIAGE_BACKOFFICE_URL is not set"
            )
        from bot.backoffice.http import HttpBackOffice

        return HttpBackOffice(
            url,
            pack.manifest.operations,
            token=settings.backoffice_token,
            hmac_secret=settings.backoffice_hmac_secret,
            timeout_s=config.timeout_s,
            retries=config.retries,
        )
    if pack.embedded_back_office is None:
        raise ConfigError(f"the domain pack {pack.name!r} has no embedded back office")
    return await pack.embedded_back_office(
        EmbeddedContext(store.engine, store.create_tables, settings.data_dir)
    )


def language_detector(rasa_data: Path, languages: tuple[str, ...]) -> LanguageDetector:
    """Function words plus the pack's vocabulary, from its training examples per language."""
    examples = {}
    for language in languages:
        path = rasa_data / "data" / "nlu" / f"{language}.yml"
        if path.is_file():
            examples[language] = [text for text, _ in load_examples(path)]
    return GENERIC.with_vocabulary(examples)


def make_desk(
    settings: Settings,
    store: SqlStore,
    conversations: ConversationService,
    back_office: BackOffice,
    routing: RoutingTable,
    hub: Hub | None = None,
) -> Desk:
    """The desk with its hub (in-process unless given), and the webhook sender when a receiver
    is set."""
    return Desk(
        store=store,
        conversations=conversations,
        nlu=conversations.nlu,
        back_office=back_office,
        routing=routing,
        hub=hub or MemoryHub(),
        settings=DeskSettings(
            offer_timeout_s=settings.offer_timeout_s,
            abandon_after_s=settings.abandon_after_s,
            default_handle_s=settings.default_handle_s,
        ),
        notifier=(
            WebhookSender(
                WebhookOutbox(store, settings.webhook_url),
                settings.webhook_secret,
                store.leases,
                settings.node_id,
            )
            if settings.webhook_url
            else None
        ),
        node_id=settings.node_id,
    )


async def open_cluster_parts(
    settings: Settings,
    routing: RoutingTable,
    readiness: Readiness,
    stack: contextlib.AsyncExitStack,
) -> tuple[Hub | None, TurnLocks | None]:
    """In a cluster (``TRIAGE_REDIS_URL``): the Redis hub and the turn locks across nodes;
    on one node, nothing (the desk and the service use their in-process defaults)."""
    if not settings.clustered:
        return None, None
    from sqlalchemy.engine import make_url

    from bot.cluster.turn_locks import RedisTurnLocks
    from bot.live.redis_hub import RedisHub

    # the cluster's name in Redis: its database's, so clusters on one Redis never mix
    namespace = make_url(settings.effective_database_url).database or "default"
    hub = RedisHub(settings.redis_url, settings.node_id, routing.queues, namespace)
    readiness.expect(LIVE_HUB)
    hub.on_state = lambda up: readiness.ready(LIVE_HUB) if up else readiness.gone(LIVE_HUB)
    locks = RedisTurnLocks(
        hub.redis, settings.node_id, settings.turn_lock_wait_s, namespace=namespace
    )
    log.info("cluster node", extra={"node": settings.node_id})
    return hub, locks


@contextlib.asynccontextmanager
async def serve_action_webhook(
    ctx: ActionContext, pack: DomainPack, port: int, host: str = "127.0.0.1"
) -> AsyncIterator[None]:
    """The custom-action endpoint; loopback unless Rasa runs in another container."""
    runner = web.AppRunner(make_action_app(ctx, pack.actions), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()


async def rasa_answers(urls: list[str]) -> bool:
    probe = RasaHttpClient(urls, timeout_s=2)
    try:
        return await probe.is_ready()
    finally:
        await probe.close()


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    with_rasa: bool = True,
    reuse_rasa: bool = True,
    with_actions: bool = True,
    model: Path | None = None,
) -> AsyncIterator[Runtime]:
    pack = load_pack(settings.domain)
    routing = load_routing(settings.routing_file)
    store = await SqlStore.open(settings.effective_database_url)
    nlu = RasaHttpClient(settings.rasa_urls, timeout_s=settings.rasa_timeout_s)
    supervisors: list[RasaSupervisor] = []
    failpoints = Failpoints(settings.failpoints)
    try:
        async with contextlib.AsyncExitStack() as stack:
            back_office = await open_back_office(settings, pack, store)
            stack.push_async_callback(back_office.close)
            external = bool(settings.external_rasa_url)
            reused = (
                not external and reuse_rasa and with_rasa and await rasa_answers(settings.rasa_urls)
            )
            if with_actions and not reused:
                await stack.enter_async_context(
                    serve_action_webhook(
                        ActionContext(
                            store,
                            routing,
                            back_office,
                            pack.manifest.operations,
                            pack.manifest.private_slots,
                            failpoints,
                        ),
                        pack,
                        settings.action_port,
                        settings.action_host,
                    )
                )
            if with_rasa and not reused and not external:
                model = model or await ensure_model(
                    settings.rasa_python,
                    TrainingInputs.default(settings.nlu_data_dir),
                    settings.models_dir,
                )
                supervisors = [
                    RasaSupervisor(
                        settings.rasa_python,
                        model,
                        settings.rasa_port + worker,
                        settings.data_dir,
                        settings.action_url,
                        settings.rasa_start_timeout_s,
                        worker=worker,
                        # in a cluster, any node's Rasa continues any dialogue
                        tracker_db_url=settings.database_url if settings.clustered else None,
                    )
                    for worker in range(settings.rasa_workers)
                ]
                for supervisor in supervisors:
                    stack.push_async_callback(supervisor.stop)
                # the workers load the model side by side, one per core
                await asyncio.gather(*(supervisor.start() for supervisor in supervisors))
            elif reused:
                log.info("reusing the Rasa server already running", extra={"url": nlu.base_url})
            readiness = Readiness()
            hub, turn_locks = await open_cluster_parts(settings, routing, readiness, stack)
            conversations = ConversationService(
                store,
                nlu,
                routing,
                settings.max_message_chars,
                failpoints,
                language_detector(settings.nlu_data_dir, pack.manifest.languages),
                unmasked_slots=pack.manifest.unmasked_slots,
                turn_locks=turn_locks,
            )
            desk = make_desk(settings, store, conversations, back_office, routing, hub)
            await desk.hub.start(desk)
            stack.push_async_callback(desk.hub.close)
            yield Runtime(
                settings=settings,
                store=store,
                pack=pack,
                back_office=back_office,
                routing=routing,
                nlu=nlu,
                conversations=conversations,
                desk=desk,
                readiness=readiness,
                supervisors=tuple(supervisors),
                api_token=await api_token_for(settings, store),
                resume_key=await resume_key_for(settings, store),
            )
    finally:
        await nlu.close()
        await store.close()
