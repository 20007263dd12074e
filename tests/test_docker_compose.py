"""docker/compose.yml as Compose reads it: the phone line must be reachable in the container.

No Docker engine runs here, so the file is read with the project's own settings code instead.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import yaml

from bot.channels.phone.line import sip_settings
from bot.config.settings import Settings, load_settings

COMPOSE = Path(__file__).resolve().parent.parent / "docker" / "compose.yml"
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def interpolated(value: str) -> str:
    """Compose's ``${NAME}`` and ``${NAME:-default}`` with nothing set in the environment."""
    return VARIABLE.sub(lambda m: m["default"] or "", value)


def gateway() -> dict[str, Any]:
    service: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]["gateway"]
    return service


def gateway_settings() -> Settings:
    environment = gateway()["environment"]
    assert isinstance(environment, dict), "keep the gateway's environment a mapping"
    return load_settings({k: interpolated(str(v)) for k, v in environment.items()})


def _ports(spec: str) -> list[int]:
    first, _, last = spec.partition("-")
    return list(range(int(first), int(last or first) + 1))


def published_udp() -> dict[int, int]:
    """Each UDP port of the container that is published, with the host's port for it."""
    published: dict[int, int] = {}
    for entry in gateway().get("ports", []):
        assert isinstance(entry, str), "keep the short syntax: [HOST:]CONTAINER[/PROTOCOL]"
        mapping, _, protocol = entry.partition("/")
        if protocol != "udp":
            continue
        *host, container = mapping.split(":")
        container_ports = _ports(container)
        host_ports = _ports(host[-1]) if host else container_ports
        assert len(host_ports) == len(container_ports), entry
        published.update(zip(container_ports, host_ports, strict=True))
    return published


def test_compose_sip_line_listens_beyond_the_containers_loopback() -> None:
    settings = gateway_settings()
    assert not ipaddress.ip_address(settings.sip_host).is_loopback
    line = sip_settings(settings)  # refuses a wildcard address with nothing to advertise
    assert not ipaddress.ip_address(line.contact_host).is_unspecified


def test_compose_publishes_the_sip_port_and_every_rtp_port_over_udp() -> None:
    settings = gateway_settings()
    needed = {settings.sip_port, *range(settings.rtp_port_min, settings.rtp_port_max + 1)}
    published = published_udp()
    assert sorted(needed - published.keys()) == []
    # the SDP and Contact name the container's ports: the host must publish the same numbers
    assert {p: published[p] for p in needed} == {p: p for p in needed}


def test_compose_rtp_range_has_ports_for_every_call_the_line_accepts() -> None:
    settings = gateway_settings()
    pairs = (settings.rtp_port_max - settings.rtp_port_min + 1) // 2  # RTP even, RTCP above
    assert pairs >= settings.sip_max_calls
