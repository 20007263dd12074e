"""A pack's Rasa domain as ``rasa train --domain DIR`` sees it: every YAML file under the
directory merged, here with the file that declares each name, so a problem can point at it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.packs.loader import Problem

# The sections whose entries are named: a list of names (or of one-key mappings) or a mapping.
SECTIONS = ("intents", "entities", "slots", "forms", "actions", "responses")
LANGUAGE_SLOT = "language"


@dataclass
class RasaDomain:
    directory: Path
    files: list[Path] = field(default_factory=list)
    entries: dict[str, dict[str, Any]] = field(default_factory=lambda: {s: {} for s in SECTIONS})
    origin: dict[tuple[str, str], Path] = field(default_factory=dict)

    def names(self, section: str) -> set[str]:
        return set(self.entries[section])

    def file_of(self, section: str, name: str | None = None) -> Path:
        """The file that declares ``name`` in ``section``; else the first that has the section
        (where a missing entry belongs); else the first file."""
        if name is not None and (section, name) in self.origin:
            return self.origin[(section, name)]
        holders = [path for (sec, _), path in self.origin.items() if sec == section]
        return holders[0] if holders else (self.files[0] if self.files else self.directory)


def read_rasa_domain(directory: Path) -> tuple[RasaDomain, list[Problem]]:
    domain = RasaDomain(directory)
    if not directory.is_dir():
        return domain, [Problem(directory, "", "the Rasa domain directory is missing")]
    problems: list[Problem] = []
    for path in sorted(directory.rglob("*.yml")) + sorted(directory.rglob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            problems.append(Problem(path, "", f"cannot read this part of the Rasa domain: {exc}"))
            continue
        if not isinstance(doc, dict):
            problems.append(Problem(path, "", "a Rasa domain file must be a mapping"))
            continue
        domain.files.append(path)
        for section in SECTIONS:
            for name, body in _named(doc.get(section)):
                domain.entries[section].setdefault(name, body)
                domain.origin.setdefault((section, name), path)
    if not domain.files and not problems:
        problems.append(Problem(directory, "", "the Rasa domain directory holds no YAML file"))
    return domain, problems


def _named(spec: Any) -> list[tuple[str, Any]]:
    if isinstance(spec, dict):
        return [(str(name), body) for name, body in spec.items()]
    if isinstance(spec, list):
        found: list[tuple[str, Any]] = []
        for item in spec:
            if isinstance(item, str):
                found.append((item, None))
            elif isinstance(item, dict) and len(item) == 1:
                name, body = next(iter(item.items()))
                found.append((str(name), body))
        return found
    return []


def response_language(variation: Any) -> str | None:
    """The language a response variation is for (its condition on the ``language`` slot)."""
    if not isinstance(variation, dict):
        return None
    for condition in variation.get("condition") or []:
        if (
            isinstance(condition, dict)
            and condition.get("type") == "slot"
            and condition.get("name") == LANGUAGE_SLOT
        ):
            return str(condition.get("value"))
    return None


def response_languages(domain: RasaDomain) -> dict[str, set[str]]:
    """Each response's languages; an empty set for a response with no language condition."""
    return {
        name: {lang for v in (body or []) if (lang := response_language(v)) is not None}
        for name, body in domain.entries["responses"].items()
    }
