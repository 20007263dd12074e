"""A pack's Python, for ``triage domain check``: read statically (``ast``) for what it imports
and which operations it calls, then imported for its ``ACTIONS``.

A pack imports only ``bot.domain`` of the service's modules (the interface it is written
against); anything else of ``bot`` or ``voice`` would tie it to the service's insides.
"""

from __future__ import annotations

import ast
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

from bot.packs.loader import Manifest, Problem, check_pack_code, import_failure, import_pack_code

INTERFACE = "bot.domain"
SERVICE_PACKAGES = ("bot", "voice")
SKIPPED_DIRS = frozenset({"__pycache__", "nlu_data"})


def python_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts[:-1]
        if not any(part in SKIPPED_DIRS or part.startswith(".") for part in parts):
            yield path


def _parse(path: Path) -> tuple[ast.Module | None, list[Problem]]:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), []
    except (OSError, SyntaxError, ValueError) as exc:
        return None, [Problem(path, "", f"cannot parse: {exc}")]


def _imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, module) for each absolute import; ``from bot import domain`` is ``bot.domain``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in SERVICE_PACKAGES:
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"
            else:
                yield node.lineno, node.module


def _is_service_module(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in SERVICE_PACKAGES)


def _called_operations(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, name) of each ``<ctx>.call("name", ...)`` with a literal name."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "call"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def source_problems(root: Path, operations: Mapping[str, object] | None) -> list[Problem]:
    """Imports of the service beyond ``bot.domain``; operations called but not declared in
    ``operations`` (None: unknown, not checked) in the pack at ``root``."""
    problems: list[Problem] = []
    for path in python_files(root):
        tree, found = _parse(path)
        problems += found
        if tree is None:
            continue
        for line, module in _imported_modules(tree):
            if _is_service_module(module) and module != INTERFACE:
                problems.append(
                    Problem(
                        path,
                        f"line {line}",
                        f"imports {module}: a pack imports only {INTERFACE} of the service",
                    )
                )
        if operations is None:
            continue
        for line, operation in _called_operations(tree):
            if operation not in operations:
                problems.append(
                    Problem(
                        path,
                        f"line {line}",
                        f"calls the operation {operation!r}, which pack.yml does not declare "
                        "under operations",
                    )
                )
    return problems


def _forget(package: str) -> None:
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


def pack_actions(
    manifest: Manifest, module_name: str | None, built_in: Mapping[str, object]
) -> tuple[frozenset[str] | None, list[Problem]]:
    """The names in the pack's ``ACTIONS`` (None when its code does not import), and the
    problems with its code's declarations. A pack directory is imported afresh each time, under
    a name of its own, so that two packs of the same name (a copy) never share modules."""
    package = f"triage_domain_check_{uuid.uuid4().hex[:12]}"
    init = manifest.root / "__init__.py"
    try:
        module = import_pack_code(manifest.root, module_name, package)
    # whatever the pack's own code raises on import is the problem to report
    except Exception as exc:
        why = import_failure(exc, manifest.root)
        return None, [Problem(init, "", f"the pack's Python does not import: {why}")]
    finally:
        _forget(package)
    pack, problems = check_pack_code(manifest, module)
    for name in sorted(set(pack.actions) & set(built_in)):
        problems.append(
            Problem(init, f"ACTIONS.{name}", "is one of the service's own actions: rename it")
        )
    return frozenset(pack.actions), problems
