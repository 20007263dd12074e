"""The call loop over real RTP on loopback (a second ``RtpSession`` plays the caller's phone),
with fakes at the engine seams: a scripted recogniser, a tone synthesiser, a scripted brain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypedDict

from voice.asr.base import AsrEvent, AsrFinal, AsrPartial, SpeechStarted
from voice.asr.fake import FakeRecognizer
from voice.brain import BrainReply, CallContext, DigitRequest, Transfer
from voice.call.call import Call
from voice.call.listening import is_backchannel
from voice.call.settings import CallEngines, CallSettings
from voice.fake_brain import FakeBrain
from voice.rtp.session import RtpSession
from voice.tts.fake import FakeSynthesizer

FAST = CallSettings(no_input_timeout_s=0.5, barge_in_min_speech_ms=200, inter_digit_timeout_s=0.4)


class _Ports(TypedDict):
    rtp_port_min: int
    rtp_port_max: int
    host: str


PORTS: _Ports = {"rtp_port_min": 42000, "rtp_port_max": 42998, "host": "127.0.0.1"}


@dataclass
class FakeControl:
    transfer_ok: bool = True
    transfers: list[Transfer] = field(default_factory=list)
    hung_up: bool = False

    async def transfer(self, transfer: Transfer) -> bool:
        self.transfers.append(transfer)
        return self.transfer_ok

    async def hang_up(self) -> None:
        self.hung_up = True


def quiet(feeds: int) -> list[list[AsrEvent]]:
    return [[] for _ in range(feeds)]


def utterance(text: str, feeds: int = 4) -> list[list[AsrEvent]]:
    """SpeechStarted and a partial, ``feeds - 2`` quiet chunks of speech, then the final."""
    return [[SpeechStarted(), AsrPartial(text.split()[0])], *quiet(feeds - 2), [AsrFinal(text)]]


@asynccontextmanager
async def phone_call(
    script: Sequence[Sequence[AsrEvent]],
    brain: FakeBrain,
    control: FakeControl,
    settings: CallSettings = FAST,
) -> AsyncIterator[tuple[Call, RtpSession, asyncio.Task[str]]]:
    bot = await RtpSession.open(**PORTS)
    phone = await RtpSession.open(**PORTS, remote=bot.local_address)
    bot.set_remote(phone.local_address)
    recognizer = FakeRecognizer(script)
    engines = CallEngines(brain, FakeSynthesizer(), lambda language: recognizer, settings)
    call = Call(CallContext("c1", caller=None, dialled="100"), bot, engines, control)
    running = asyncio.create_task(call.run())
    try:
        yield call, phone, running
    finally:
        call.end("test_over")
        await asyncio.wait_for(running, 5)
        await bot.close()
        await phone.close()


async def test_speech_reaches_the_brain_and_a_transfer_ends_our_leg() -> None:
    brain = FakeBrain(
        greeting=BrainReply("it", ("Ciao",)),
        replies={
            "un operatore": BrainReply(
                "it", ("Un attimo",), transfer=Transfer("h-9", "general", "sip:general@x")
            )
        },
    )
    control = FakeControl()
    async with phone_call([*quiet(12), *utterance("un operatore")], brain, control) as (
        call,
        phone,
        running,
    ):
        reason = await asyncio.wait_for(asyncio.shield(running), 10)
        heard_prompts = phone.stats.received
    assert reason == "transferred" and call.end_reason == "transferred"
    assert [t.handoff_id for t in control.transfers] == ["h-9"]
    assert brain.seen == [
        ("begin", "100"),
        ("hear", "un operatore"),
        ("transferred", "h-9"),
        ("ended", "transferred"),
    ]
    assert heard_prompts > 0
    assert len(call.stats.turn_latency_ms) == 1 and 0 <= call.stats.turn_latency_ms[0] < 1000


async def test_dtmf_zero_asks_for_a_person_and_a_failed_transfer_hangs_up() -> None:
    brain = FakeBrain(greeting=BrainReply("it", ("Ciao",)))
    control = FakeControl(transfer_ok=False)
    async with phone_call(quiet(1000), brain, control) as (_, phone, running):
        await asyncio.sleep(0.3)
        phone.send_dtmf("0")
        reason = await asyncio.wait_for(asyncio.shield(running), 10)
    assert reason == "bot_hung_up" and control.hung_up
    assert [what for what, _ in brain.seen] == [
        "begin",
        "person",
        "transfer_failed",
        "ended",
    ]


async def test_keyed_digits_end_with_hash_and_fill_the_requested_value() -> None:
    ask = BrainReply("it", ("Codice?",), digits=DigitRequest("customer_code", 6, prefix="CL"))
    brain = FakeBrain(greeting=ask, replies={"1203": BrainReply("it", ("Grazie",), hang_up=True)})
    control = FakeControl()
    patient = CallSettings(no_input_timeout_s=0.4, inter_digit_timeout_s=1.0)
    async with phone_call(quiet(1000), brain, control, patient) as (_, phone, running):
        # no key within the no-input time: a reprompt, which keeps asking for the same value
        await asyncio.wait_for(brain.wait_until_seen("no_input", "1"), 5)
        for key in "12*1203#":  # '*' starts the value again
            phone.send_dtmf(key, duration_ms=60)
        reason = await asyncio.wait_for(asyncio.shield(running), 10)
    assert reason == "bot_hung_up", brain.seen
    assert ("keyed", "customer_code=CL1203") in brain.seen


async def test_a_lone_zero_keyed_for_a_value_still_asks_for_a_person() -> None:
    ask = BrainReply("it", ("Lettura?",), digits=DigitRequest("meter_reading", 8))
    brain = FakeBrain(greeting=ask, person=BrainReply("it", ("Ciao",), hang_up=True))
    async with phone_call(quiet(1000), brain, FakeControl()) as (_, phone, running):
        await asyncio.sleep(0.6)
        phone.send_dtmf("0")
        phone.send_dtmf("#")
        await asyncio.wait_for(asyncio.shield(running), 10)
    assert ("person", "") in brain.seen and not any(w == "keyed" for w, _ in brain.seen)


async def test_speaking_over_a_prompt_stops_it_but_a_backchannel_does_not() -> None:
    long_prompt = BrainReply("it", ("Benvenuto " * 20,))  # 12 s of tone
    script: list[list[AsrEvent]] = [
        *quiet(5),
        [SpeechStarted(), AsrPartial("mhm")],
        *quiet(8),
        [AsrFinal("mhm")],  # a backchannel during the prompt: neither barge-in nor a turn
        *quiet(5),
        [SpeechStarted(), AsrPartial("vorrei")],
        *quiet(8),
        [AsrFinal("vorrei la bolletta")],
    ]
    brain = FakeBrain(
        greeting=long_prompt,
        replies={"vorrei la bolletta": BrainReply("it", ("Certo",), hang_up=True)},
    )
    async with phone_call(script, brain, FakeControl()) as (call, _, running):
        reason = await asyncio.wait_for(asyncio.shield(running), 8)
    assert reason == "bot_hung_up" and call.stats.barge_ins == 1
    assert [t for w, t in brain.seen if w == "hear"] == ["vorrei la bolletta"]


async def test_silence_after_a_prompt_reprompts_then_escalates() -> None:
    brain = FakeBrain(greeting=BrainReply("it", ("Ciao",)))
    control = FakeControl()
    async with phone_call(quiet(1000), brain, control) as (_, _, running):
        reason = await asyncio.wait_for(asyncio.shield(running), 10)
    assert reason == "transferred"
    assert [d for w, d in brain.seen if w == "no_input"] == ["1", "2", "3"]


async def test_the_caller_hanging_up_ends_the_call_mid_prompt() -> None:
    brain = FakeBrain(greeting=BrainReply("it", ("Benvenuto " * 30,)))
    async with phone_call(quiet(1000), brain, FakeControl()) as (call, _, running):
        await asyncio.sleep(0.3)
        assert call.rtp.playing
        call.peer_hung_up()
        reason = await asyncio.wait_for(asyncio.shield(running), 5)
    assert reason == "caller_hung_up" and brain.ended_with == "caller_hung_up"
    assert not call.rtp.playing
    assert isinstance(call.recognizer, FakeRecognizer) and call.recognizer.closed


async def test_a_hold_is_not_silence_and_the_music_on_hold_is_not_heard() -> None:
    brain = FakeBrain(greeting=BrainReply("it", ("Ciao",)))
    async with phone_call(quiet(1000), brain, FakeControl()) as (call, phone, running):
        await asyncio.wait_for(call.wait_replies(1), 5)
        call.set_held(True)
        assert not call.rtp.sending
        assert isinstance(call.recognizer, FakeRecognizer)
        fed_at_hold = call.recognizer.fed_bytes
        phone.play(bytes(2 * 8000 * 2))  # the caller's music on hold, 2 s
        await asyncio.sleep(1.2)  # more than twice the no-input time
        assert not [w for w, _ in brain.seen if w == "no_input"], "a hold counted as silence"
        # at most the one chunk in flight when the hold began, not 2 s of music (64000 bytes)
        assert call.recognizer.fed_bytes - fed_at_hold <= 500 * 32, "music on hold was decoded"
        assert call.stats.held_frames >= 40
        call.set_held(False)
        assert call.rtp.sending
        await asyncio.wait_for(brain.wait_until_seen("no_input", "1"), 2)  # silence again
        assert not running.done()
    assert call.recognizer.fed_bytes > fed_at_hold, "listening again after the hold"


def test_backchannels_are_short_acknowledgements_only() -> None:
    assert is_backchannel("Sì.") and is_backchannel("mhm") and is_backchannel("va bene")
    assert not is_backchannel("sì, vorrei parlare con un operatore")


class FailingRecognizer(FakeRecognizer):
    async def feed(self, pcm16k: bytes) -> list[AsrEvent]:
        raise RuntimeError("decoder crashed")


async def test_a_failing_task_ends_the_call_and_still_cleans_up() -> None:
    brain = FakeBrain(greeting=BrainReply("it", ("Ciao",)))
    bot = await RtpSession.open(**PORTS)
    phone = await RtpSession.open(**PORTS, remote=bot.local_address)
    bot.set_remote(phone.local_address)
    recognizer = FailingRecognizer()
    engines = CallEngines(brain, FakeSynthesizer(), lambda language: recognizer, FAST)
    call = Call(CallContext("c1", caller=None, dialled="100"), bot, engines, FakeControl())
    try:
        reason = await asyncio.wait_for(call.run(), 5)
    finally:
        await bot.close()
        await phone.close()
    assert reason == "failed" and brain.ended_with == "failed" and recognizer.closed


class SlowBrain(FakeBrain):
    async def begin(self, call: CallContext) -> tuple[str, BrainReply]:
        await asyncio.sleep(30)
        raise AssertionError("never reached: the caller hung up first")


async def test_hanging_up_while_the_greeting_is_prepared_ends_the_call_at_once() -> None:
    bot = await RtpSession.open(**PORTS)
    engines = CallEngines(SlowBrain(), FakeSynthesizer(), lambda language: FakeRecognizer(), FAST)
    call = Call(CallContext("c1", caller=None, dialled="100"), bot, engines, FakeControl())
    running = asyncio.create_task(call.run())
    await asyncio.sleep(0.1)
    call.peer_hung_up()
    try:
        assert await asyncio.wait_for(running, 2) == "caller_hung_up"
    finally:
        await bot.close()


async def test_many_presses_of_zero_ask_for_a_person_once() -> None:
    hold_on = BrainReply("it", ("Attenda in linea, prego.",))  # 1.4 s; the call goes on
    brain = FakeBrain(greeting=BrainReply("it", ("Ciao",)), person=hold_on)
    async with phone_call(quiet(1000), brain, FakeControl()) as (call, phone, _):
        await asyncio.sleep(0.3)
        for _ in range(6):  # an impatient caller, or a flood of events
            phone.send_dtmf("0", duration_ms=40)
        await asyncio.wait_for(brain.wait_until_seen("person", ""), 5)
        await asyncio.wait_for(call.wait_replies(2), 5)
        await asyncio.sleep(0.5)
    assert [w for w, _ in brain.seen].count("person") == 1
