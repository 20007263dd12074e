"""What a call is given: its timings and the engines every call shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from voice.asr.base import Recognizer
from voice.brain import Brain
from voice.tts.base import Synthesizer


@dataclass(frozen=True)
class CallSettings:
    no_input_timeout_s: float = 7.0
    barge_in_min_speech_ms: int = 400
    inter_digit_timeout_s: float = 4.0


@dataclass(frozen=True)
class CallEngines:
    """What every call shares: the brain, the synthesiser, recognisers per language, timings."""

    brain: Brain
    synthesizer: Synthesizer
    recognizer_for: Callable[[str], Recognizer]  # a new recogniser for one call, by language
    settings: CallSettings = field(default_factory=CallSettings)
