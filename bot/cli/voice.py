"""``triage models download|list``, ``triage say`` and ``triage call``: the voice pipeline from a
terminal, without a SIP peer."""

from __future__ import annotations

import argparse
import sys
import wave
from collections.abc import Callable
from pathlib import Path

from bot.config.settings import Settings
from bot.errors import ConfigError
from voice.asr.models import download_vosk_model, installed_models
from voice.errors import ModelDownloadError, VoiceError
from voice.tts.pyttsx3 import Pyttsx3Synthesizer


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _progress_printer(language: str) -> Callable[[int, int], None]:
    shown = [-1]

    def progress(done: int, total: int) -> None:
        percent = done * 100 // total if total else 0
        if percent // 10 != shown[0] // 10:
            shown[0] = percent
            print(f"  {language}: {percent}% of {_mib(total)}", file=sys.stderr)

    return progress


async def cmd_models_download(settings: Settings, args: argparse.Namespace) -> int:
    failed = 0
    for language in args.languages:
        progress = _progress_printer(language)

        try:
            path = await download_vosk_model(
                settings.models_dir,
                language,
                base_url=settings.vosk_model_site,
                progress=progress,
            )
        except ModelDownloadError as exc:
            print(f"triage: {language}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{language}: {path}")
    if failed and args.if_possible:
        print(
            "triage: the phone line still answers in languages without a model: "
            "callers use the keys (0 for a person)",
            file=sys.stderr,
        )
        return 0
    return 1 if failed else 0


async def cmd_models_list(settings: Settings, args: argparse.Namespace) -> int:
    models = installed_models(settings.models_dir)
    if not models:
        print("no speech models installed; `triage models download it en` fetches them")
    for m in models:
        size = _mib(m.size_bytes)
        print(f"{m.engine:8} {m.language:3} {m.source:10} {size:>10}  {m.name}  {m.path}")
    return 0


async def cmd_say(settings: Settings, args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    if not text.strip():
        raise ConfigError("triage say needs the text to speak")
    synthesizer = Pyttsx3Synthesizer()
    try:
        await synthesizer.wait_ready()
        prompt = await synthesizer.synthesize(text, args.lang)
    except (VoiceError, ValueError) as exc:
        raise ConfigError(f"cannot synthesise: {exc}") from None
    finally:
        await synthesizer.close()
    out = Path(args.output)
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(prompt.sample_rate_hz)
        wav.writeframes(prompt.pcm)
    print(f"{out}: {prompt.duration_ms} ms at {prompt.sample_rate_hz} Hz")
    return 0


async def cmd_call(settings: Settings, args: argparse.Namespace) -> int:
    from bot.channels.phone.brain import PhoneBrain
    from bot.channels.phone.engines import open_call_engines
    from bot.channels.phone.loopback import loopback_call, play_turns, read_wav_8k
    from bot.config.phone_lines import load_phone_lines
    from bot.runtime import open_runtime

    lines = load_phone_lines(settings.phone_file)
    try:
        turns = [read_wav_8k(Path(p)) for p in args.wav]
    except (OSError, ValueError, EOFError) as exc:  # wave.Error is an Error subclass of these
        raise ConfigError(f"cannot read the audio: {exc}") from None
    dialled = args.dialled or lines.number_for(args.lang)
    async with open_runtime(settings) as runtime:
        brain = PhoneBrain(runtime.desk, lines, runtime.pack.manifest.keyed_slots)
        async with (
            open_call_engines(
                brain,
                lines,
                models_dir=settings.models_dir,
                preferred_engine=args.engine or settings.asr_engine,
                endpoint_silence_ms=settings.asr_endpoint_silence_ms,
            ) as engines,
            loopback_call(engines, caller=args.caller, dialled=dialled) as (call, phone, _, ctl),
        ):
            await play_turns(call, phone, turns)
        print(f"triage call: conversation {call.conversation_id} (channel phone)")
        for reply in call.stats.replies:
            if reply.transcript is not None:
                print(f"caller> {reply.transcript}")
                print(f"        ({reply.intent} {reply.confidence:.2f} -> {reply.route})")
            for text in reply.say:
                print(f"bot>    {text}")
            if reply.digits is not None:
                print(f"        (keys accepted for {reply.digits.slot}, # to finish)")
            if reply.transfer is not None:
                print(
                    f"        (transfer: REFER to {reply.transfer.target_uri} with "
                    f"X-Handoff-Id {reply.transfer.handoff_id}; "
                    f"GET /api/handoffs/{reply.transfer.handoff_id})"
                )
        latencies = ", ".join(f"{ms:.0f}" for ms in call.stats.turn_latency_ms)
        print(f"        (call ended: {call.end_reason}; reply latency ms: {latencies or '-'})")
        if ctl.hung_up:
            print("        (the bot hung up)")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="speech models: download the official ones, or list them")
    models = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    d = models.add_parser("download", help="fetch and verify Vosk small models (it, en)")
    d.add_argument("languages", nargs="+", choices=("it", "en"), metavar="LANG")
    d.add_argument(
        "--if-possible",
        action="store_true",
        help="exit 0 when offline (make run uses it): the line answers with keys only",
    )
    d.set_defaults(run=cmd_models_download)
    ls = models.add_parser("list", help="the installed speech models")
    ls.set_defaults(run=cmd_models_list)

    s = sub.add_parser("say", help="synthesise TEXT as the phone line would, into a WAV file")
    s.add_argument("text", nargs="+")
    s.add_argument("--lang", choices=("it", "en"), default="it")
    s.add_argument("-o", "--output", default="say.wav", help="WAV file to write (8 kHz mono)")
    s.set_defaults(run=cmd_say)

    c = sub.add_parser(
        "call", help="run WAV files (one per caller turn) through the whole voice pipeline"
    )
    c.add_argument("wav", nargs="+", help="16-bit PCM WAV files, any rate, one per turn")
    c.add_argument("--lang", choices=("it", "en"), default="it", help="the line's language")
    c.add_argument("--dialled", help="the dialled number (default: a number of --lang)")
    c.add_argument("--caller", help="the caller's number (a caller-id lookup, unverified)")
    c.add_argument("--engine", choices=("vosk", "whisper"), help="preferred recogniser")
    c.set_defaults(run=cmd_call)
