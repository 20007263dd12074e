"""One invalid entry of a configuration file, and the error that lists every one of a file.

The loaders of ``routing.yml`` and ``phone.yml`` collect every problem before they refuse a
file, so that ``triage serve`` and ``triage domain check`` name them all, not the first only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError


@dataclass(frozen=True)
class ConfigProblem:
    """Its dotted key (``queues.billing.hours.mon``; empty when the file cannot be read at all)
    and what is wrong with it."""

    key: str
    message: str


def refusal(path: Path, problems: Sequence[ConfigProblem]) -> ConfigError:
    """The error a loader raises for ``path``: one line per problem, each with its key."""
    return ConfigError(
        "\n".join(
            f"{path}: {p.key}: {p.message}" if p.key else f"{path}: {p.message}" for p in problems
        )
    )
