"""The phone lines: dialled number -> language and welcome, and the call loop's timings.

Read once from the pack's ``phone.yml`` (``TRIAGE_PHONE_FILE``); bad values stop start-up with a
message naming the file and the key of every one (``triage domain check`` lists them too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.config.problems import ConfigProblem, refusal

LANGUAGES = ("it", "en")
_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")


@dataclass(frozen=True)
class CallTimings:
    no_input_timeout_s: float = 7.0
    max_reprompts: int = 2
    barge_in_min_speech_ms: int = 400
    inter_digit_timeout_s: float = 4.0
    recent_chat_window_h: float = 24.0


@dataclass(frozen=True)
class PhoneLines:
    default_language: str
    welcome: dict[str, str]
    numbers: dict[str, str]  # normalised dialled number -> language
    timings: CallTimings
    country_code: str = "39"

    def language_for(self, dialled: str | None) -> str:
        if dialled:
            return self.numbers.get(normalise_number(dialled), self.default_language)
        return self.default_language

    def number_for(self, language: str) -> str | None:
        """A dialled number greeted in ``language`` (the first configured), if any."""
        return next((n for n, lang in self.numbers.items() if lang == language), None)

    def international(self, caller: str) -> str:
        """A caller's number as customers' numbers are stored: + and the country code."""
        number = normalise_number(caller)
        if number.startswith("+"):
            return number
        return "+" + self.country_code + number


def normalise_number(raw: str) -> str:
    """Digits with an optional leading +; ``00`` becomes ``+``. Separators are dropped."""
    digits = "".join(ch for ch in raw.strip() if ch.isdigit() or ch in "+*#")
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    return digits


def _number(
    key: str, value: Any, lo: float, hi: float, default: float, problems: list[ConfigProblem]
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        problems.append(ConfigProblem(key, f"must be a number in {lo}..{hi}"))
        return default
    return float(value)


def load_phone_lines(path: Path) -> PhoneLines:
    """The phone lines in ``path``; a ``ConfigError`` names the key of every problem."""
    lines, problems = check_phone_lines(path)
    if lines is None:
        raise refusal(path, problems)
    return lines


def check_phone_lines(path: Path) -> tuple[PhoneLines | None, list[ConfigProblem]]:
    """The phone lines in ``path`` and every problem in them; None if there is any."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return None, [ConfigProblem("", f"cannot read the phone lines: {exc}")]
    if not isinstance(doc, dict):
        return None, [ConfigProblem("", "must be a mapping")]
    problems: list[ConfigProblem] = []
    if doc.get("version") != 1:
        problems.append(ConfigProblem("version", "must be 1"))
    default = doc.get("default_language", "it")
    if default not in LANGUAGES:
        problems.append(ConfigProblem("default_language", f"must be one of {LANGUAGES}"))
    welcome = doc.get("welcome") or {}
    if not isinstance(welcome, dict) or set(welcome) != set(LANGUAGES):
        problems.append(ConfigProblem("welcome", f"needs a text for each of {LANGUAGES}"))
        welcome = {}
    numbers: dict[str, str] = {}
    declared = doc.get("numbers") or {}
    if not isinstance(declared, dict):
        problems.append(ConfigProblem("numbers", "must be a mapping"))
        declared = {}
    for raw, spec in declared.items():
        number = normalise_number(str(raw))
        language = spec.get("language") if isinstance(spec, dict) else None
        if not _NUMBER.fullmatch(number):
            problems.append(ConfigProblem(f"numbers.{raw}", "is not a phone number"))
        elif language not in LANGUAGES:
            problems.append(
                ConfigProblem(f"numbers.{raw}.language", f"must be one of {LANGUAGES}")
            )
        else:
            numbers[number] = language
    country_code = str(doc.get("country_code", "39"))
    if not country_code.isdigit() or not 1 <= len(country_code) <= 3:
        problems.append(ConfigProblem("country_code", "must be 1 to 3 digits"))
    call = doc.get("call") or {}
    if not isinstance(call, dict):
        problems.append(ConfigProblem("call", "must be a mapping"))
        call = {}
    for unknown in sorted(set(call) - set(CallTimings.__dataclass_fields__)):
        problems.append(ConfigProblem(f"call.{unknown}", "is not a known setting"))
    base = CallTimings()

    def timing(name: str, lo: float, hi: float) -> float:
        default = float(getattr(base, name))
        return _number(f"call.{name}", call.get(name, default), lo, hi, default, problems)

    timings = CallTimings(
        no_input_timeout_s=timing("no_input_timeout_s", 1, 120),
        max_reprompts=int(timing("max_reprompts", 0, 10)),
        barge_in_min_speech_ms=int(timing("barge_in_min_speech_ms", 0, 5000)),
        inter_digit_timeout_s=timing("inter_digit_timeout_s", 0.5, 60),
        recent_chat_window_h=timing("recent_chat_window_h", 0, 24 * 30),
    )
    if problems:
        return None, problems
    return PhoneLines(
        default_language=default,
        welcome={k: " ".join(str(v).split()) for k, v in welcome.items()},
        numbers=numbers,
        timings=timings,
        country_code=country_code,
    ), []
