"""Assembling the gateway: store, routing, action webhook, Rasa (trained and supervised), service.

``open_runtime`` is the one place that starts and stops these parts, in order, for ``triage
serve``, ``triage shell``, ``triage nlu`` and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bot.actions.webhook import ActionContext, make_action_app
from bot.config import Settings
from bot.core.conversation import ConversationService
from bot.core.routing import RoutingTable, load_routing
from bot.failpoints import Failpoints
from bot.nlu.rasa_http import RasaHttpClient
from bot.nlu.supervisor import RasaSupervisor
from bot.nlu.training import TrainingInputs, ensure_model
from bot.store.seed import seed_demo_data
from bot.store.sql import SqlStore

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    store: SqlStore
    routing: RoutingTable
    nlu: RasaHttpClient
    conversations: ConversationService
    # the supervised Rasa workers (none when Rasa runs elsewhere or is reused)
    supervisors: tuple[RasaSupervisor, ...]
    api_token: str


def api_token_for(settings: Settings) -> str:
    """The REST API token: configured, or generated once and kept in the data directory."""
    if settings.api_token:
        return settings.api_token
    path = settings.data_dir / "api_token"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(0o600)
    return token


@contextlib.asynccontextmanager
async def serve_action_webhook(
    ctx: ActionContext, port: int, host: str = "127.0.0.1"
) -> AsyncIterator[None]:
    """The custom-action endpoint; loopback unless Rasa runs in another container."""
    runner = web.AppRunner(make_action_app(ctx), access_log=None)
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
    routing = load_routing(settings.routing_file)
    store = await SqlStore.open(settings.effective_database_url)
    nlu = RasaHttpClient(settings.rasa_urls, timeout_s=settings.rasa_timeout_s)
    supervisors: list[RasaSupervisor] = []
    failpoints = Failpoints(settings.failpoints)
    try:
        await seed_demo_data(store)
        async with contextlib.AsyncExitStack() as stack:
            external = bool(settings.external_rasa_url)
            reused = (
                not external and reuse_rasa and with_rasa and await rasa_answers(settings.rasa_urls)
            )
            if with_actions and not reused:
                await stack.enter_async_context(
                    serve_action_webhook(
                        ActionContext(store, routing, failpoints),
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
                    )
                    for worker in range(settings.rasa_workers)
                ]
                for supervisor in supervisors:
                    stack.push_async_callback(supervisor.stop)
                # the workers load the model side by side, one per core
                await asyncio.gather(*(supervisor.start() for supervisor in supervisors))
            elif reused:
                log.info("reusing the Rasa server already running", extra={"url": nlu.base_url})
            yield Runtime(
                settings=settings,
                store=store,
                routing=routing,
                nlu=nlu,
                conversations=ConversationService(
                    store, nlu, routing, settings.max_message_chars, failpoints
                ),
                supervisors=tuple(supervisors),
                api_token=api_token_for(settings),
            )
    finally:
        await nlu.close()
        await store.close()
