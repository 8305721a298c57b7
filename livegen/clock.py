"""The clock type the engine and the sinks take, and a manual clock so tests and demos never sleep.

It sits at the bottom of the package (beside notes.py and midi_bytes.py) because both livegen/io
and livegen/engine take an injected clock, and imports only run down."""

from __future__ import annotations

from typing import Callable

Clock = Callable[[], float]
"""Returns seconds on a monotonic scale; ``time.monotonic`` in the daemon."""


class ManualClock:
    """A clock that moves only when told to: call it for the time, ``advance`` to move it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.now += seconds
        return self.now

    def set(self, t: float) -> float:
        if t < self.now:
            raise ValueError(f"a monotonic clock cannot go back ({t} < {self.now})")
        self.now = float(t)
        return self.now
