"""Plays notes at absolute ``time.monotonic()`` deadlines and always closes what it opened.

The heap holds (deadline, order, sequence) so that at equal deadlines note-offs go before
controls before note-ons (a repeated pitch re-articulates instead of being cut by the previous
note's off), except a zero-length note's own off, which follows its on.  ``advance(now)`` sends
everything due; tests drive it with a manual clock and never sleep, the daemon drives it with
``SchedulerThread``, which waits on a condition until the next deadline so a newly scheduled
note wakes it at once.

Guarantees the daemon relies on:

- Every note-on this scheduler sends gets exactly one note-off: by its schedule, by ``cancel``
  (barge-in), by ``close`` (shutdown), or just before a new note on the same channel and pitch
  (MIDI cannot tell two overlapping notes on one key apart, so the old one is ended first).
- ``close()`` ends every sounding note, then sends CC 123 on each channel it used.  It does not
  close the sink, which may be shared (the recorder also takes the human's notes).
- Lateness (``sent - intended``) is measured for every scheduled event: ``sent`` is the clock
  read right after the sink call returns.  Immediate note-offs from cancel/close are logged but
  not counted as late.
- A sink that raises is reported (``errors`` and an ``error`` log event) and never stops the
  scheduler; a note whose note-on failed is still treated as sounding, so it still gets its off.

Threads: ``schedule_*``, ``cancel`` and ``close`` may be called from any thread.  Sink calls are
serialized by one lock, held for the pop-and-send of each event, so a cancel can never slip
between popping a note-on and sending it; the heap has its own short-held lock, so scheduling
never waits for a slow sink.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Literal

from livegen import midi_bytes as mb
from livegen.clock import Clock
from livegen.io.sinks import Sink

Kind = Literal["note_on", "note_off", "control"]
Log = Callable[[dict], None]

_OFF, _CONTROL, _ON, _OWN_OFF = range(4)  # order at equal deadlines
MAX_WAIT_S = 0.5
"""Longest single wait of the scheduler thread, a backstop against a missed wake-up."""


@dataclass(frozen=True, slots=True)
class Dispatched:
    """One event as sent: ``number`` is the pitch or controller, ``value`` the velocity
    (0 for a note-off) or controller value."""

    kind: Kind
    channel: int
    number: int
    value: int
    intended: float
    sent: float
    tag: Hashable | None = None

    @property
    def lateness(self) -> float:
        return self.sent - self.intended


@dataclass(frozen=True, slots=True)
class LatenessStats:
    """Seconds; p99 is the nearest-rank 99th percentile."""

    count: int
    mean: float
    median: float
    p99: float
    max: float


@dataclass(slots=True, eq=False)
class _Note:
    id: int
    channel: int
    pitch: int
    velocity: int
    tag: Hashable | None
    state: Literal["pending", "sounding", "done"] = "pending"


@dataclass(slots=True, eq=False)
class _Entry:
    kind: Kind
    channel: int
    number: int
    value: int
    tag: Hashable | None
    note: _Note | None = None

    def stale(self) -> bool:
        """A note-off for a note already ended (superseded or cancelled): skip it."""
        return self.note is not None and self.note.state == "done"


class Scheduler:
    """A heap of absolute deadlines in front of one sink (see module doc)."""

    def __init__(
        self,
        sink: Sink,
        clock: Clock = time.monotonic,
        log: Log | None = None,
        history: int = 100_000,
    ) -> None:
        self.sink = sink
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()  # heap, closed flag
        self._wakeup = threading.Condition(self._lock)
        self._send_lock = threading.RLock()  # sink calls, sounding notes, stats
        self._heap: list[tuple[float, int, int, _Entry]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._sounding: dict[tuple[int, int], _Note] = {}
        self._channels_used: set[int] = set()
        self._lateness: deque[tuple[Kind, float]] = deque(maxlen=history)
        self._closed = False
        self._held: tuple[int, list[dict]] | None = None  # (thread, records) while a thread holds the log
        self.count = 0
        """Events sent to the sink, immediate note-offs and CC 123 included."""
        self.errors: deque[str] = deque(maxlen=100)

    # -- scheduling (any thread) ------------------------------------------------------------

    def schedule_note(
        self,
        pitch: int,
        velocity: int,
        channel: int,
        on_at: float,
        off_at: float,
        tag: Hashable | None = None,
        wake: bool = True,
    ) -> int | None:
        """Queue one note; returns its id, or None once closed (a late worker cannot start
        a note nobody would end).  ``off_at`` before ``on_at`` is taken as ``on_at``.

        ``wake=False``: the caller sends what is due itself (``advance``) right after, so the
        scheduler thread is not woken to race it for the GIL, unless the note-off falls due
        before that thread's longest sleep (``MAX_WAIT_S``) ends."""
        note = _Note(
            next(self._ids),
            mb.check_channel(channel),
            mb.check_data("pitch", pitch),
            mb.check_range("velocity", velocity, 1, mb.MAX_DATA),
            tag,
        )
        on_at, off_at = float(on_at), float(off_at)
        off_order = _OFF if off_at > on_at else _OWN_OFF
        with self._wakeup:
            if self._closed:
                return None
            self._push(on_at, _ON, _Entry("note_on", note.channel, note.pitch, note.velocity, tag, note))
            self._push(max(off_at, on_at), off_order, _Entry("note_off", note.channel, note.pitch, 0, tag, note))
            if wake or max(off_at, on_at) - self._clock() < MAX_WAIT_S:
                self._wakeup.notify_all()
        return note.id

    def schedule_control(
        self, channel: int, control: int, value: int, at: float, tag: Hashable | None = None
    ) -> bool:
        """Queue a control change; False once closed."""
        entry = _Entry(
            "control", mb.check_channel(channel), mb.check_data("control", control), mb.check_data("value", value), tag
        )
        with self._wakeup:
            if self._closed:
                return False
            self._push(float(at), _CONTROL, entry)
            self._wakeup.notify_all()
        return True

    def wake(self) -> None:
        """Wake the scheduler thread (used by ``SchedulerThread.stop``)."""
        with self._wakeup:
            self._wakeup.notify_all()

    # -- state -------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        with self._lock:
            return self._next_deadline_locked()

    @property
    def sounding(self) -> frozenset[tuple[int, int]]:
        """(channel, pitch) of the notes this scheduler has on now."""
        with self._send_lock:
            return frozenset(self._sounding)

    @property
    def pending(self) -> int:
        """Scheduled events not yet sent."""
        with self._lock:
            return sum(not item[3].stale() for item in self._heap)

    @property
    def busy(self) -> bool:
        """Whether a response is still playing (something pending or sounding)."""
        return bool(self.pending or self.sounding)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def lateness(self) -> list[float]:
        """Lateness in seconds of every scheduled event sent (the last ``history``)."""
        with self._send_lock:
            return [late for _, late in self._lateness]

    def stats(self, kind: Kind | None = None) -> LatenessStats | None:
        """Lateness summary over all kinds, or one; None before anything was sent."""
        with self._send_lock:
            values = sorted(late for k, late in self._lateness if kind is None or k == kind)
        if not values:
            return None
        n = len(values)
        median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
        return LatenessStats(n, sum(values) / n, median, values[max(math.ceil(0.99 * n) - 1, 0)], values[-1])

    # -- sending -----------------------------------------------------------------------------

    def advance(self, now: float) -> list[Dispatched]:
        """Send every event due at or before ``now``, in deadline order."""
        out: list[Dispatched] = []
        with self._send_lock:
            while True:
                with self._lock:
                    if not self._heap or self._heap[0][0] > now:
                        break
                    deadline, _, _, entry = heapq.heappop(self._heap)
                out += self._dispatch(entry, deadline)
        return out

    def cancel(self, tag: Hashable | None = None, now: float | None = None) -> list[Dispatched]:
        """Drop pending events with ``tag`` (all if None) and end its sounding notes now."""
        with self._send_lock:
            with self._lock:
                self._drop_locked(tag)
            return self._release_sounding(tag, now)

    def cancel_all(self, now: float | None = None) -> list[Dispatched]:
        """Barge-in and panic: drop everything pending, end every sounding note now."""
        return self.cancel(None, now)

    def close(self) -> list[Dispatched]:
        """Drop everything pending, end every sounding note, CC 123 on each channel used.

        Idempotent; scheduling afterwards does nothing.  The sink stays open.
        """
        with self._send_lock:
            with self._wakeup:
                if self._closed:
                    return []
                self._closed = True
                self._drop_locked(None)
                self._wakeup.notify_all()
            out = self._release_sounding(None, None)
            for channel in sorted(self._channels_used):
                now = self._clock()
                out.append(self._send("control", channel, mb.CC_ALL_NOTES_OFF, 0, now, None, measured=False))
            return out

    def run(self, stop: threading.Event) -> None:
        """Send events on time until ``stop`` is set (the body of ``SchedulerThread``)."""
        while True:
            with self._wakeup:
                if stop.is_set():
                    return
                deadline = self._next_deadline_locked()
                wait = MAX_WAIT_S if deadline is None else min(deadline - self._clock(), MAX_WAIT_S)
                if wait > 0:
                    self._wakeup.wait(wait)
            try:
                self.advance(self._clock())
            except Exception as exc:  # never let the player thread die silently
                self._error(f"scheduler: {exc!r}")

    # -- internals (callers hold the locks named) ---------------------------------------------

    def _push(self, deadline: float, order: int, entry: _Entry) -> None:  # _lock
        heapq.heappush(self._heap, (deadline, order, next(self._seq), entry))

    def _next_deadline_locked(self) -> float | None:  # _lock
        while self._heap and self._heap[0][3].stale():
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _drop_locked(self, tag: Hashable | None) -> None:  # _send_lock, then _lock
        kept = []
        for item in self._heap:
            entry = item[3]
            if tag is None or entry.tag == tag:
                if entry.note is not None and entry.note.state == "pending":
                    entry.note.state = "done"
            else:
                kept.append(item)
        heapq.heapify(kept)
        self._heap = kept

    def _release_sounding(self, tag: Hashable | None, now: float | None) -> list[Dispatched]:  # _send_lock
        now = self._clock() if now is None else now
        notes = [note for note in self._sounding.values() if tag is None or note.tag == tag]
        return [self._end(note, now, measured=False) for note in sorted(notes, key=lambda n: n.id)]

    def _dispatch(self, entry: _Entry, intended: float) -> list[Dispatched]:  # _send_lock
        if entry.kind == "control":
            return [self._send("control", entry.channel, entry.number, entry.value, intended, entry.tag)]
        note = entry.note
        assert note is not None
        if entry.kind == "note_off":
            return [self._end(note, intended)] if note.state == "sounding" else []
        if note.state != "pending":
            return []
        out = []
        previous = self._sounding.get((note.channel, note.pitch))
        if previous is not None:  # same key still on: end it so this note's off is unambiguous
            out.append(self._end(previous, intended, measured=False))
        note.state = "sounding"
        self._sounding[(note.channel, note.pitch)] = note
        out.append(self._send("note_on", note.channel, note.pitch, note.velocity, intended, note.tag))
        return out

    def _end(self, note: _Note, intended: float, measured: bool = True) -> Dispatched:  # _send_lock
        note.state = "done"
        if self._sounding.get((note.channel, note.pitch)) is note:
            del self._sounding[(note.channel, note.pitch)]
        return self._send("note_off", note.channel, note.pitch, 0, intended, note.tag, measured)

    def _send(
        self, kind: Kind, channel: int, number: int, value: int, intended: float, tag: Hashable | None,
        measured: bool = True,
    ) -> Dispatched:  # _send_lock
        try:
            if kind == "note_on":
                self.sink.note_on(channel, number, value)
            elif kind == "note_off":
                self.sink.note_off(channel, number)
            else:
                self.sink.control(channel, number, value)
        except Exception as exc:
            self._error(f"sink {kind} channel {channel} {number}: {exc!r}")
        sent = self._clock()
        self._channels_used.add(channel)
        self.count += 1
        if measured:
            self._lateness.append((kind, sent - intended))
        if kind == "note_on":
            self._emit({"event": "note_on", "pitch": number, "velocity": value, "channel": channel,
                        "intended": intended, "sent": sent})
        elif kind == "note_off":
            self._emit({"event": "note_off", "pitch": number, "channel": channel, "intended": intended, "sent": sent})
        return Dispatched(kind, channel, number, value, intended, sent, tag)

    def _error(self, message: str) -> None:
        self.errors.append(message)
        self._emit({"event": "error", "t": self._clock(), "message": message})

    @contextlib.contextmanager
    def holding_log(self) -> Iterator[None]:
        """Log records of what this thread sends meanwhile are written when the block ends: a
        harmonize chord's voices leave one after the other without each waiting for the log line
        of the one before (the records keep their times).  Other threads log as usual."""
        if self._held is not None:  # nested or another thread holds it: log as usual
            yield
            return
        held: list[dict] = []
        self._held = (threading.get_ident(), held)
        try:
            yield
        finally:
            self._held = None
            for record in held:
                self._emit(record)

    def _emit(self, record: dict) -> None:
        if self._log is None:
            return
        held = self._held
        if held is not None and held[0] == threading.get_ident():
            held[1].append(record)
            return
        try:
            self._log(record)
        except Exception as exc:  # a broken log must not stop the music
            self.errors.append(f"log: {exc!r}")


class SchedulerThread:
    """Runs ``Scheduler.run`` on its own thread: ``start()`` explicitly, ``stop()`` joins.

    Stopping does not close the scheduler: on shutdown call ``stop()``, then
    ``scheduler.close()`` so every sounding note is ended.
    """

    def __init__(self, scheduler: Scheduler, name: str = "livegen-scheduler") -> None:
        self.scheduler = scheduler
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("scheduler thread already started")
        # daemon=True only as a backstop: stop() joins it on every normal exit path.
        self._thread = threading.Thread(target=self.scheduler.run, args=(self._stop,), name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 2.0) -> bool:
        """Ask the thread to end and join it; True if it has ended."""
        self._stop.set()
        self.scheduler.wake()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SchedulerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
