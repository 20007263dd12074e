"""``triage domain check [PACK]`` and ``triage domain new NAME [--dir D]``.

Both run with the pack selection of the environment only (``PackSelection``), not the whole
settings: those need the selected pack to load, and a pack that does not is what the check is for.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

from bot.config.settings import PackSelection
from bot.packs.check import check_pack, summary
from bot.packs.loader import PackError, Problem, locate_pack, read_manifest
from bot.packs.scaffold import new_pack


def _shown(problem: Problem) -> Problem:
    """The problem with its file relative to the current directory, when it is under it."""
    try:
        return dataclasses.replace(problem, file=problem.file.relative_to(Path.cwd()))
    except ValueError:
        return problem


async def cmd_domain_check(selection: PackSelection, args: argparse.Namespace) -> int:
    """The pack as ``triage serve`` would load it with ``TRIAGE_DOMAIN=PACK``: with the files
    the environment puts in place of the pack's own."""
    spec = args.pack or selection.domain
    overrides = selection.overrides
    try:
        problems = await asyncio.to_thread(check_pack, spec, overrides)
    except PackError as exc:  # no pack there: nothing to check
        print(f"triage: {exc}", file=sys.stderr)
        return 2
    for line in overrides.described():
        print(f"checked with {line}")
    for problem in problems:
        print(_shown(problem))
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the pack {spec}")
        return 1
    print(summary(overrides.applied_to(read_manifest(locate_pack(spec)[0]))))
    return 0


async def cmd_domain_new(selection: PackSelection, args: argparse.Namespace) -> int:
    target = (await asyncio.to_thread(new_pack, args.name, Path(args.dir))).resolve()
    print(f"domain pack {args.name} created in {target}; next:")
    print(f"  TRIAGE_DOMAIN={target} triage domain check")
    print(f"  TRIAGE_DOMAIN={target} triage train && TRIAGE_DOMAIN={target} triage test")
    print(f"  and {target / 'README.md'} says how to connect the company's back office")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("domain", help="domain packs: check one, or start a new one")
    domain = p.add_subparsers(dest="domain_command", required=True, metavar="ACTION")
    c = domain.add_parser(
        "check", help="validate a pack: every problem with its file and key (exit 1 if any)"
    )
    c.add_argument(
        "pack",
        nargs="?",
        help="a pack directory, a pack name or an importable package (default: TRIAGE_DOMAIN)",
    )
    c.set_defaults(run=cmd_domain_check)
    n = domain.add_parser("new", help="create a pack that trains and passes `triage test`")
    n.add_argument("name", help="the pack's name: lower-case letters, digits and _")
    n.add_argument("--dir", default=".", help="where to create NAME/ (default: here)")
    n.set_defaults(run=cmd_domain_new)
