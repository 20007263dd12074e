"""``triage cluster up``: a cluster on this machine, as ``make cluster`` starts it.

Two (or more) ``triage serve`` nodes on the local PostgreSQL and Redis, HAProxy in front of
their HTTP ports (WebSocket upgrade, health checks on ``/healthz``, no sticky sessions) and,
when Debian's ``kamailio`` is installed, Kamailio's dispatcher in front of their SIP bridges.
Every part is a child process with its files under one directory (``var/cluster`` by default);
Ctrl-C or SIGTERM stops them all. ``LocalCluster`` is also what the cluster tests and
``bench/cluster.py`` start. Production runs the same engines with their own service managers:
see docs/cluster.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bot.config.phone_lines import load_phone_lines
from bot.config.settings import PROJECT_ROOT, Settings

DEFAULT_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/triage_cluster"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
KAMAILIO_DIR = PROJECT_ROOT / "deploy" / "kamailio"
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
HEALTH_INTERVAL_MS = 1000  # the proxy's probe; a node is out after two failures
OBSERVE = "observe layer4 error-limit 1 on-error mark-down"  # or at the first refused connection


@dataclass
class NodePorts:
    http: int
    sip: int
    rtp_min: int
    rtp_max: int
    rasa: int
    action: int


@dataclass
class Node:
    name: str
    ports: NodePorts
    data_dir: Path
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    def log_tail(self, chars: int = 3000) -> str:
        path = self.data_dir / "serve.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@dataclass
class ClusterLayout:
    """Where everything listens: the proxy and Kamailio, and each node's own ports."""

    root: Path
    http_port: int = 8080
    sip_port: int = 5060
    nodes: list[NodePorts] = field(default_factory=list)

    @classmethod
    def default(cls, root: Path, count: int = 2) -> ClusterLayout:
        return cls(
            root=root,
            nodes=[
                NodePorts(
                    http=8181 + i,
                    sip=5161 + i,
                    rtp_min=41000 + 1000 * i,
                    rtp_max=41998 + 1000 * i,
                    rasa=5205 + i,
                    action=5255 + i,
                )
                for i in range(count)
            ],
        )


def haproxy_config(layout: ClusterLayout) -> str:
    """HTTP and WebSocket to the nodes: least connections, no stickiness, health checks."""
    servers = "\n".join(
        f"    server node{i + 1} 127.0.0.1:{p.http} check" for i, p in enumerate(layout.nodes)
    )
    return f"""# written by `triage cluster up`; see docs/cluster.md for production settings
global
    # each connection costs two descriptors: raise `ulimit -n` (and this) in production
    maxconn 8000

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # an open chat or console socket idles between frames (the sockets ping every 30 s)
    timeout tunnel 1h
    timeout http-keep-alive 10s
    # a connection refused by a node that died goes to another node at once
    retries 3
    option redispatch 1

frontend triage
    bind 127.0.0.1:{layout.http_port}
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk
    http-check send meth GET uri /healthz
    http-check expect status 200
    # probed every second; a node that refuses connections is taken out at the first error
    default-server inter {HEALTH_INTERVAL_MS}ms fastinter 250ms fall 2 rise 2 {OBSERVE}
{servers}
"""


async def ensure_database(url: str) -> None:
    """Create the cluster's PostgreSQL database if it does not exist (trust auth here)."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = await asyncpg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password,
        database="postgres",
        timeout=5,
    )
    try:
        exists = await admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", parsed.database
        )
        if not exists:
            await admin.execute(f'CREATE DATABASE "{parsed.database}"')
    finally:
        await admin.close()


async def until_healthy(base: str, gone: Callable[[], str | None], timeout_s: float) -> None:
    """Until ``base``/healthz answers 200; ``gone`` says why it never will (its process died)."""
    async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as http:
        while True:
            why = gone()
            if why is not None:
                raise RuntimeError(why)
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)


class LocalCluster:
    """The nodes, the HTTP proxy and Kamailio as child processes of this one."""

    def __init__(
        self,
        layout: ClusterLayout,
        *,
        database_url: str = DEFAULT_DATABASE,
        redis_url: str = DEFAULT_REDIS,
        model: Path | None = None,
        extra_env: dict[str, str] | None = None,
        with_sip: bool = True,
        settings: Settings | None = None,
    ) -> None:
        self.layout = layout
        self.settings = settings or Settings()
        self.database_url = database_url
        self.redis_url = redis_url
        self.model = model
        self.extra_env = extra_env or {}
        self.with_sip = with_sip and shutil.which("kamailio") is not None
        self.nodes = [
            self._node(f"node{i + 1}", ports) for i, ports in enumerate(layout.nodes)
        ]
        self.proxy: asyncio.subprocess.Process | None = None
        self.kamailio: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.layout.http_port}"

    def _node(self, name: str, ports: NodePorts) -> Node:
        data_dir = self.layout.root / name
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
        env.update(
            TRIAGE_DATA_DIR=str(data_dir),
            TRIAGE_DATABASE_URL=self.database_url,
            TRIAGE_REDIS_URL=self.redis_url,
            TRIAGE_NODE_ID=name,
            TRIAGE_HTTP_PORT=str(ports.http),
            TRIAGE_SIP_PORT=str(ports.sip),
            TRIAGE_RTP_PORT_MIN=str(ports.rtp_min),
            TRIAGE_RTP_PORT_MAX=str(ports.rtp_max),
            TRIAGE_RASA_PORT=str(ports.rasa),
            TRIAGE_ACTION_PORT=str(ports.action),
            TRIAGE_RASA_WORKERS="1",
            # the shared secrets of a cluster come from its store; the API token alike
            **self.extra_env,
        )
        return Node(name, ports, data_dir, env)

    async def start(self) -> None:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        await ensure_database(self.database_url)
        model = self.model or await self._trained_model()
        for node in self.nodes:
            models = node.data_dir / "models"
            models.mkdir(parents=True, exist_ok=True)
            if not (models / model.name).exists():
                (models / model.name).symlink_to(model)
        # one node first: it creates the tables and the shared secrets the others read
        await self.start_node(self.nodes[0])
        await asyncio.gather(*(self.start_node(n) for n in self.nodes[1:]))
        await self._start_proxy()
        if self.with_sip:
            await self._start_kamailio()

    async def _trained_model(self) -> Path:
        from bot.nlu.training import TrainingInputs, ensure_model

        settings = self.settings
        return await ensure_model(
            settings.rasa_python,
            TrainingInputs.default(settings.nlu_data_dir),
            self.layout.root / "models",
        )

    async def start_node(self, node: Node) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        log = (node.data_dir / "serve.log").open("ab")
        node.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "serve", env=node.env, stdout=log, stderr=log
        )
        log.close()
        await self.wait_healthy(node)

    async def wait_healthy(self, node: Node, timeout_s: float = START_TIMEOUT_S) -> None:
        def gone() -> str | None:
            if node.proc is not None and node.proc.returncode is not None:
                return f"{node.name} exited:\n{node.log_tail()}"
            return None

        await until_healthy(node.base, gone, timeout_s)

    async def _start_proxy(self) -> None:
        config = self.layout.root / "haproxy.cfg"
        config.write_text(haproxy_config(self.layout), encoding="utf-8")
        log = (self.layout.root / "haproxy.log").open("ab")
        self.proxy = await asyncio.create_subprocess_exec(
            "haproxy", "-f", str(config), "-db", stdout=log, stderr=log
        )
        log.close()
        await self.wait_proxy()

    async def wait_proxy(self) -> None:
        """Until the proxy answers a health check through a node that is in."""

        def gone() -> str | None:
            if self.proxy is not None and self.proxy.returncode is not None:
                log = (self.layout.root / "haproxy.log").read_text(errors="replace")
                return f"haproxy exited:\n{log[-2000:]}"
            return None

        await until_healthy(self.base, gone, 30)

    async def _start_kamailio(self) -> None:
        run = KAMAILIO_DIR / "run.sh"
        bridges = ",".join(f"127.0.0.1:{n.ports.sip}" for n in self.nodes)
        log = (self.layout.root / "kamailio.log").open("ab")
        self.kamailio = await asyncio.create_subprocess_exec(
            "bash",
            str(run),
            str(self.layout.root / "kamailio"),
            f"127.0.0.1:{self.layout.sip_port}",
            bridges,
            stdout=log,
            stderr=log,
        )
        log.close()

    async def kill(self, node: Node) -> None:
        """SIGKILL: the node dies without a word, as a crashed machine would; returns once it
        is gone."""
        if node.proc is not None and node.proc.returncode is None:
            node.proc.kill()
            await node.proc.wait()

    async def stop_node(self, node: Node, sig: int = signal.SIGTERM) -> int | None:
        proc = node.proc
        if proc is None:
            return None
        if proc.returncode is None:
            proc.send_signal(sig)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        return proc.returncode

    async def stop(self) -> None:
        for proc in (self.kamailio, self.proxy):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        await asyncio.gather(*(self.stop_node(n) for n in self.nodes))


async def cmd_cluster_up(settings: Settings, args: argparse.Namespace) -> int:
    layout = ClusterLayout.default(Path(args.dir).resolve(), args.nodes)
    layout.http_port, layout.sip_port = args.http_port, args.sip_port
    cluster = LocalCluster(
        layout, database_url=args.database_url, redis_url=args.redis_url, settings=settings
    )
    print(f"triage cluster: starting {args.nodes} nodes, HAProxy and Kamailio in {layout.root}")
    try:
        await cluster.start()
        print(f"triage cluster: chat and console through the proxy: {cluster.base}/")
        print(f"triage cluster: chat demo {cluster.base}/chat/demo; console {cluster.base}/agent")
        if cluster.with_sip:
            lines = load_phone_lines(settings.phone_file)
            for language in ("it", "en"):
                print(
                    f"triage cluster: calls through Kamailio: "
                    f"sip:{lines.number_for(language)}@127.0.0.1:{layout.sip_port} ({language})"
                )
        else:
            print("triage cluster: no kamailio here, so no SIP dispatcher (make cluster as root)")
        for node in cluster.nodes:
            print(
                f"triage cluster: {node.name}: {node.base} (SIP 127.0.0.1:{node.ports.sip}), "
                f"log {node.data_dir / 'serve.log'}"
            )
        print(f"triage cluster: store {args.database_url}; live fan-out {args.redis_url}")
        password = cluster.nodes[0].data_dir / "admin_password"
        print(f"triage cluster: first start: the admin's password is in {password}")
        print("triage cluster: press Ctrl-C to stop", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watch = [asyncio.create_task(n.proc.wait()) for n in cluster.nodes if n.proc]
        await asyncio.wait(
            [asyncio.create_task(stop.wait()), *watch], return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        await cluster.stop()
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cluster", help="a cluster on this machine (make cluster)")
    cluster_sub = p.add_subparsers(dest="cluster_command", required=True)
    up = cluster_sub.add_parser(
        "up", help="two nodes on PostgreSQL and Redis behind HAProxy and Kamailio"
    )
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--dir", default=str(PROJECT_ROOT / "var" / "cluster"))
    up.add_argument("--http-port", type=int, default=8080)
    up.add_argument("--sip-port", type=int, default=5060)
    up.add_argument("--database-url", default=DEFAULT_DATABASE)
    up.add_argument("--redis-url", default=DEFAULT_REDIS)
    up.set_defaults(run=cmd_cluster_up)
