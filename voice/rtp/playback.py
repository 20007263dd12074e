"""``Playback``: one clip of audio queued on an RTP session, its progress and its end."""

from __future__ import annotations

import asyncio
from typing import Final

from voice.audio import PTIME_MS, SAMPLE_WIDTH_BYTES, SAMPLES_PER_FRAME

FRAME_BYTES: Final = SAMPLES_PER_FRAME * SAMPLE_WIDTH_BYTES  # 320 bytes of PCM per 20 ms


class Playback:
    """One clip queued by ``RtpSession.play``: its progress and its end.

    ``await wait()`` returns once the clip is over: ``True`` if its last frame was sent, ``False``
    if ``stop_playback`` or ``close`` cut it short. ``first_packet_sent_at`` is the
    ``loop.time()`` at which its first packet left (``None`` until then): turn latency ends there.
    """

    def __init__(self, pcm: bytes) -> None:
        self._pcm = pcm
        self._offset = 0
        self._over = asyncio.Event()
        self._completed = False
        self.first_packet_sent_at: float | None = None

    @property
    def done(self) -> bool:
        return self._over.is_set()

    @property
    def completed(self) -> bool:
        return self._completed

    @property
    def sent_ms(self) -> int:
        """How much of the clip has been sent, in whole frames."""
        return -(-self._offset // FRAME_BYTES) * PTIME_MS

    async def wait(self) -> bool:
        await self._over.wait()
        return self._completed

    def next_frame(self) -> bytes:
        """The next 20 ms of the clip (the last one padded with silence); for the sender."""
        frame = self._pcm[self._offset : self._offset + FRAME_BYTES]
        self._offset += FRAME_BYTES
        return frame.ljust(FRAME_BYTES, b"\x00")

    @property
    def exhausted(self) -> bool:
        return self._offset >= len(self._pcm)

    def finish(self, *, completed: bool) -> None:
        """Called by the session: the clip was sent to its end, or cut short."""
        self._completed = completed
        self._over.set()
