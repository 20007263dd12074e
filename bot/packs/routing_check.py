"""A pack's ``routing.yml`` against its Rasa domain and its code, for ``triage domain check``.

Every problem is collected: each routed intent exists in the Rasa domain and each of its intents
is routed; each queue named exists and has a SIP URI, hours and a label per language; each flow
has an ``on_failure`` queue, its form and actions in the Rasa domain and its actions in the
pack's ``ACTIONS``. The routing loader's validation (``bot/config/routing.py``) then reports
every problem it finds beyond that: each invalid hours entry, the time zone, priorities.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

import yaml

from bot.config.routing import check_routing
from bot.packs.loader import Manifest, Problem, file_problems
from bot.packs.rasa_domain import RasaDomain

# Intents Rasa itself may predict without the domain declaring them.
RASA_INTENTS = frozenset({"nlu_fallback", "restart", "back", "out_of_scope", "session_start"})
SIP_SCHEMES = ("sip:", "sips:")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def flow_actions(flow: str) -> tuple[str, str]:
    """The custom actions a flow needs, by the names Rasa gives a form's validator."""
    return f"action_{flow}", f"validate_{flow}_form"


def routed_flows(routing: Mapping[str, Any]) -> list[str]:
    intents = routing.get("intents")
    if not isinstance(intents, dict):
        return []
    flows = (spec.get("flow") for spec in intents.values() if isinstance(spec, dict))
    return list(dict.fromkeys(str(flow) for flow in flows if flow is not None))


def read_routing(path: Path) -> tuple[dict[str, Any], list[Problem]]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return {}, [Problem(path, "", f"cannot read the routing table: {exc}")]
    if not isinstance(doc, dict):
        return {}, [Problem(path, "", "the routing table must be a mapping")]
    return doc, []


def routing_problems(
    manifest: Manifest,
    routing: Mapping[str, Any],
    domain: RasaDomain | None,
    pack_actions: Set[str] | None,
) -> list[Problem]:
    """``routing``: the table as read, empty when it cannot be (``read_routing`` says why);
    ``domain``: the Rasa domain, None when it cannot be read (what needs it is not checked);
    ``pack_actions``: the names in the pack's ``ACTIONS``, None when its code did not load."""
    if not routing:
        return []
    path = manifest.routing_file
    queues = _mapping(routing.get("queues"))
    problems = [
        *(_intent_problems(path, routing, domain, queues) if domain is not None else []),
        *_queue_problems(path, queues, manifest.languages),
        *_failure_queue_problems(path, routing, queues),
        *(
            _flow_action_problems(manifest, routing, domain, pack_actions)
            if domain is not None
            else []
        ),
    ]
    return problems + file_problems(path, check_routing, problems)


def _intent_problems(
    path: Path, routing: Mapping[str, Any], domain: RasaDomain, queues: Mapping[str, Any]
) -> list[Problem]:
    routes = routing.get("intents")
    if not isinstance(routes, dict):
        return [Problem(path, "intents", "must map intents to routes")]
    problems: list[Problem] = []
    known = domain.names("intents")
    for intent, spec in routes.items():
        if intent not in known | RASA_INTENTS:
            problems.append(
                Problem(
                    path,
                    f"intents.{intent}",
                    f"not an intent of the Rasa domain ({domain.file_of('intents')})",
                )
            )
        queue = spec.get("queue") if isinstance(spec, dict) else None
        if queue is not None and queue not in queues:
            problems.append(
                Problem(path, f"intents.{intent}.queue", f"{queue!r} is not defined under queues")
            )
    for intent in sorted(known - set(routes)):
        problems.append(
            Problem(
                path,
                f"intents.{intent}",
                f"no route for this intent of the Rasa domain ({domain.file_of('intents', intent)})"
                ": reply, fallback, {flow: NAME} or {queue: NAME}",
            )
        )
    return problems


def _queue_problems(
    path: Path, queues: Mapping[str, Any], languages: tuple[str, ...]
) -> list[Problem]:
    if not queues:
        return [Problem(path, "queues", "no queue: a pack needs at least one")]
    problems: list[Problem] = []
    for name, spec in queues.items():
        key = f"queues.{name}"
        if not isinstance(spec, dict):
            problems.append(Problem(path, key, "must have a label, a sip_uri and hours"))
            continue
        sip_uri = spec.get("sip_uri")
        if not isinstance(sip_uri, str) or not sip_uri.startswith(SIP_SCHEMES):
            problems.append(
                Problem(path, f"{key}.sip_uri", "needs a SIP URI (sip:...) to transfer calls to")
            )
        if not spec.get("hours"):
            problems.append(
                Problem(path, f"{key}.hours", "needs business hours, e.g. {mon-fri: 09:00-18:00}")
            )
        labels = _mapping(spec.get("label"))
        for language in languages:
            if not isinstance(labels.get(language), str) or not labels[language].strip():
                problems.append(
                    Problem(
                        path,
                        f"{key}.label.{language}",
                        f"needs the queue's name as the customer is told it in {language}",
                    )
                )
    return problems


def _failure_queue_problems(
    path: Path, routing: Mapping[str, Any], queues: Mapping[str, Any]
) -> list[Problem]:
    declared = _mapping(routing.get("flows"))
    problems: list[Problem] = []
    for flow in routed_flows(routing):
        spec = declared.get(flow)
        target = spec.get("on_failure") if isinstance(spec, dict) else None
        if target is None:
            problems.append(
                Problem(
                    path,
                    f"flows.{flow}.on_failure",
                    "missing: the queue a customer goes to when the flow fails",
                )
            )
        elif target not in queues:
            problems.append(
                Problem(path, f"flows.{flow}.on_failure", f"{target!r} is not defined under queues")
            )
    return problems


def _flow_action_problems(
    manifest: Manifest,
    routing: Mapping[str, Any],
    domain: RasaDomain,
    pack_actions: Set[str] | None,
) -> list[Problem]:
    problems: list[Problem] = []
    init = manifest.root / "__init__.py"
    for flow in routed_flows(routing):
        why = f"flow {flow} (routing.yml) needs it"
        form = f"{flow}_form"
        if form not in domain.names("forms"):
            problems.append(Problem(domain.file_of("forms"), f"forms.{form}", why))
        for action in flow_actions(flow):
            if action not in domain.names("actions"):
                problems.append(Problem(domain.file_of("actions"), f"actions.{action}", why))
            if pack_actions is not None and action not in pack_actions:
                problems.append(Problem(init, f"ACTIONS.{action}", why))
    return problems
