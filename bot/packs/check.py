"""``triage domain check``: every problem of a domain pack, each with its file and key.

What a pack must hold is said in ``bot/domain.py``; this finds, in one run:

- ``pack.yml``: every invalid key (``bot/packs/loader.py``); ``keyed_slots`` and
  ``private_slots`` name slots of the Rasa domain;
- ``routing.yml`` (``bot/packs/routing_check.py``): routed intents exist in the Rasa domain and
  every intent of it is routed; queues named exist and have a SIP URI, hours and a label per
  language;
  every flow has an ``on_failure`` queue, its form ``<flow>_form`` and its actions
  ``action_<flow>`` and ``validate_<flow>_form`` in the Rasa domain and in the pack's ``ACTIONS``;
- the Rasa data: ``config.yml``, the domain, ``data/nlu/<lang>.yml`` (with an example of every
  intent) and ``heldout/<lang>.yml`` per language; the service's slots (``SERVICE_SLOTS``); the
  responses the service's actions and Rasa's fallback utter, in every language of the pack when
  its responses are per language; every custom action is served, by the pack or the service;
- ``phone.yml``: it loads, and greets in every language of the pack;
- the pack's Python (``bot/packs/code_check.py``): it imports, imports only ``bot.domain`` of
  the service, and calls only the operations ``pack.yml`` declares.

The files checked are those ``triage serve`` would load: the pack's, or those the installation
puts in their place (``FileOverrides``). The routing loader's own validation
(``bot/config/routing.py``: hours, time zone, priorities) reports every problem; the phone
loader's stops at its first. A file that cannot be read does not stop the checks of the others;
without a readable ``pack.yml`` (its languages, Rasa data and operations), what is checked is
each file on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

import yaml

from bot.actions.webhook import action_registry
from bot.config.phone_lines import check_phone_lines
from bot.config.routing import check_routing
from bot.domain import SERVICE_INTENTS, SERVICE_SLOTS
from bot.nlu.evaluation import load_examples
from bot.packs.code_check import pack_actions, source_problems
from bot.packs.loader import (
    FileOverrides,
    Manifest,
    Problem,
    check_manifest,
    file_problems,
    locate_pack,
)
from bot.packs.rasa_domain import LANGUAGE_SLOT, RasaDomain, read_rasa_domain, response_languages
from bot.packs.routing_check import (
    read_routing,
    routed_flows,
    routing_problems,
)

# What the service's own actions utter (bot/actions/), and Rasa's default fallback.
BUILT_IN_RESPONSES = (
    "utter_callback_booked",
    "utter_clarify",
    "utter_flow_failed",
    "utter_handoff_queued",
    "utter_nothing_to_confirm",
    "utter_offer_callback",
    "utter_offer_declined",
    "utter_offer_human",
)
RASA_FALLBACK_RESPONSE = "utter_default"
# Actions Rasa runs itself: never asked of the action webhook.
RASA_ACTIONS = frozenset(
    {
        "action_listen",
        "action_restart",
        "action_default_fallback",
        "action_deactivate_loop",
        "action_revert_fallback_events",
        "action_default_ask_affirmation",
        "action_default_ask_rephrase",
        "action_two_stage_fallback",
        "action_back",
        "action_unlikely_intent",
        "action_extract_slots",
    }
)


def check_pack(spec: str, overrides: FileOverrides | None = None) -> list[Problem]:
    """Every problem of the pack that ``spec`` names (as ``TRIAGE_DOMAIN`` does), with the files
    ``overrides`` puts in place of its own; a ``PackError`` when there is no pack there."""
    overrides = overrides or FileOverrides()
    root, module_name = locate_pack(spec)
    own, problems = check_manifest(root)
    if own is None:
        return _unique(problems + _unread_manifest_problems(root, overrides))
    manifest = overrides.applied_to(own)
    built_in = action_registry({})
    served, code_problems = pack_actions(manifest, module_name, built_in)
    routing, found = read_routing(manifest.routing_file)
    problems += found
    if manifest.rasa_data.is_dir():
        problems += _rasa_data_problems(manifest, routing, served, built_in)
    else:
        problems += routing_problems(manifest, routing, None, served)
        problems.append(
            Problem(manifest.rasa_data, "", "no such directory (TRIAGE_NLU_DATA_DIR)")
            if overrides.rasa_data is not None
            else Problem(root / "pack.yml", "rasa_data", f"no directory {manifest.rasa_data}")
        )
    problems += _phone_problems(manifest)
    problems += code_problems + source_problems(manifest.root, manifest.operations)
    return _unique(problems)


def _unread_manifest_problems(root: Path, overrides: FileOverrides) -> list[Problem]:
    """What can be checked of a pack whose ``pack.yml`` cannot be read: each file on its own."""
    routing_file = overrides.routing_file or root / "routing.yml"
    phone_file = overrides.phone_file or root / "phone.yml"
    return [
        *file_problems(routing_file, check_routing),
        *file_problems(phone_file, check_phone_lines),
        *source_problems(root, None),
    ]


def _rasa_data_problems(
    manifest: Manifest,
    routing: Mapping[str, Any],
    served: Set[str] | None,
    built_in: Mapping[str, object],
) -> list[Problem]:
    domain, problems = read_rasa_domain(manifest.rasa_data / "domain")
    problems += routing_problems(manifest, routing, domain if domain.files else None, served)
    if domain.files:
        problems += _served_problems(manifest, domain, served, built_in)
        problems += _slot_problems(manifest, domain)
        problems += _response_problems(manifest, domain)
        problems += _nlu_problems(manifest, domain)
    return problems + _rasa_file_problems(manifest)


def _unique(problems: list[Problem]) -> list[Problem]:
    """One problem per file and key: the first found says the most precise thing."""
    seen: set[tuple[Path, str]] = set()
    kept = []
    for problem in problems:
        if problem.key and (problem.file, problem.key) in seen:
            continue
        seen.add((problem.file, problem.key))
        kept.append(problem)
    return kept


def summary(manifest: Manifest) -> str:
    """The line ``triage domain check`` prints for a pack with no problem."""
    routing, _ = read_routing(manifest.routing_file)
    counts = {
        "routed intent": len(_mapping(routing.get("intents"))),
        "flow": len(routed_flows(routing)),
        "queue": len(_mapping(routing.get("queues"))),
    }
    shown = ", ".join(f"{n} {what}{'' if n == 1 else 's'}" for what, n in counts.items())
    languages = ", ".join(manifest.languages)
    return f"{manifest.name}: no problem ({shown}; {languages}) in {manifest.root}"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _served_problems(
    manifest: Manifest,
    domain: RasaDomain,
    served: Set[str] | None,
    built_in: Mapping[str, object],
) -> list[Problem]:
    """Every custom action of the Rasa domain is served, and every action served is in it."""
    if served is None:
        return []
    init = manifest.root / "__init__.py"
    custom = {a for a in domain.names("actions") if not a.startswith("utter_")} - RASA_ACTIONS
    problems = [
        Problem(
            init,
            f"ACTIONS.{action}",
            f"the Rasa domain ({domain.file_of('actions', action)}) lists this custom action "
            "but neither the pack nor the service serves it",
        )
        for action in sorted(custom - served - set(built_in))
    ]
    problems += [
        Problem(
            domain.file_of("actions"),
            f"actions.{action}",
            "the pack's ACTIONS serve it but the Rasa domain does not list it: Rasa never calls it",
        )
        for action in sorted(served - custom)
    ]
    return problems


def _slot_problems(manifest: Manifest, domain: RasaDomain) -> list[Problem]:
    slots = domain.names("slots")
    slots_file = domain.file_of("slots")
    problems = [
        Problem(
            slots_file, f"slots.{slot}", "the service reads and writes this slot (bot/domain.py)"
        )
        for slot in SERVICE_SLOTS
        if slot not in slots
    ]
    intents = domain.names("intents")
    problems += [
        Problem(
            domain.file_of("intents"),
            f"intents.{intent}",
            "the service relies on this intent (bot/domain.py SERVICE_INTENTS)",
        )
        for intent in SERVICE_INTENTS
        if intent not in intents
    ]
    language = domain.entries["slots"].get(LANGUAGE_SLOT)
    values = language.get("values") if isinstance(language, dict) else None
    if isinstance(values, list):
        problems += [
            Problem(slots_file, f"slots.{LANGUAGE_SLOT}.values", f"lacks {lang}, a pack language")
            for lang in manifest.languages
            if lang not in values
        ]
    pack_file = manifest.root / "pack.yml"
    for section, names in (
        ("keyed_slots", manifest.keyed_slots),
        ("private_slots", manifest.private_slots),
        ("unmasked_slots", manifest.unmasked_slots),
    ):
        problems += [
            Problem(
                pack_file, f"{section}.{slot}", f"no such slot in the Rasa domain ({slots_file})"
            )
            for slot in sorted(names)
            if slot not in slots
        ]
    return problems


def _response_problems(manifest: Manifest, domain: RasaDomain) -> list[Problem]:
    languages = response_languages(domain)
    per_language = any(languages.values())
    problems: list[Problem] = []
    for response in (*BUILT_IN_RESPONSES, RASA_FALLBACK_RESPONSE):
        key = f"responses.{response}"
        why = (
            "Rasa's default fallback utters it"
            if response == RASA_FALLBACK_RESPONSE
            else "the service's actions utter it (bot/actions/)"
        )
        if response not in languages:
            problems.append(Problem(domain.file_of("responses"), key, f"missing: {why}"))
            continue
        missing = [lang for lang in manifest.languages if lang not in languages[response]]
        if per_language and missing:
            problems.append(
                Problem(
                    domain.file_of("responses", response),
                    key,
                    f"no text for {', '.join(missing)} (a variation with the condition "
                    f"{{type: slot, name: {LANGUAGE_SLOT}, value: LANG}})",
                )
            )
    return problems


def _nlu_problems(manifest: Manifest, domain: RasaDomain) -> list[Problem]:
    problems: list[Problem] = []
    for language in manifest.languages:
        path = manifest.rasa_data / "data" / "nlu" / f"{language}.yml"
        if not path.is_file():
            problems.append(Problem(path, "", f"missing: the {language} training examples"))
            continue
        try:
            intents = {intent for _, intent in load_examples(path)}
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            problems.append(Problem(path, "", f"cannot read the training examples: {exc}"))
            continue
        problems += [
            Problem(path, f"nlu.{intent}", f"no {language} example of this intent of the domain")
            for intent in sorted(domain.names("intents") - intents)
        ]
    return problems


def _rasa_file_problems(manifest: Manifest) -> list[Problem]:
    data = manifest.rasa_data
    needed = [(data / "config.yml", "the NLU pipeline and dialogue policies")]
    needed += [
        (data / "heldout" / f"{lang}.yml", f"the {lang} held-out examples `triage test` scores")
        for lang in manifest.languages
    ]
    needed.append((data / "tests", "the conversation tests `triage test` runs"))
    return [Problem(path, "", f"missing: {what}") for path, what in needed if not path.exists()]


def _phone_problems(manifest: Manifest) -> list[Problem]:
    path = manifest.phone_file
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return [Problem(path, "", f"cannot read the phone lines: {exc}")]
    doc = _mapping(doc)
    welcome = _mapping(doc.get("welcome"))
    problems = [
        Problem(path, f"welcome.{lang}", f"no welcome prompt in {lang}, a pack language")
        for lang in manifest.languages
        if not str(welcome.get(lang) or "").strip()
    ]
    if doc.get("default_language", "it") not in manifest.languages:
        problems.append(Problem(path, "default_language", "is not one of the pack's languages"))
    for number, spec in _mapping(doc.get("numbers")).items():
        if _mapping(spec).get("language") not in manifest.languages:
            problems.append(
                Problem(path, f"numbers.{number}.language", "is not one of the pack's languages")
            )
    return problems + file_problems(path, check_phone_lines, problems)
