"""Live control: which controller does what, and how a 0..127 value maps to a setting.

The engine thread hands every ``ControlChanged`` to ``ControlMap.interpret``; what comes back is
a ``(name, value)`` the session applies: temperature, length and gap take effect on the next
answer, mode too (the mode knob's travel is cut in four: call-response, overlap, mirror,
harmonize), and the session memory's weight; panic, mute and memory reset act at once.  End-call is the phrase detector's (it needs the
press, not the value) and is only listed here so presets and MIDI learn see one map.

``TimedScheduler`` sits between the worker and the scheduler: it moves each answer's notes by
the preset's latency offset and, when the answer has a grid, snaps the onsets to it (the first
note on the first grid point at or after the gap end), keeping every duration.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Hashable

from livegen.engine.tempo import Grid

MODES = ("call-response", "overlap", "mirror", "harmonize")
LEARNABLE = ("temperature", "length", "gap", "mode", "panic", "end_call", "mute")

STATE_VALUES = {"idle": 0, "listening": 64, "playing": 127}
"""Values of the state output CC (for controller LEDs)."""


@dataclass(frozen=True)
class ControlMap:
    channel: int | None = None  # 0-15, None: any channel
    temperature: int | None = None
    length: int | None = None
    gap: int | None = None
    mode: int | None = None
    panic: int | None = None
    end_call: int | None = None
    mute: int | None = None
    memory: int | None = None  # the session memory's weight (knob 0..127 -> memory_range)
    memory_reset: int | None = None  # clears the session memory (value >= 64)
    state_out: int | None = None
    temperature_range: tuple[float, float] = (0.1, 2.0)
    length_range: tuple[int, int] = (1, 64)
    gap_range_s: tuple[float, float] = (0.1, 2.0)
    memory_range: tuple[float, float] = (0.0, 1.0)

    def interpret(self, channel: int, control: int, value: int) -> tuple[str, object] | None:
        """The setting a controller message changes, mapped to its range; None if none."""
        if self.channel is not None and channel != self.channel:
            return None
        x = value / 127.0
        if control == self.temperature:
            low, high = self.temperature_range
            return "temperature", round(low + x * (high - low), 3)
        if control == self.length:
            low, high = self.length_range
            return "length", int(round(low + x * (high - low)))
        if control == self.gap:
            low, high = self.gap_range_s
            return "gap", round(low + x * (high - low), 4)
        if control == self.mode:
            return "mode", MODES[min(value * len(MODES) // 128, len(MODES) - 1)]
        if control == self.panic:
            return ("panic", True) if value >= 64 else None
        if control == self.mute:
            return "mute", value >= 64
        if control == self.memory:
            low, high = self.memory_range
            return "memory", round(low + x * (high - low), 3)
        if control == self.memory_reset:
            return ("memory_reset", True) if value >= 64 else None
        return None


@dataclass
class _Timing:
    grid: Grid | None
    offset: float
    first: float | None = None


class TimedScheduler:
    """A NoteScheduler proxy applying per-answer timing (latency offset, grid) by tag."""

    def __init__(self, scheduler) -> None:
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._timing: dict[Hashable, _Timing] = {}

    def set_timing(self, tag: Hashable, grid: Grid | None, offset: float) -> None:
        if grid is None and not offset:
            return
        with self._lock:
            self._timing[tag] = _Timing(grid, offset)
            if len(self._timing) > 64:  # old answers: forget
                for old in list(self._timing)[:-32]:
                    del self._timing[old]

    def grid_of(self, tag: Hashable) -> Grid | None:
        """The grid answer ``tag`` snaps to (for the log), or None."""
        with self._lock:
            timing = self._timing.get(tag)
        return None if timing is None else timing.grid

    def schedule_note(self, pitch, velocity, channel, on_at, off_at, tag=None):
        with self._lock:
            timing = self._timing.get(tag)
            if timing is not None and timing.grid is not None:
                length = off_at - on_at
                if timing.first is None:
                    on_at = timing.first = timing.grid.ceil(on_at)
                else:
                    on_at = timing.grid.snap(on_at, not_before=timing.first)
                off_at = on_at + length
        if timing is not None:
            on_at += timing.offset
            off_at += timing.offset
        return self._scheduler.schedule_note(pitch, velocity, channel, on_at, off_at, tag)

    def cancel(self, tag=None, now=None):
        return self._scheduler.cancel(tag, now)
