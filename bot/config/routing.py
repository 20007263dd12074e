"""The routing table: intent -> route, per-queue business hours, escalation and priority rules.

Loaded from the pack's ``routing.yml`` (or ``TRIAGE_ROUTING_FILE``) once and validated; a bad
file stops start-up with a message that names the file and the key of every problem in it.
``check_routing`` returns the problems instead, for ``triage domain check``.
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

from bot.config.problems import ConfigProblem, refusal

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS_RE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
ROUTED = ("flow", "queue")  # the routes that name a target: {flow: NAME} or {queue: NAME}


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


def check_routing(path: Path) -> tuple[RoutingTable | None, list[ConfigProblem]]:
    """The routing table in ``path`` and every problem in it; the table is None if there is
    any. ``load_routing`` and ``triage domain check`` both validate through this."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return None, [ConfigProblem("", f"cannot read routing table: {exc}")]
    if not isinstance(doc, dict):
        return None, [ConfigProblem("version", "must be 1")]
    problems: list[ConfigProblem] = []
    if doc.get("version") != 1:
        problems.append(ConfigProblem("version", "must be 1"))
    tz = _timezone(doc.get("timezone", "Europe/Rome"), problems)
    declared = _section(doc, "queues", problems)
    queues = _queues(declared, problems)
    # a queue with a bad entry is still defined: what names it is not wrong as well
    names = frozenset(str(name) for name in declared)
    intents = _intents(_section(doc, "intents", problems), names, problems)
    failure = _failure_queues(_section(doc, "flows", problems), intents, names, problems)
    esc = _section(doc, "escalation", problems)
    fallback_queue = esc.get("fallback_queue", "general")
    if not _names_one_of(fallback_queue, names):
        problems.append(
            ConfigProblem("escalation.fallback_queue", f"queue {fallback_queue!r} is not defined")
        )
    prio = _section(doc, "priority", problems)
    window = prio.get("repeat_window_h", 24)
    if isinstance(window, bool) or not isinstance(window, int | float) or window <= 0:
        problems.append(
            ConfigProblem("priority.repeat_window_h", "must be a positive number of hours")
        )
        window = 24
    table = RoutingTable(
        timezone=tz,
        intents=intents,
        flow_failure_queue=failure,
        queues=queues,
        consecutive_fallbacks=_positive_int(
            "escalation.consecutive_fallbacks", esc.get("consecutive_fallbacks", 2), problems, 1
        ),
        identification_attempts=_positive_int(
            "escalation.identification_attempts",
            esc.get("identification_attempts", 2),
            problems,
            1,
        ),
        fallback_queue=str(fallback_queue),
        priority=Priority(
            base=_positive_int("priority.base", prio.get("base", 0), problems),
            vip=_positive_int("priority.vip", prio.get("vip", 2), problems),
            repeat_contact=_positive_int(
                "priority.repeat_contact", prio.get("repeat_contact", 1), problems
            ),
            repeat_window_h=float(window),
        ),
    )
    return (None if problems else table), problems


def load_routing(path: Path) -> RoutingTable:
    """The routing table in ``path``; a ``ConfigError`` names the file and the key of every
    problem, one line each."""
    table, problems = check_routing(path)
    if table is None:
        raise refusal(path, problems)
    return table


def _section(doc: dict[str, Any], key: str, problems: list[ConfigProblem]) -> dict[Any, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(ConfigProblem(key, "must be a mapping"))
        return {}
    return value


def _names_one_of(value: Any, names: frozenset[str]) -> bool:
    # a list or a mapping where a name belongs is not a name, and not hashable either
    return isinstance(value, str) and value in names


def _timezone(value: Any, problems: list[ConfigProblem]) -> ZoneInfo:
    try:
        return ZoneInfo(str(value))
    # ZoneInfo refuses a path-like name with ValueError, and a directory of zones with OSError
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        problems.append(ConfigProblem("timezone", f"unknown time zone: {exc}"))
        return ZoneInfo("UTC")


def _queues(spec: dict[Any, Any], problems: list[ConfigProblem]) -> dict[str, Queue]:
    queues: dict[str, Queue] = {}
    for name, body in spec.items():
        key = f"queues.{name}"
        if not isinstance(body, dict):
            problems.append(ConfigProblem(key, "needs sip_uri and hours"))
            continue
        if "sip_uri" not in body:
            problems.append(ConfigProblem(f"{key}.sip_uri", "missing: where calls transfer to"))
        labels = body.get("label") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            problems.append(ConfigProblem(f"{key}.label", "must map languages to text"))
            labels = {}
        queues[str(name)] = Queue(
            str(name),
            str(body.get("sip_uri", "")),
            _parse_windows(f"{key}.hours", body.get("hours"), problems),
            {str(k): v for k, v in labels.items()},
        )
    return queues


def _parse_windows(
    key: str, hours: Any, problems: list[ConfigProblem]
) -> tuple[OpeningWindow, ...]:
    """Every entry of a queue's ``hours``; each invalid one is a problem under its own key."""
    if not isinstance(hours, dict) or not hours:
        problems.append(ConfigProblem(key, "must map days to 'HH:MM-HH:MM'"))
        return ()
    windows: list[OpeningWindow] = []
    for days, span in hours.items():
        entry = f"{key}.{days}"
        weekdays = _parse_days(entry, str(days), problems)
        match = _HOURS_RE.match(str(span))
        if not match:
            problems.append(ConfigProblem(entry, f"{span!r} is not 'HH:MM-HH:MM'"))
            continue
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        end = h2 * 60 + m2
        if h1 > 23 or m1 > 59 or m2 > 59 or end > 1440 or end <= h1 * 60 + m1:
            problems.append(ConfigProblem(entry, f"{span!r} is not a valid opening time"))
            continue
        windows += [OpeningWindow(day, time(h1, m1), end) for day in weekdays]
    return tuple(windows)


def _parse_days(key: str, spec: str, problems: list[ConfigProblem]) -> list[int]:
    if "-" in spec:
        first, last = spec.split("-", 1)
        if first not in DAYS or last not in DAYS:
            problems.append(ConfigProblem(key, f"unknown day range {spec!r}"))
            return []
        if DAYS.index(first) > DAYS.index(last):
            problems.append(ConfigProblem(key, f"day range {spec!r} runs backwards"))
            return []
        return list(range(DAYS.index(first), DAYS.index(last) + 1))
    if spec not in DAYS:
        problems.append(ConfigProblem(key, f"unknown day {spec!r}"))
        return []
    return [DAYS.index(spec)]


def _intents(
    spec: dict[Any, Any], queues: frozenset[str], problems: list[ConfigProblem]
) -> dict[str, Route]:
    intents: dict[str, Route] = {}
    for intent, route in spec.items():
        key = f"intents.{intent}"
        if route in ("reply", "fallback"):
            intents[str(intent)] = Route(RouteKind(route), str(intent))
        elif isinstance(route, dict) and len(route) == 1 and next(iter(route)) in ROUTED:
            kind, target = next(iter(route.items()))
            if kind == "queue" and not _names_one_of(target, queues):
                problems.append(
                    ConfigProblem(key, f"queue {target!r} is not defined under queues")
                )
                continue
            intents[str(intent)] = Route(RouteKind(kind), str(target))
        else:
            problems.append(
                ConfigProblem(key, "must be reply, fallback, {flow: NAME} or {queue: NAME}")
            )
    return intents


def _failure_queues(
    spec: dict[Any, Any],
    intents: dict[str, Route],
    queues: frozenset[str],
    problems: list[ConfigProblem],
) -> dict[str, str]:
    failure: dict[str, str] = {}
    for flow, body in spec.items():
        target = body.get("on_failure") if isinstance(body, dict) else None
        if not _names_one_of(target, queues):
            problems.append(
                ConfigProblem(f"flows.{flow}.on_failure", f"queue {target!r} is not defined")
            )
            continue
        failure[str(flow)] = str(target)
    flows = {route.name for route in intents.values() if route.kind is RouteKind.FLOW}
    missing = sorted(flows - {str(flow) for flow in spec})
    if missing:
        problems.append(ConfigProblem("flows", f"no on_failure queue for {', '.join(missing)}"))
    return failure


def _positive_int(key: str, value: Any, problems: list[ConfigProblem], minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        problems.append(ConfigProblem(key, f"must be an integer >= {minimum}, not {value!r}"))
        return minimum
    return value
