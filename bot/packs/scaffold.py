"""``triage domain new NAME``: a new domain pack, copied from the template in
``bot/packs/template/`` with the pack's name put in.

The template is a working pack (one flow, two queues, Italian and English, an HTTP back office
with no URL yet) that trains and passes ``triage test`` and ``triage domain check`` as it is.
Its files carry ``{{name}}`` and ``{{title}}`` where the pack's name goes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.errors import ConfigError
from bot.packs.loader import PACK_NAME

TEMPLATE = Path(__file__).resolve().parent / "template"
TEXT_SUFFIXES = frozenset({".py", ".yml", ".yaml", ".md", ".html", ".txt"})
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc")


def title_of(name: str) -> str:
    """How the pack's company is named to customers until someone writes its real name."""
    return name.replace("_", " ").title()


def new_pack(name: str, parent: Path) -> Path:
    """Create ``parent/name`` from the template; refuses a bad name or an existing path."""
    if not PACK_NAME.match(name):
        raise ConfigError(
            f"{name!r} cannot name a pack: lower-case letters, digits and _, starting a letter"
        )
    target = parent / name
    if target.exists():
        raise ConfigError(f"{target} exists already: choose another name or --dir")
    shutil.copytree(TEMPLATE, target, ignore=SKIPPED)
    values = {"{{name}}": name, "{{title}}": title_of(name)}
    for path in sorted(target.rglob("*")):
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            text = path.read_text(encoding="utf-8")
            for placeholder, value in values.items():
                text = text.replace(placeholder, value)
            path.write_text(text, encoding="utf-8")
    return target
