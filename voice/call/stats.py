"""What one call measures about itself."""

from __future__ import annotations

from dataclasses import dataclass, field

from voice.brain import BrainReply


@dataclass
class CallStats:
    """What the benchmark and ``triage call`` report about one call."""

    turn_latency_ms: list[float] = field(default_factory=list)  # caller's final -> first RTP
    reply_started_at: list[float] = field(default_factory=list)  # loop time of each reply's
    # first RTP packet (the greeting's too)
    barge_ins: int = 0
    max_backlog_ms: int = 0  # the most audio that waited for the recogniser
    backlog_dropped: int = 0  # frames dropped because the recogniser was BACKLOG_MS behind
    held_frames: int = 0  # received frames not decoded because the call was on hold
    replies: list[BrainReply] = field(default_factory=list)
