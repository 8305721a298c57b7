"""Scheduler: deadline order, lateness, cancellation, closing, logging, and the thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from livegen import midi_bytes as mb
from livegen.clock import ManualClock
from livegen.engine.scheduler import Scheduler, SchedulerThread
from livegen.io.sinks import MemorySink, Sink


def make(start: float = 100.0):
    clock = ManualClock(start)
    sink = MemorySink(clock)
    log: list[dict] = []
    return clock, sink, Scheduler(sink, clock=clock, log=log.append), log


def test_events_go_out_in_deadline_order_only_when_due():
    clock, sink, s, _ = make()
    s.schedule_note(64, 90, 0, on_at=100.5, off_at=101.0)
    s.schedule_note(60, 80, 0, on_at=100.0, off_at=100.8)
    assert s.next_deadline() == 100.0
    assert [d.kind for d in s.advance(clock())] == ["note_on"]
    assert s.sounding == {(0, 60)}
    assert s.advance(100.4) == []
    clock.set(101.0)
    assert s.advance(clock()) and not s.sounding
    assert sink.without_times() == [
        ("note_on", 0, 60, 80),
        ("note_on", 0, 64, 90),
        ("note_off", 0, 60),
        ("note_off", 0, 64),
    ]
    assert s.next_deadline() is None and not s.busy


def test_lateness_is_sent_minus_intended():
    clock, sink, s, log = make()
    s.schedule_note(60, 80, 2, on_at=100.0, off_at=100.5)
    clock.set(100.003)  # woke 3 ms late
    [on] = s.advance(clock())
    assert on.intended == 100.0 and on.sent == 100.003 and on.lateness == pytest.approx(0.003)
    clock.set(100.5)
    s.advance(clock())
    stats = s.stats()
    assert stats.count == 2 and stats.max == pytest.approx(0.003) and s.stats("note_off").max == 0.0
    assert s.lateness == pytest.approx([0.003, 0.0])
    assert log == [
        {"event": "note_on", "pitch": 60, "velocity": 80, "channel": 2, "intended": 100.0, "sent": 100.003},
        {"event": "note_off", "pitch": 60, "channel": 2, "intended": 100.5, "sent": 100.5},
    ]


def test_stats_percentiles():
    clock, sink, s, _ = make(0.0)
    for i in range(100):
        s.schedule_control(0, mb.CC_MODULATION, 0, at=float(i))
    for i in range(100):
        clock.set(i + (i + 1) / 1000)  # lateness 1..100 ms
        s.advance(clock())
    stats = s.stats()
    assert stats.count == 100
    assert stats.median == pytest.approx(0.0505)
    assert stats.p99 == pytest.approx(0.099)
    assert stats.max == pytest.approx(0.100)
    assert Scheduler(MemorySink()).stats() is None


def test_note_off_before_note_on_at_equal_deadlines():
    clock, sink, s, _ = make()
    s.schedule_note(60, 80, 0, on_at=100.0, off_at=100.5)
    s.schedule_note(60, 70, 0, on_at=100.5, off_at=101.0)  # same key, back to back
    s.schedule_control(0, mb.CC_SUSTAIN, 0, at=100.5)
    clock.set(101.0)
    s.advance(clock())
    assert sink.without_times() == [
        ("note_on", 0, 60, 80),
        ("note_off", 0, 60),
        ("control", 0, mb.CC_SUSTAIN, 0),
        ("note_on", 0, 60, 70),
        ("note_off", 0, 60),
    ]


def test_zero_length_note_still_gets_its_off_after_its_on():
    clock, sink, s, _ = make()
    s.schedule_note(60, 80, 0, on_at=100.0, off_at=99.0)
    s.advance(100.0)
    assert sink.without_times() == [("note_on", 0, 60, 80), ("note_off", 0, 60)]
    assert not s.sounding


def test_overlapping_same_key_ends_the_first_note_at_the_second_onset():
    clock, sink, s, log = make()
    s.schedule_note(60, 80, 0, on_at=100.0, off_at=102.0)
    s.schedule_note(60, 90, 0, on_at=101.0, off_at=101.5)
    clock.set(103.0)
    s.advance(clock())
    assert sink.without_times() == [
        ("note_on", 0, 60, 80),
        ("note_off", 0, 60),
        ("note_on", 0, 60, 90),
        ("note_off", 0, 60),
    ]
    assert [r["event"] for r in log].count("note_off") == 2  # the stale off at 102 is skipped


def test_cancel_all_drops_pending_and_ends_sounding_now():
    clock, sink, s, log = make()
    for i in range(4):
        s.schedule_note(60 + i, 80, 1, on_at=100.0 + i * 0.25, off_at=100.0 + i * 0.25 + 1.0, tag="resp")
    clock.set(100.3)
    s.advance(clock())
    assert s.sounding == {(1, 60), (1, 61)}
    clock.set(100.4)
    cancelled = s.cancel_all()
    assert [(d.kind, d.number, d.intended) for d in cancelled] == [("note_off", 60, 100.4), ("note_off", 61, 100.4)]
    assert not s.sounding and s.pending == 0 and s.next_deadline() is None
    clock.set(110.0)
    assert s.advance(clock()) == []
    ons = [r for r in log if r["event"] == "note_on"]
    offs = [r for r in log if r["event"] == "note_off"]
    assert len(ons) == len(offs) == 2
    assert s.stats().count == 2  # immediate offs are not counted as late


def test_cancel_by_tag_keeps_other_tags():
    clock, sink, s, _ = make()
    s.schedule_note(60, 80, 0, on_at=100.0, off_at=101.0, tag="a")
    s.schedule_note(72, 80, 0, on_at=100.0, off_at=101.0, tag="b")
    s.schedule_note(62, 80, 0, on_at=100.5, off_at=101.0, tag="a")
    s.advance(100.0)
    s.cancel("a", now=100.2)
    assert s.sounding == {(0, 72)}
    s.advance(101.0)
    assert sink.without_times() == [
        ("note_on", 0, 60, 80),
        ("note_on", 0, 72, 80),
        ("note_off", 0, 60),
        ("note_off", 0, 72),
    ]


def test_close_ends_everything_then_cc123_per_used_channel():
    clock, sink, s, log = make()
    s.schedule_note(60, 80, 0, on_at=100.0, off_at=105.0)
    s.schedule_note(64, 80, 3, on_at=100.0, off_at=105.0)
    s.schedule_note(67, 80, 9, on_at=104.0, off_at=105.0)  # never started: channel 9 unused
    s.advance(100.0)
    s.close()
    assert sink.without_times()[2:] == [
        ("note_off", 0, 60),
        ("note_off", 3, 64),
        ("control", 0, mb.CC_ALL_NOTES_OFF, 0),
        ("control", 3, mb.CC_ALL_NOTES_OFF, 0),
    ]
    assert not s.sounding and s.closed
    assert s.close() == []  # idempotent
    assert s.schedule_note(60, 80, 0, 106.0, 107.0) is None  # nothing starts after close
    assert s.advance(200.0) == []
    assert not sink.closed  # the sink may be shared: the owner closes it


def test_every_logged_note_on_has_a_note_off_on_every_exit_path():
    rng = np.random.default_rng(7)
    for exit_path in ("finish", "cancel", "close"):
        clock, sink, s, log = make(0.0)
        for _ in range(50):
            on = float(rng.uniform(0, 5))
            s.schedule_note(int(rng.integers(55, 70)), 80, int(rng.integers(0, 3)), on, on + float(rng.uniform(0, 1)))
        for t in np.arange(0.0, 3.0, 0.01):
            clock.set(float(t))
            s.advance(clock())
        if exit_path == "finish":
            clock.set(10.0)
            s.advance(clock())
        elif exit_path == "cancel":
            s.cancel_all()
        else:
            s.close()
        assert not s.sounding
        balance: dict[tuple[int, int], int] = {}
        for event in sink.events:
            if event[0] in ("note_on", "note_off"):
                key = (event[1], event[2])
                balance[key] = balance.get(key, 0) + (1 if event[0] == "note_on" else -1)
                assert balance[key] in (0, 1)  # never two ons on one key without an off between
        assert set(balance.values()) <= {0}


class FailingSink(Sink):
    def _send(self, message: list[int]) -> None:
        raise OSError("port vanished")


def test_sink_errors_are_reported_not_raised():
    clock = ManualClock(0.0)
    log: list[dict] = []
    s = Scheduler(FailingSink(), clock=clock, log=log.append)
    s.schedule_note(60, 80, 0, 0.0, 0.5)
    s.advance(0.0)
    assert (0, 60) in s.sounding  # may be sounding: still gets its off
    s.advance(0.5)
    assert not s.sounding
    assert len(s.errors) == 2 and all("port vanished" in e for e in s.errors)
    assert [r["event"] for r in log] == ["error", "note_on", "error", "note_off"]


def test_broken_log_does_not_stop_playing():
    def bad_log(record: dict) -> None:
        raise OSError("disk full")

    sink = MemorySink(ManualClock())
    s = Scheduler(sink, clock=ManualClock(), log=bad_log)
    s.schedule_note(60, 80, 0, 0.0, 0.0)
    s.advance(0.0)
    assert len(sink.events) == 2 and s.errors


@pytest.mark.parametrize(
    "args, field",
    [((128, 80, 0), "pitch"), ((60, 0, 0), "velocity"), ((60, 128, 0), "velocity"), ((60, 80, 16), "channel")],
)
def test_schedule_validates(args, field):
    _, _, s, _ = make()
    with pytest.raises(ValueError, match=field):
        s.schedule_note(*args, on_at=0.0, off_at=1.0)


def test_numpy_integers_are_accepted():
    clock, sink, s, _ = make()
    s.schedule_note(np.int64(60), np.int64(80), np.int64(0), 100.0, 100.5)
    s.advance(101.0)
    assert sink.without_times()[0] == ("note_on", 0, 60, 80)


# -- the thread: real time, but only ordering and completion are asserted ----------------------


def wait_until(condition, timeout: float = 5.0) -> None:
    """Poll until the thread has done its work; generous timeout, no timing asserted."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        threading.Event().wait(0.002)


def test_thread_plays_everything_in_order_and_wakes_for_new_notes():
    sink = MemorySink()
    s = Scheduler(sink)
    player = SchedulerThread(s)
    player.start()
    try:
        t0 = time.monotonic()
        s.schedule_note(60, 80, 0, t0 + 0.02, t0 + 0.04)
        s.schedule_note(62, 80, 0, t0 + 0.01, t0 + 0.03)
        wait_until(lambda: len(sink.events) >= 4)
        # a note scheduled while the thread waits (with nothing pending) is picked up
        s.schedule_note(64, 80, 0, time.monotonic(), time.monotonic() + 0.01)
        wait_until(lambda: len(sink.events) >= 6)
    finally:
        assert player.stop(timeout=5.0)
    assert not player.is_alive()
    assert sink.without_times() == [
        ("note_on", 0, 62, 80),
        ("note_on", 0, 60, 80),
        ("note_off", 0, 62),
        ("note_off", 0, 60),
        ("note_on", 0, 64, 80),
        ("note_off", 0, 64),
    ]
    assert all(late >= 0 for late in s.lateness)


def test_thread_stops_promptly_with_far_future_notes_and_close_silences():
    sink = MemorySink()
    s = Scheduler(sink)
    with SchedulerThread(s) as player:
        s.schedule_note(60, 80, 0, time.monotonic(), time.monotonic() + 3600)
        wait_until(lambda: bool(s.sounding))
    assert not player.is_alive()
    s.close()
    assert sink.without_times() == [("note_on", 0, 60, 80), ("note_off", 0, 60), ("control", 0, 123, 0)]


def test_a_note_its_caller_sends_itself_does_not_wake_the_thread_unless_its_end_is_near():
    """``wake=False`` (harmonize sends its voices from the worker with ``advance``): the scheduler
    thread is not woken to race the worker, unless the note-off falls due before its longest sleep."""
    clock, sink, s, _ = make()
    woken = []
    notify = s._wakeup.notify_all
    s._wakeup.notify_all = lambda: (woken.append(clock()), notify())
    s.schedule_note(60, 80, 0, clock(), clock() + 120.0, wake=False)
    assert woken == []
    s.advance(clock())
    assert sink.without_times() == [("note_on", 0, 60, 80)]
    s.schedule_note(62, 80, 0, clock(), clock() + 0.1, wake=False)  # ends before the thread would look again
    s.schedule_note(64, 80, 0, clock() + 1.0, clock() + 2.0)  # the default wakes it
    assert len(woken) == 2


def test_a_held_log_is_written_when_the_block_ends_with_the_times_of_the_sends():
    clock, sink, s, log = make()
    other: list[dict] = []
    with s.holding_log():
        s.schedule_note(60, 80, 0, clock(), clock() + 1.0, wake=False)
        s.advance(clock())
        clock.advance(0.001)
        s.schedule_note(64, 80, 0, clock(), clock() + 1.0, wake=False)
        s.advance(clock())
        assert len(sink.events) == 2 and log == []  # sent, not yet logged
        worker = threading.Thread(target=lambda: (s.cancel(None), other.extend(log)))
        worker.start()
        worker.join()
        assert [r["event"] for r in other] == ["note_off", "note_off"]  # another thread logs at once
    assert [(r["event"], r["pitch"]) for r in log[2:]] == [("note_on", 60), ("note_on", 64)]
    assert log[3]["sent"] - log[2]["sent"] == pytest.approx(0.001)


def test_thread_cannot_start_twice():
    player = SchedulerThread(Scheduler(MemorySink()))
    player.start()
    try:
        with pytest.raises(RuntimeError):
            player.start()
    finally:
        assert player.stop()
