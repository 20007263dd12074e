"""The routing table: intent -> route, per-queue business hours, escalation and priority rules.

Loaded from ``config/routing.yml`` once and validated; a bad file stops start-up with a message
that names the key and the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from bot.errors import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS_RE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class RouteKind(StrEnum):
    FLOW = "flow"
    QUEUE = "queue"
    REPLY = "reply"
    FALLBACK = "fallback"


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "name": self.name}


@dataclass(frozen=True)
class OpeningWindow:
    weekday: int  # Monday is 0
    start: time
    end_minutes: int  # minutes after midnight, up to 1440 so "24:00" closes the day


@dataclass(frozen=True)
class Queue:
    name: str
    sip_uri: str
    windows: tuple[OpeningWindow, ...]
    labels: dict[str, str]

    def label(self, language: str | None) -> str:
        return self.labels.get(language or "it") or self.labels.get("it") or self.name

    def is_open(self, at: datetime, tz: ZoneInfo) -> bool:
        local = at.astimezone(tz)
        minutes = local.hour * 60 + local.minute
        return any(
            w.weekday == local.weekday()
            and w.start.hour * 60 + w.start.minute <= minutes < w.end_minutes
            for w in self.windows
        )


@dataclass(frozen=True)
class Priority:
    base: int
    vip: int
    repeat_contact: int
    repeat_window_h: float


@dataclass(frozen=True)
class RoutingTable:
    timezone: ZoneInfo
    intents: dict[str, Route]
    flow_failure_queue: dict[str, str]
    queues: dict[str, Queue]
    consecutive_fallbacks: int
    identification_attempts: int
    fallback_queue: str
    priority: Priority

    def route_for(self, intent: str | None) -> Route:
        """The route of an intent; an unknown or missing intent is a fallback."""
        if intent is None:
            return Route(RouteKind.FALLBACK, "nlu_fallback")
        return self.intents.get(intent, Route(RouteKind.FALLBACK, intent))

    def queue_is_open(self, queue: str, at: datetime) -> bool:
        return self.queues[queue].is_open(at, self.timezone)


def _fail(path: Path, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {problem}")


def _parse_days(path: Path, key: str, spec: str) -> list[int]:
    if "-" in spec:
        first, last = spec.split("-", 1)
        if first not in DAYS or last not in DAYS:
            raise _fail(path, key, f"unknown day range {spec!r}")
        if DAYS.index(first) > DAYS.index(last):
            raise _fail(path, key, f"day range {spec!r} runs backwards")
        return list(range(DAYS.index(first), DAYS.index(last) + 1))
    if spec not in DAYS:
        raise _fail(path, key, f"unknown day {spec!r}")
    return [DAYS.index(spec)]


def _parse_windows(path: Path, key: str, hours: Any) -> tuple[OpeningWindow, ...]:
    if not isinstance(hours, dict) or not hours:
        raise _fail(path, key, "must map days to 'HH:MM-HH:MM'")
    windows: list[OpeningWindow] = []
    for days, span in hours.items():
        match = _HOURS_RE.match(str(span))
        if not match:
            raise _fail(path, f"{key}.{days}", f"{span!r} is not 'HH:MM-HH:MM'")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        end = h2 * 60 + m2
        if h1 > 23 or m1 > 59 or m2 > 59 or end > 1440 or end <= h1 * 60 + m1:
            raise _fail(path, f"{key}.{days}", f"{span!r} is not a valid opening time")
        for day in _parse_days(path, f"{key}.{days}", str(days)):
            windows.append(OpeningWindow(day, time(h1, m1), end))
    return tuple(windows)


def _positive_int(path: Path, key: str, value: Any, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(path, key, f"must be an integer >= {minimum}, not {value!r}")
    return value


def load_routing(path: Path) -> RoutingTable:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read routing table: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise _fail(path, "version", "must be 1")
    try:
        tz = ZoneInfo(str(doc.get("timezone", "Europe/Rome")))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _fail(path, "timezone", f"unknown time zone: {exc}") from exc

    queues: dict[str, Queue] = {}
    for name, spec in (doc.get("queues") or {}).items():
        if not isinstance(spec, dict) or "sip_uri" not in spec:
            raise _fail(path, f"queues.{name}", "needs sip_uri and hours")
        labels = spec.get("label") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise _fail(path, f"queues.{name}.label", "must map languages to text")
        queues[name] = Queue(
            name,
            str(spec["sip_uri"]),
            _parse_windows(path, f"queues.{name}.hours", spec.get("hours")),
            {str(k): v for k, v in labels.items()},
        )

    intents: dict[str, Route] = {}
    flows: set[str] = set()
    for intent, spec in (doc.get("intents") or {}).items():
        key = f"intents.{intent}"
        if spec in ("reply", "fallback"):
            intents[intent] = Route(RouteKind(spec), intent)
        elif isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("flow", "queue"):
            kind, target = next(iter(spec.items()))
            if kind == "queue" and target not in queues:
                raise _fail(path, key, f"queue {target!r} is not defined under queues")
            if kind == "flow":
                flows.add(str(target))
            intents[intent] = Route(RouteKind(kind), str(target))
        else:
            raise _fail(path, key, "must be reply, fallback, {flow: NAME} or {queue: NAME}")

    failure: dict[str, str] = {}
    for flow, spec in (doc.get("flows") or {}).items():
        target = spec.get("on_failure") if isinstance(spec, dict) else None
        if target not in queues:
            raise _fail(path, f"flows.{flow}.on_failure", f"queue {target!r} is not defined")
        failure[flow] = str(target)
    missing = sorted(flows - failure.keys())
    if missing:
        raise _fail(path, "flows", f"no on_failure queue for {', '.join(missing)}")

    esc = doc.get("escalation") or {}
    fallback_queue = esc.get("fallback_queue", "general")
    if fallback_queue not in queues:
        raise _fail(path, "escalation.fallback_queue", f"queue {fallback_queue!r} is not defined")
    prio = doc.get("priority") or {}
    window = prio.get("repeat_window_h", 24)
    if not isinstance(window, int | float) or window <= 0:
        raise _fail(path, "priority.repeat_window_h", "must be a positive number of hours")
    return RoutingTable(
        timezone=tz,
        intents=intents,
        flow_failure_queue=failure,
        queues=queues,
        consecutive_fallbacks=_positive_int(
            path, "escalation.consecutive_fallbacks", esc.get("consecutive_fallbacks", 2), 1
        ),
        identification_attempts=_positive_int(
            path, "escalation.identification_attempts", esc.get("identification_attempts", 2), 1
        ),
        fallback_queue=str(fallback_queue),
        priority=Priority(
            base=_positive_int(path, "priority.base", prio.get("base", 0)),
            vip=_positive_int(path, "priority.vip", prio.get("vip", 2)),
            repeat_contact=_positive_int(
                path, "priority.repeat_contact", prio.get("repeat_contact", 1)
            ),
            repeat_window_h=float(window),
        ),
    )
