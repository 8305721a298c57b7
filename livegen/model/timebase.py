"""Time relative to the player's tempo: the unit the model counts steps and durations in.

A model that reads and predicts seconds learns the tempo of its corpus and plays it whatever the
player does (the shipped model of 0.1 answered a call played at 0.6x and at 1.6x with the same
rhythm).  A model that reads steps and durations in units of the *running tempo* cannot: when
the player plays twice as fast, every unit halves, the model sees the same numbers, and its answer,
converted back to seconds with the same unit, is twice as fast.

The unit before a note is the median of the last ``window`` inter-onset intervals (steps of at
least ``chord_seconds``; the notes of a chord have none), or ``default`` before any is known.
The median shrugs off rubato, a held note or one pause, and three intervals (a four-note phrase)
already give it.  It is causal: note i is expressed in the unit known before it, so a stream fed
note by note and a batch encoded at once see the same numbers.

With a MIDI clock the beat is known better than any estimate, so the unit snaps to the power-of-two
fraction or multiple of the clock's beat nearest to the median (a player playing eighths on a
120 BPM clock gets exactly 0.25 s).

numpy only: the engine may use it without torch.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Iterable

import numpy as np

DEFAULT_WINDOW = 16
DEFAULT_UNIT = 0.3  # seconds; only before the first interval is known
CHORD_SECONDS = 0.01  # onsets closer than this are one chord


def snap_to_beat(unit: float, beat: float) -> float:
    """The power-of-two fraction or multiple of ``beat`` nearest to ``unit`` (in log time)."""
    return beat * 2.0 ** round(math.log2(unit / beat))


class TempoTracker:
    """The running unit of one stream of notes: push every note's step, read ``unit``."""

    __slots__ = ("window", "default", "chord_seconds", "beat", "_recent", "_median")

    def __init__(self, window: int = DEFAULT_WINDOW, default: float = DEFAULT_UNIT,
                 chord_seconds: float = CHORD_SECONDS) -> None:
        if window < 1 or not default > 0 or not chord_seconds > 0:
            raise ValueError("window must be >= 1, default and chord_seconds > 0")
        self.window, self.default, self.chord_seconds = window, default, chord_seconds
        self.beat: float | None = None  # seconds per beat of a running MIDI clock
        self._recent: deque[float] = deque(maxlen=window)
        self._median: float | None = None  # of _recent, kept until the next push (unit is read several times a note)

    @property
    def unit(self) -> float:
        """Seconds per unit for the next note."""
        median = self._median
        if median is None and self._recent:
            median = self._median = statistics.median(self._recent)
        if self.beat is not None and self.beat > 0:
            return snap_to_beat(median, self.beat) if median else self.beat
        return median or self.default

    @property
    def recent(self) -> tuple[float, ...]:
        return tuple(self._recent)

    def push(self, step: float) -> None:
        """Record one note's step in seconds (chord notes and non-finite steps add nothing)."""
        if step >= self.chord_seconds and math.isfinite(step):
            self._recent.append(float(step))
            self._median = None

    def extend(self, steps: Iterable[float]) -> None:
        for step in steps:
            self.push(float(step))

    def reset(self) -> None:
        self._recent.clear()
        self._median = None

    def copy(self) -> "TempoTracker":
        other = TempoTracker(self.window, self.default, self.chord_seconds)
        other.beat = self.beat
        other._recent.extend(self._recent)
        other._median = self._median
        return other


def causal_units(steps: np.ndarray, window: int = DEFAULT_WINDOW, default: float = DEFAULT_UNIT,
                 chord_seconds: float = CHORD_SECONDS, history: Iterable[float] = ()) -> np.ndarray:
    """The unit before each of a sequence of steps (seconds), as a TempoTracker fed one by one
    gives it: unit[i] depends on ``history`` (earlier intervals, oldest first) and steps[:i].

    Vectorised for training, where every epoch re-encodes millions of notes.
    """
    steps = np.asarray(steps, dtype=np.float64).reshape(-1)
    past = np.array([s for s in history if s >= chord_seconds and math.isfinite(s)][-window:], dtype=np.float64)
    valid = (steps >= chord_seconds) & np.isfinite(steps)
    values = np.concatenate([past, steps[valid]])
    before = len(past) + np.cumsum(valid) - valid  # intervals known before each step
    # medians[c] = median(values[max(0, c - window):c]) for every count c that occurs.
    padded = np.concatenate([np.full(window, np.nan), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)  # row c = values[c - window:c]
    medians = np.full(len(windows), float(default))
    if len(windows) > 1:
        with np.errstate(all="ignore"):
            medians[1:] = np.nanmedian(windows[1:], axis=1)
    return medians[before]


def order_chords(rows: np.ndarray, order: str, chord_seconds: float = CHORD_SECONDS) -> np.ndarray:
    """Notes struck together (steps below ``chord_seconds``) sorted high-to-low ("descending") or
    low-to-high ("ascending"); each position keeps its step, so the rhythm is unchanged.

    The model learns chords in this order, so it must read them in it too.  Descending puts the
    top note (mostly the melody) first, so "given the melody, the notes below" is what it learns.
    """
    rows = np.asarray(rows)
    if len(rows) < 2 or order not in ("ascending", "descending"):
        return rows
    group = np.cumsum(rows[:, 1] >= chord_seconds)
    if len(np.unique(group)) == len(group):
        return rows
    pitch = rows[:, 0] if order == "ascending" else -rows[:, 0]
    permutation = np.lexsort((pitch, group))
    out = rows.copy()
    out[:, [0, 2, 3]] = rows[permutation][:, [0, 2, 3]]
    return out
