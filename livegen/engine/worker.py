"""The model's thread: keeps the listening state current and samples answers note by note.

Every played note is fed as soon as the window releases it, so at a phrase end the state is
ready.  An answer is sampled from a fork of that state and each note goes to the scheduler the
moment it is sampled: the first note never waits for the rest.  The engine may ask for an answer
*speculatively*, timed for the instant the gap will end; if the player goes on instead, the
engine cancels it and nothing was heard.

This module never imports torch: the predictor is anything with ``feed``/``fork``/``sample``.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Protocol, Sequence

import numpy as np

from livegen.clock import Clock
from livegen.model.params import SamplingParams
from livegen.notes import DURATION, PITCH, STEP, VELOCITY


class Predictor(Protocol):
    def feed(self, rows: np.ndarray) -> None: ...

    def fork(self) -> "Predictor": ...

    def sample(self, params: SamplingParams, *, chord: Sequence[int] = ()) -> np.ndarray: ...


class NoteScheduler(Protocol):
    def schedule_note(
        self, pitch: int, velocity: int, channel: int, on_at: float, off_at: float, tag: Hashable | None = None
    ) -> int | None: ...

    def cancel(self, tag: Hashable | None = None, now: float | None = None) -> list: ...


@dataclass(frozen=True)
class ResponseRequest:
    """One answer: when its first note is due, how long it may be, how it is sampled."""

    tag: int
    start_at: float
    length: int
    max_seconds: float
    params: SamplingParams
    channel: int = 0
    velocity_scale: float = 1.0


_STOP = object()


class ResponseWorker:
    """Owns the predictor on one thread; other threads talk to it through a queue."""

    def __init__(
        self,
        predictor: Predictor,
        scheduler: NoteScheduler,
        log: Callable[[dict], None] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._predictor = predictor
        self._scheduler = scheduler
        self._log = log
        self._clock = clock
        self._queue: queue.Queue = queue.Queue()
        self._guard = threading.Lock()  # a cancel cannot slip between check and schedule
        self._cancelled: set[int] = set()
        self._pending: set[int] = set()  # tags queued or being sampled: only those can be cancelled
        self._thread: threading.Thread | None = None
        self.responding: int | None = None
        """Tag of the answer being sampled now, if any (the status line's "thinking")."""
        self.notes_scheduled = 0
        self.errors = 0

    # -- any thread -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("worker already started")
        self._thread = threading.Thread(target=self._run, name="livegen-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 2.0) -> bool:
        """Ask the thread to finish what it is doing and exit; True if it did within timeout."""
        if self._thread is None:
            return True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def feed(self, rows: Sequence[Sequence[float]] | np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        if len(rows):
            self._queue.put(("feed", rows))

    def call(self, job: Callable[[Predictor], None]) -> None:
        """Run ``job(predictor)`` on the worker thread, in order with feeds and answers (harmonize
        mode voices each melody note this way: the predictor stays owned by one thread)."""
        self._queue.put(("call", job))

    def respond(self, request: ResponseRequest) -> None:
        with self._guard:
            self._pending.add(request.tag)
        self._queue.put(("respond", request))

    def cancel(self, tag: int) -> None:
        """Stop sampling answer ``tag``; notes it already scheduled are the scheduler's to cancel.

        Only a pending answer is remembered as cancelled, and only until its job ends, so the
        set stays small however many speculative answers a long session cancels."""
        with self._guard:
            if tag in self._pending:
                self._cancelled.add(tag)

    def is_cancelled(self, tag: int) -> bool:
        with self._guard:
            return tag in self._cancelled

    def idle(self) -> bool:
        return self._queue.unfinished_tasks == 0

    # -- worker thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                kind, payload = item
                if kind == "feed":
                    self._safely(lambda: self._predictor.feed(payload), None)
                elif kind == "call":
                    self._safely(lambda: payload(self._predictor), None)
                else:
                    try:
                        self._safely(lambda: self._respond(payload), payload.tag)
                    finally:
                        with self._guard:
                            self._pending.discard(payload.tag)
                            self._cancelled.discard(payload.tag)
            finally:
                self._queue.task_done()

    def _safely(self, action: Callable[[], None], tag: int | None) -> None:
        """Run one job; an exception is logged and silences its answer, never kills the thread."""
        try:
            action()
        except Exception as exc:  # the daemon must outlive a model bug
            self.errors += 1
            if tag is not None:
                self.cancel(tag)
                self._scheduler.cancel(tag)
            if self._log is not None:
                self._log({"event": "error", "t": self._clock(), "message": f"model worker: {type(exc).__name__}: {exc}"})
        finally:
            self.responding = None

    def _respond(self, request: ResponseRequest) -> None:
        if self.is_cancelled(request.tag):
            return
        self.responding = request.tag
        stream = self._predictor.fork()
        onset = request.start_at
        chord: list[int] = []
        for index in range(request.length):
            row = stream.sample(request.params, chord=chord)
            if index > 0:
                onset += float(row[STEP])
                chord = chord + [int(row[PITCH])] if row[STEP] == 0 else [int(row[PITCH])]
            else:
                chord = [int(row[PITCH])]
            if onset - request.start_at > request.max_seconds:
                break
            velocity = int(np.clip(round(row[VELOCITY] * request.velocity_scale), 1, 127))
            with self._guard:
                if request.tag in self._cancelled:
                    return
                self._scheduler.schedule_note(
                    int(row[PITCH]), velocity, request.channel, onset, onset + float(row[DURATION]), request.tag
                )
                self.notes_scheduled += 1
            if index + 1 < request.length:
                stream.feed(row)
