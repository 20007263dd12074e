"""Finding, reading and importing the selected domain pack (``bot/domain.py`` says what one is).

``locate_pack`` and ``read_manifest`` read only files (the settings use them for paths, and
``triage domain check`` to report problems); ``load_pack`` also imports the pack's Python code.
A manifest error names the file and the key.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from bot.backoffice.protocol import BackOffice, OperationSpec
from bot.domain import EmbeddedContext, FlowAction
from bot.errors import ConfigError

DOMAINS_DIR = Path(__file__).resolve().parent / "domains"
DEFAULT_DOMAIN = "energy"
MANIFEST = "pack.yml"
LANGUAGES = ("it", "en")
BACK_OFFICE_KINDS = ("embedded", "http")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_SLOT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class KeyedSlot:
    """A value a phone caller may key in when a form asks for ``slot``."""

    slot: str
    digits: int
    prefix: str = ""


@dataclass(frozen=True)
class BackOfficeConfig:
    kind: str  # embedded | http
    url: str = ""
    # a turn waits for the back office inside Rasa's time for the whole turn (10 s): a read
    # that hangs costs timeout_s x (1 + retries) plus the pauses
    timeout_s: float = 2.0
    retries: int = 1


@dataclass(frozen=True)
class Manifest:
    """``pack.yml``, validated, with its paths made absolute."""

    name: str
    root: Path
    languages: tuple[str, ...]
    rasa_data: Path
    back_office: BackOfficeConfig
    operations: Mapping[str, OperationSpec]
    keyed_slots: Mapping[str, KeyedSlot]
    private_slots: frozenset[str]

    @property
    def routing_file(self) -> Path:
        return self.root / "routing.yml"

    @property
    def phone_file(self) -> Path:
        return self.root / "phone.yml"


@dataclass(frozen=True)
class DomainPack:
    manifest: Manifest
    actions: Mapping[str, FlowAction]
    embedded_back_office: Callable[[EmbeddedContext], Awaitable[BackOffice]] | None

    @property
    def name(self) -> str:
        return self.manifest.name


def locate_pack(spec: str) -> tuple[Path, str | None]:
    """(pack directory, importable module name or None) for ``TRIAGE_DOMAIN``: a directory
    holding ``pack.yml``, a pack name under ``bot/domains/``, or an importable package."""
    spec = spec or DEFAULT_DOMAIN
    as_path = Path(spec).expanduser()
    if (as_path / MANIFEST).is_file():
        return as_path.resolve(), None
    if _NAME.match(spec) and (DOMAINS_DIR / spec / MANIFEST).is_file():
        return DOMAINS_DIR / spec, f"bot.domains.{spec}"
    try:
        module_spec = importlib.util.find_spec(spec)
    except (ImportError, ValueError):
        module_spec = None
    if module_spec is not None and module_spec.submodule_search_locations:
        root = Path(next(iter(module_spec.submodule_search_locations)))
        if (root / MANIFEST).is_file():
            return root, spec
    raise ConfigError(
        f"TRIAGE_DOMAIN={spec!r}: no domain pack there (a directory with {MANIFEST}, a pack "
        f"under {DOMAINS_DIR}, or an importable package holding {MANIFEST})"
    )


def _fail(path: Path, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {problem}")


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the pack manifest: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise _fail(path, "version", "must be 1")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(path, "name", "must be lower-case letters, digits and _, starting a letter")
    languages = doc.get("languages")
    if not isinstance(languages, list) or not languages or not set(languages) <= set(LANGUAGES):
        raise _fail(path, "languages", f"must be a non-empty list of {', '.join(LANGUAGES)}")
    # (whether it holds Rasa data is checked by `triage domain check` and by training: an
    # installation may name another place, TRIAGE_NLU_DATA_DIR)
    rasa_data = (root / str(doc.get("rasa_data", "nlu_data"))).resolve()
    return Manifest(
        name=name,
        root=root,
        languages=tuple(languages),
        rasa_data=rasa_data,
        back_office=_back_office(path, doc.get("back_office")),
        operations=_operations(path, doc.get("operations")),
        keyed_slots=_keyed_slots(path, doc.get("keyed_slots")),
        private_slots=_private_slots(path, doc.get("private_slots")),
    )


def _back_office(path: Path, spec: Any) -> BackOfficeConfig:
    if not isinstance(spec, dict):
        raise _fail(path, "back_office", "must say its kind: embedded or http")
    kind = spec.get("kind")
    if kind not in BACK_OFFICE_KINDS:
        raise _fail(path, "back_office.kind", f"must be one of {', '.join(BACK_OFFICE_KINDS)}")
    url = spec.get("url", "")
    if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
        raise _fail(path, "back_office.url", "must be an http:// or https:// URL")
    timeout_s = spec.get("timeout_s", 2.0)
    if (
        not isinstance(timeout_s, int | float)
        or isinstance(timeout_s, bool)
        or not (0.1 <= timeout_s <= 60)
    ):
        raise _fail(path, "back_office.timeout_s", "must be a number of seconds in 0.1..60")
    retries = spec.get("retries", 1)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 5:
        raise _fail(path, "back_office.retries", "must be an integer in 0..5")
    return BackOfficeConfig(str(kind), url, float(timeout_s), retries)


def _operations(path: Path, spec: Any) -> dict[str, OperationSpec]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise _fail(path, "operations", "must map operation names to {read_only: true|false}")
    found: dict[str, OperationSpec] = {}
    for name, body in spec.items():
        key = f"operations.{name}"
        if not isinstance(name, str) or not _SLOT.match(name):
            raise _fail(path, key, "an operation name is lower-case letters, digits and _")
        if not isinstance(body, dict) or not isinstance(body.get("read_only"), bool):
            raise _fail(path, key, "must say read_only: true or false")
        found[name] = OperationSpec(name, body["read_only"])
    return found


def _keyed_slots(path: Path, spec: Any) -> dict[str, KeyedSlot]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise _fail(path, "keyed_slots", "must map slot names to {digits: N, prefix: TEXT}")
    found: dict[str, KeyedSlot] = {}
    for slot, body in spec.items():
        key = f"keyed_slots.{slot}"
        if not isinstance(slot, str) or not _SLOT.match(slot) or not isinstance(body, dict):
            raise _fail(path, key, "must be a slot name mapped to {digits: N, prefix: TEXT}")
        digits, prefix = body.get("digits"), body.get("prefix", "")
        if not isinstance(digits, int) or isinstance(digits, bool) or not 1 <= digits <= 32:
            raise _fail(path, f"{key}.digits", "must be an integer in 1..32")
        if not isinstance(prefix, str) or len(prefix) > 8:
            raise _fail(path, f"{key}.prefix", "must be a short text")
        found[slot] = KeyedSlot(slot, digits, prefix)
    return found


def _private_slots(path: Path, spec: Any) -> frozenset[str]:
    if spec is None:
        return frozenset()
    if not isinstance(spec, list) or not all(isinstance(s, str) for s in spec):
        raise _fail(path, "private_slots", "must be a list of slot names")
    return frozenset(spec)


def _import(root: Path, module_name: str | None, pack_name: str) -> ModuleType:
    if module_name is not None:
        return importlib.import_module(module_name)
    # a pack directory outside the installed packages: imported as a package of its own, so
    # that its modules import each other relatively
    name = f"triage_domain_{pack_name}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(
        name, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"{root}: a domain pack needs an __init__.py")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_pack(spec: str) -> DomainPack:
    """Read and import the pack named by ``TRIAGE_DOMAIN``. ``embedded_back_office`` is an
    async factory: ``async def embedded_back_office(ctx: EmbeddedContext) -> BackOffice``."""
    root, module_name = locate_pack(spec)
    manifest = read_manifest(root)
    module = _import(root, module_name, manifest.name)
    actions = getattr(module, "ACTIONS", None)
    if not isinstance(actions, Mapping) or not all(
        isinstance(k, str) and callable(v) for k, v in actions.items()
    ):
        raise ConfigError(f"{root}/__init__.py: ACTIONS must map action names to functions")
    embedded = getattr(module, "embedded_back_office", None)
    if manifest.back_office.kind == "embedded" and not callable(embedded):
        raise ConfigError(
            f"{root / MANIFEST}: back_office.kind is embedded but {root}/__init__.py defines "
            "no embedded_back_office(ctx)"
        )
    return DomainPack(manifest, dict(actions), embedded if callable(embedded) else None)
