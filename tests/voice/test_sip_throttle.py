"""The lockout of sources that keep failing digest authentication, on a clock of the test's."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.sip.throttle import FailureThrottle

TRUNK = "192.0.2.10"
GUESSER = "203.0.113.66"


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def throttle(
    clock: FakeClock,
    *,
    max_failures: int = 5,
    window_s: float = 60.0,
    lockout_s: float = 300.0,
    max_sources: int = 10_000,
) -> FailureThrottle:
    return FailureThrottle(max_failures, window_s, lockout_s, max_sources, clock=clock)


def test_the_failure_that_reaches_max_failures_within_the_window_locks_the_source() -> None:
    clock = FakeClock()
    guard = throttle(clock)
    for _ in range(4):
        assert guard.record_failure(GUESSER) is False
        assert not guard.locked(GUESSER)
        clock.now_s += 1.0

    assert guard.record_failure(GUESSER) is True
    assert guard.locked(GUESSER)
    assert not guard.locked(TRUNK)


@pytest.mark.parametrize(("spacing_s", "locks"), [(14.9, True), (15.0, False)])
def test_failures_lock_only_when_max_failures_fall_within_the_window(
    spacing_s: float, locks: bool
) -> None:
    # five failures 15 s apart span exactly the 60 s window: the first has left it by the fifth
    clock = FakeClock()
    guard = throttle(clock)
    locked_by = [guard.record_failure(GUESSER)]
    for _ in range(4):
        clock.now_s += spacing_s
        locked_by.append(guard.record_failure(GUESSER))

    assert locked_by == [False] * 4 + [locks]
    assert guard.locked(GUESSER) is locks


def test_failures_spread_beyond_the_window_never_lock_however_many() -> None:
    clock = FakeClock()
    guard = throttle(clock)
    for _ in range(50):
        assert guard.record_failure(GUESSER) is False
        clock.now_s += 15.0
    assert not guard.locked(GUESSER)


def test_the_lockout_ends_after_lockout_s_and_the_source_starts_over() -> None:
    clock = FakeClock()
    guard = throttle(clock, max_failures=2, lockout_s=300.0)
    guard.record_failure(GUESSER)
    assert guard.record_failure(GUESSER) is True

    clock.now_s += 299.9
    assert guard.locked(GUESSER)
    clock.now_s += 0.1
    assert not guard.locked(GUESSER)
    # the failures that locked it are gone: one more is one, not three
    assert guard.record_failure(GUESSER) is False
    assert not guard.locked(GUESSER)
    assert guard.record_failure(GUESSER) is True


def test_failures_during_a_lockout_neither_extend_it_nor_count_after_it() -> None:
    clock = FakeClock()
    guard = throttle(clock, max_failures=2, lockout_s=300.0)
    guard.record_failure(GUESSER)
    guard.record_failure(GUESSER)
    for _ in range(10):
        clock.now_s += 20.0
        assert guard.record_failure(GUESSER) is False

    clock.now_s += 100.0  # 300 s after the lockout began
    assert not guard.locked(GUESSER)
    assert guard.record_failure(GUESSER) is False


def test_a_success_clears_the_failures_of_its_source_only() -> None:
    clock = FakeClock()
    guard = throttle(clock, max_failures=3)
    for source in (TRUNK, TRUNK, GUESSER, GUESSER):
        guard.record_failure(source)

    guard.record_success(TRUNK)

    assert guard.record_failure(TRUNK) is False
    assert guard.record_failure(TRUNK) is False
    assert guard.record_failure(GUESSER) is True
    assert guard.record_failure(TRUNK) is True


def test_a_success_does_not_lift_a_lockout_in_force() -> None:
    clock = FakeClock()
    guard = throttle(clock, max_failures=1)
    guard.record_failure(GUESSER)

    guard.record_success(GUESSER)

    assert guard.locked(GUESSER)


def test_beyond_max_sources_the_least_recently_seen_is_forgotten() -> None:
    clock = FakeClock()
    guard = throttle(clock, max_failures=2, max_sources=2)
    guard.record_failure("10.0.0.1")
    guard.record_failure("10.0.0.2")
    assert not guard.locked("10.0.0.1")  # seen again: now .2 is the least recently seen

    guard.record_failure("10.0.0.3")  # forgets .2

    assert len(guard) == 2
    assert guard.record_failure("10.0.0.1") is True  # remembered: its second failure
    assert guard.record_failure("10.0.0.2") is False  # forgotten: its first again
    assert len(guard) == 2


def test_a_forgotten_source_that_was_locked_starts_over() -> None:
    clock = FakeClock()
    guard = throttle(clock, max_failures=1, max_sources=1)
    guard.record_failure(GUESSER)
    guard.record_failure(TRUNK)

    assert not guard.locked(GUESSER)
    assert len(guard) == 1


@pytest.mark.parametrize(
    "options",
    [
        {"max_failures": 0},
        {"max_failures": -1},
        {"window_s": 0.0},
        {"window_s": -5.0},
        {"window_s": math.nan},
        {"lockout_s": 0.0},
        {"lockout_s": math.nan},
        {"max_sources": 0},
    ],
)
def test_parameters_that_are_not_positive_are_refused_by_name(options: dict[str, Any]) -> None:
    (name,) = options
    with pytest.raises(ValueError, match=name):
        FailureThrottle(**options)


WINDOW_S = 60.0
LOCKOUT_S = 300.0
_gaps = st.one_of(
    st.sampled_from([0.0, 1.0, 15.0, WINDOW_S, LOCKOUT_S]),
    st.floats(min_value=0.0, max_value=2 * LOCKOUT_S, allow_nan=False),
)
_events = st.lists(
    st.tuples(_gaps, st.sampled_from(["failure", "success", "check"]), st.sampled_from("ab")),
    max_size=60,
)


@given(max_failures=st.integers(min_value=1, max_value=4), events=_events)
def test_a_source_is_locked_exactly_when_max_failures_fall_within_one_window(
    max_failures: int, events: list[tuple[float, str, str]]
) -> None:
    # The model keeps every failure since the source last started over, and counts the ones
    # younger than the window: never locked with fewer, always with as many.
    clock = FakeClock()
    guard = throttle(clock, max_failures=max_failures, window_s=WINDOW_S, lockout_s=LOCKOUT_S)
    failures: dict[str, list[float]] = {"a": [], "b": []}
    locked_until = {"a": -math.inf, "b": -math.inf}
    for gap_s, event, source in events:
        clock.now_s += gap_s
        now = clock.now_s
        in_lockout = now < locked_until[source]
        if event == "failure":
            locks = False
            if not in_lockout:
                failures[source].append(now)
                recent = [t for t in failures[source] if now - t < WINDOW_S]
                locks = len(recent) >= max_failures
                if locks:
                    failures[source].clear()
                    locked_until[source] = now + LOCKOUT_S
            assert guard.record_failure(source) is locks
        elif event == "success":
            if not in_lockout:
                failures[source].clear()
            guard.record_success(source)
        for each in failures:
            assert guard.locked(each) is (now < locked_until[each])
