"""The phone lines: dialled number -> language and welcome, and the call loop's timings.

Read once from ``config/phone.yml`` (``TRIAGE_PHONE_FILE``); a bad value stops start-up with a
message naming the key and the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.errors import ConfigError

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


def _fail(path: Path, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {problem}")


def _number(path: Path, key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _fail(path, key, f"must be a number in {lo}..{hi}")
    return float(value)


def load_phone_lines(path: Path) -> PhoneLines:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the phone lines: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise _fail(path, "version", "must be 1")
    default = doc.get("default_language", "it")
    if default not in LANGUAGES:
        raise _fail(path, "default_language", f"must be one of {LANGUAGES}")
    welcome = doc.get("welcome") or {}
    if not isinstance(welcome, dict) or set(welcome) != set(LANGUAGES):
        raise _fail(path, "welcome", f"needs a text for each of {LANGUAGES}")
    numbers: dict[str, str] = {}
    for raw, spec in (doc.get("numbers") or {}).items():
        number = normalise_number(str(raw))
        if not _NUMBER.fullmatch(number):
            raise _fail(path, f"numbers.{raw}", "is not a phone number")
        language = spec.get("language") if isinstance(spec, dict) else None
        if language not in LANGUAGES:
            raise _fail(path, f"numbers.{raw}.language", f"must be one of {LANGUAGES}")
        numbers[number] = language
    country_code = str(doc.get("country_code", "39"))
    if not country_code.isdigit() or not 1 <= len(country_code) <= 3:
        raise _fail(path, "country_code", "must be 1 to 3 digits")
    call = doc.get("call") or {}
    if not isinstance(call, dict):
        raise _fail(path, "call", "must be a mapping")
    unknown = set(call) - set(CallTimings.__dataclass_fields__)
    if unknown:
        raise _fail(path, f"call.{sorted(unknown)[0]}", "is not a known setting")
    base = CallTimings()
    timings = CallTimings(
        no_input_timeout_s=_number(
            path,
            "call.no_input_timeout_s",
            call.get("no_input_timeout_s", base.no_input_timeout_s),
            1,
            120,
        ),
        max_reprompts=int(
            _number(
                path, "call.max_reprompts", call.get("max_reprompts", base.max_reprompts), 0, 10
            )
        ),
        barge_in_min_speech_ms=int(
            _number(
                path,
                "call.barge_in_min_speech_ms",
                call.get("barge_in_min_speech_ms", base.barge_in_min_speech_ms),
                0,
                5000,
            )
        ),
        inter_digit_timeout_s=_number(
            path,
            "call.inter_digit_timeout_s",
            call.get("inter_digit_timeout_s", base.inter_digit_timeout_s),
            0.5,
            60,
        ),
        recent_chat_window_h=_number(
            path,
            "call.recent_chat_window_h",
            call.get("recent_chat_window_h", base.recent_chat_window_h),
            0,
            24 * 30,
        ),
    )
    return PhoneLines(
        default_language=default,
        welcome={k: " ".join(str(v).split()) for k, v in welcome.items()},
        numbers=numbers,
        timings=timings,
        country_code=country_code,
    )
