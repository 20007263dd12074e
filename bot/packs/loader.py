"""Finding, reading and importing the selected domain pack (``bot/domain.py`` says what one is).

``locate_pack`` and ``read_manifest`` read only files (the settings use them for paths);
``load_pack`` also imports the pack's Python code. A problem names the file and the key: these
raise a ``PackError`` with the first, and ``check_manifest`` and ``check_pack_code`` return them
all, for ``triage domain check`` (``bot/packs/check.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from bot.backoffice.protocol import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, BackOffice, OperationSpec
from bot.config.problems import ConfigProblem
from bot.domain import EmbeddedContext, FlowAction
from bot.errors import ConfigError

DOMAINS_DIR = Path(__file__).resolve().parents[1] / "domains"
DEFAULT_DOMAIN = "energy"
MANIFEST = "pack.yml"
LANGUAGES = ("it", "en")
BACK_OFFICE_KINDS = ("embedded", "http")
PACK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
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
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES


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
    # slots the customer fills with personal data on purpose: their answer reaches Rasa unmasked
    unmasked_slots: frozenset[str]
    routing_file: Path
    phone_file: Path


@dataclass(frozen=True)
class FileOverrides:
    """The files of a pack an installation replaces (read from the environment by
    ``bot/config/settings.py``); None keeps the pack's own."""

    rasa_data: Path | None = None  # TRIAGE_NLU_DATA_DIR
    routing_file: Path | None = None  # TRIAGE_ROUTING_FILE
    phone_file: Path | None = None  # TRIAGE_PHONE_FILE

    def applied_to(self, manifest: Manifest) -> Manifest:
        """The manifest with the files the service runs with, as ``triage serve`` loads them."""
        return replace(
            manifest,
            rasa_data=self.rasa_data or manifest.rasa_data,
            routing_file=self.routing_file or manifest.routing_file,
            phone_file=self.phone_file or manifest.phone_file,
        )

    def described(self) -> list[str]:
        """One line per file replaced: the variable, its value and what it replaces."""
        replaced = (
            ("TRIAGE_NLU_DATA_DIR", self.rasa_data, "Rasa data"),
            ("TRIAGE_ROUTING_FILE", self.routing_file, "routing.yml"),
            ("TRIAGE_PHONE_FILE", self.phone_file, "phone.yml"),
        )
        return [
            f"{variable}={path} in place of the pack's {what}"
            for variable, path, what in replaced
            if path is not None
        ]


class PackError(ConfigError):
    """The domain pack cannot be used: there is none where its name points, its ``pack.yml`` is
    invalid, or its Python does not import. ``pack`` names it: what was given, or its directory."""

    def __init__(self, pack: str, problem: str) -> None:
        super().__init__(f"domain pack {pack}: {problem}")
        self.pack = pack
        self.problem = problem


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
    if PACK_NAME.match(spec) and (DOMAINS_DIR / spec / MANIFEST).is_file():
        return DOMAINS_DIR / spec, f"bot.domains.{spec}"
    try:
        module_spec = importlib.util.find_spec(spec)
    except (ImportError, ValueError):
        module_spec = None
    if module_spec is not None and module_spec.submodule_search_locations:
        root = Path(next(iter(module_spec.submodule_search_locations)))
        if (root / MANIFEST).is_file():
            return root, spec
    raise PackError(
        spec,
        f"no domain pack there: not a directory with {MANIFEST}, a pack under {DOMAINS_DIR}, "
        f"or an importable package holding {MANIFEST}",
    )


@dataclass(frozen=True)
class Problem:
    """Something wrong in a pack: the file, the key in it (dotted), and what is wrong."""

    file: Path
    key: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}: {self.key}: {self.message}"
            if self.key
            else f"{self.file}: {self.message}"
        )


def file_problems(
    path: Path,
    check: Callable[[Path], tuple[object, Sequence[ConfigProblem]]],
    found: Sequence[Problem] = (),
) -> list[Problem]:
    """Every problem a loader's own validation (``check_routing``, ``check_phone_lines``) finds
    in ``path``, less those a problem ``found`` already says more precisely."""
    _, in_file = check(path)
    return uncovered((Problem(path, p.key, p.message) for p in in_file), found)


def uncovered(problems: Iterable[Problem], found: Sequence[Problem]) -> list[Problem]:
    """``problems`` less those that a problem ``found`` already says more precisely: one about
    the whole file, the same key, or a key under it."""
    return [
        problem
        for problem in problems
        if not any(
            p.file == problem.file
            and (not p.key or p.key == problem.key or p.key.startswith(problem.key + "."))
            for p in found
        )
    ]


def _first_of(problems: Sequence[Problem]) -> str:
    more = len(problems) - 1
    return f"{problems[0]}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def read_manifest(root: Path) -> Manifest:
    """``pack.yml`` of the pack at ``root``; a ``PackError`` names the first problem."""
    manifest, problems = check_manifest(root)
    if problems or manifest is None:
        raise PackError(str(root), _first_of(problems))
    return manifest


def check_manifest(root: Path) -> tuple[Manifest | None, list[Problem]]:
    """``pack.yml`` and every problem in it. The manifest is there whenever the file is a
    mapping, with defaults in place of the wrong values, so that a check can go on."""
    path = root / MANIFEST
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return None, [Problem(path, "", f"cannot read the pack manifest: {exc}")]
    if not isinstance(doc, dict):
        return None, [Problem(path, "version", "must be 1")]
    problems: list[Problem] = []
    if doc.get("version") != 1:
        problems.append(Problem(path, "version", "must be 1"))
    name = doc.get("name")
    if not isinstance(name, str) or not PACK_NAME.match(name):
        problems.append(
            Problem(path, "name", "must be lower-case letters, digits and _, starting a letter")
        )
        name = root.name
    languages = doc.get("languages")
    if not isinstance(languages, list) or not languages or not set(languages) <= set(LANGUAGES):
        problems.append(
            Problem(path, "languages", f"must be a non-empty list of {', '.join(LANGUAGES)}")
        )
        languages = [lang for lang in LANGUAGES if lang in (languages or ())] or list(LANGUAGES)
    # (whether it holds Rasa data is checked by `triage domain check` and by training: an
    # installation may name another place, TRIAGE_NLU_DATA_DIR)
    rasa_data = (root / str(doc.get("rasa_data", "nlu_data"))).resolve()
    manifest = Manifest(
        name=str(name),
        root=root,
        languages=tuple(languages),
        rasa_data=rasa_data,
        back_office=_back_office(path, doc.get("back_office"), problems),
        operations=_operations(path, doc.get("operations"), problems),
        keyed_slots=_keyed_slots(path, doc.get("keyed_slots"), problems),
        private_slots=_slot_names(path, "private_slots", doc.get("private_slots"), problems),
        unmasked_slots=_slot_names(path, "unmasked_slots", doc.get("unmasked_slots"), problems),
        routing_file=root / "routing.yml",
        phone_file=root / "phone.yml",
    )
    return manifest, problems


def _back_office(path: Path, spec: Any, problems: list[Problem]) -> BackOfficeConfig:
    if not isinstance(spec, dict):
        problems.append(Problem(path, "back_office", "must say its kind: embedded or http"))
        return BackOfficeConfig("embedded")
    kind = spec.get("kind")
    if kind not in BACK_OFFICE_KINDS:
        problems.append(
            Problem(path, "back_office.kind", f"must be one of {', '.join(BACK_OFFICE_KINDS)}")
        )
        kind = "embedded"
    url = spec.get("url", "")
    if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
        problems.append(Problem(path, "back_office.url", "must be an http:// or https:// URL"))
        url = ""
    timeout_s = spec.get("timeout_s", DEFAULT_TIMEOUT_S)
    if (
        not isinstance(timeout_s, int | float)
        or isinstance(timeout_s, bool)
        or not (0.1 <= timeout_s <= 60)
    ):
        problems.append(
            Problem(path, "back_office.timeout_s", "must be a number of seconds in 0.1..60")
        )
        timeout_s = DEFAULT_TIMEOUT_S
    retries = spec.get("retries", DEFAULT_RETRIES)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 5:
        problems.append(Problem(path, "back_office.retries", "must be an integer in 0..5"))
        retries = DEFAULT_RETRIES
    return BackOfficeConfig(str(kind), url, float(timeout_s), retries)


def _operations(path: Path, spec: Any, problems: list[Problem]) -> dict[str, OperationSpec]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        problems.append(
            Problem(path, "operations", "must map operation names to {read_only: true|false}")
        )
        return {}
    found: dict[str, OperationSpec] = {}
    for name, body in spec.items():
        key = f"operations.{name}"
        if not isinstance(name, str) or not _SLOT.match(name):
            problems.append(
                Problem(path, key, "an operation name is lower-case letters, digits and _")
            )
        elif not isinstance(body, dict) or not isinstance(body.get("read_only"), bool):
            problems.append(Problem(path, key, "must say read_only: true or false"))
        else:
            found[name] = OperationSpec(name, body["read_only"])
    return found


def _keyed_slots(path: Path, spec: Any, problems: list[Problem]) -> dict[str, KeyedSlot]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        problems.append(
            Problem(path, "keyed_slots", "must map slot names to {digits: N, prefix: TEXT}")
        )
        return {}
    found: dict[str, KeyedSlot] = {}
    for slot, body in spec.items():
        key = f"keyed_slots.{slot}"
        if not isinstance(slot, str) or not _SLOT.match(slot) or not isinstance(body, dict):
            problems.append(
                Problem(path, key, "must be a slot name mapped to {digits: N, prefix: TEXT}")
            )
            continue
        digits, prefix = body.get("digits"), body.get("prefix", "")
        if not isinstance(digits, int) or isinstance(digits, bool) or not 1 <= digits <= 32:
            problems.append(Problem(path, f"{key}.digits", "must be an integer in 1..32"))
            digits = None
        if not isinstance(prefix, str) or len(prefix) > 8:
            problems.append(Problem(path, f"{key}.prefix", "must be a short text"))
            prefix = None
        if digits is not None and prefix is not None:
            found[slot] = KeyedSlot(slot, digits, prefix)
    return found


def _slot_names(path: Path, key: str, spec: Any, problems: list[Problem]) -> frozenset[str]:
    if spec is None:
        return frozenset()
    if not isinstance(spec, list) or not all(isinstance(s, str) for s in spec):
        problems.append(Problem(path, key, "must be a list of slot names"))
        return frozenset()
    return frozenset(spec)


def import_pack_code(root: Path, module_name: str | None, package: str) -> ModuleType:
    """The pack's Python: the importable module ``module_name``, or else the directory ``root``
    imported as the package ``package`` (once: it stays in ``sys.modules``)."""
    if module_name is not None:
        return importlib.import_module(module_name)
    # a pack directory outside the installed packages: imported as a package of its own, so
    # that its modules import each other relatively
    if package in sys.modules:
        return sys.modules[package]
    module_spec = importlib.util.spec_from_file_location(
        package, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"{root}: a domain pack needs an __init__.py")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[package] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[package]
        raise
    return module


def check_pack_code(manifest: Manifest, module: ModuleType) -> tuple[DomainPack, list[Problem]]:
    """The pack's declarations in its imported code, and every problem with them."""
    problems: list[Problem] = []
    actions = getattr(module, "ACTIONS", None)
    if not isinstance(actions, Mapping) or not all(
        isinstance(k, str) and callable(v) for k, v in actions.items()
    ):
        init = manifest.root / "__init__.py"
        problems.append(Problem(init, "ACTIONS", "must map action names to functions"))
        actions = {}
    embedded = getattr(module, "embedded_back_office", None)
    if manifest.back_office.kind == "embedded" and not callable(embedded):
        problems.append(
            Problem(
                manifest.root / MANIFEST,
                "back_office.kind",
                f"is embedded but {manifest.root}/__init__.py defines no embedded_back_office(ctx)",
            )
        )
    pack = DomainPack(manifest, dict(actions), embedded if callable(embedded) else None)
    return pack, problems


def import_failure(exc: BaseException, root: Path) -> str:
    """What importing the pack at ``root`` raised, and where in the pack's files."""
    where: tuple[str, int | None] | None = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if Path(frame.f_code.co_filename).is_relative_to(root):
            where = (frame.f_code.co_filename, line)  # the innermost frame of the pack's own
    if isinstance(exc, SyntaxError) and exc.filename:
        where = (exc.filename, exc.lineno)  # the file that does not compile, not its importer
    # a SyntaxError's own text repeats where it is
    text = f"{type(exc).__name__}: {exc.msg if isinstance(exc, SyntaxError) else exc}"
    return f"{text} ({where[0]}, line {where[1]})" if where else text


def load_pack(spec: str) -> DomainPack:
    """Read and import the pack named by ``TRIAGE_DOMAIN``; a ``PackError`` says why it cannot
    be used. ``embedded_back_office`` is an async factory:
    ``async def embedded_back_office(ctx: EmbeddedContext) -> BackOffice``."""
    root, module_name = locate_pack(spec)
    manifest = read_manifest(root)
    try:
        module = import_pack_code(root, module_name, f"triage_domain_{manifest.name}")
    # whatever the pack's own code raises on import is the pack's problem, not the service's
    except Exception as exc:
        raise PackError(
            str(root), f"its Python does not import: {import_failure(exc, root)}"
        ) from exc
    pack, problems = check_pack_code(manifest, module)
    if problems:
        raise PackError(str(root), _first_of(problems))
    return pack
