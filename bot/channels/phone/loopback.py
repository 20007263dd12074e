"""A call without a SIP peer: the caller's side is a second RTP session on loopback that plays
WAV files, one per turn, into the real call loop (``triage call``, the voice benchmark).

Everything after the caller's audio is what a SIP call runs: RTP and its jitter buffer, G.711,
the recogniser, the brain (Rasa, flows, queues, the store), the synthesiser and the RTP sender.
A transfer is reported, not sent (there is no PBX): it counts as accepted.
"""

from __future__ import annotations

import asyncio
import uuid
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voice.audio import TELEPHONE_RATE_HZ, resample
from voice.brain import CallContext, Transfer
from voice.call.call import Call
from voice.call.settings import CallEngines
from voice.rtp.session import RtpSession

LOOPBACK_RTP_PORTS = (46000, 46998)  # away from the SIP bridge's range
TURN_TIMEOUT_S = 60.0
TAIL_SILENCE_MS = 1200  # after a turn's audio: the endpointer needs trailing silence


@dataclass
class LoopbackControl:
    """No PBX: a transfer is recorded and accepted, a hang-up recorded."""

    transfers: list[Transfer] = field(default_factory=list)
    hung_up: bool = False

    async def transfer(self, transfer: Transfer) -> bool:
        self.transfers.append(transfer)
        return True

    async def hang_up(self) -> None:
        self.hung_up = True


def read_wav_8k(path: Path) -> bytes:
    """A WAV file (16-bit PCM, mono or stereo, any rate) as 8 kHz mono PCM."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        frames = wav.readframes(wav.getnframes())
        channels, rate = wav.getnchannels(), wav.getframerate()
    if channels == 2:
        stereo = np.frombuffer(frames, dtype="<i2").reshape(-1, 2).astype(np.int32)
        frames = (stereo.sum(axis=1) // 2).astype("<i2").tobytes()
    elif channels != 1:
        raise ValueError(f"{path}: {channels} channels; mono or stereo only")
    return resample(frames, rate, TELEPHONE_RATE_HZ) if rate != TELEPHONE_RATE_HZ else frames


@asynccontextmanager
async def loopback_call(
    engines: CallEngines, *, caller: str | None = None, dialled: str | None = None
) -> AsyncIterator[tuple[Call, RtpSession, asyncio.Task[str], LoopbackControl]]:
    low, high = LOOPBACK_RTP_PORTS
    bot = await RtpSession.open(rtp_port_min=low, rtp_port_max=high, host="127.0.0.1")
    phone = await RtpSession.open(
        rtp_port_min=low, rtp_port_max=high, host="127.0.0.1", remote=bot.local_address
    )
    bot.set_remote(phone.local_address)
    control = LoopbackControl()
    call = Call(CallContext(uuid.uuid4().hex, caller, dialled), bot, engines, control)
    running = asyncio.create_task(call.run(), name="loopback-call")
    try:
        yield call, phone, running, control
    finally:
        call.peer_hung_up()
        await asyncio.wait_for(running, TURN_TIMEOUT_S)
        await bot.close()
        await phone.close()


async def play_turns(call: Call, phone: RtpSession, turns: Sequence[bytes]) -> None:
    """Wait for the greeting, then play each turn's audio once the bot has answered the last."""
    await asyncio.wait_for(call.wait_replies(1), TURN_TIMEOUT_S)
    for index, pcm in enumerate(turns, start=2):
        if call.end_reason is not None:
            return
        tail = bytes(TAIL_SILENCE_MS * TELEPHONE_RATE_HZ // 1000 * 2)
        await phone.play(pcm + tail).wait()
        await asyncio.wait_for(call.wait_replies(index), TURN_TIMEOUT_S)
