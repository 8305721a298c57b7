"""Tempo: follow a MIDI clock (24 ticks per quarter note), else estimate it from the phrase.

``ClockFollower`` keeps the arrival times of the last ticks since Start and fits a line
``t = origin + index * tick_period`` by least squares, so one late tick moves the grid by a
fraction of its jitter instead of its whole delay.  Tick 0 after Start (0xFA) is a downbeat, as
the MIDI spec says; without a Start the first tick seen is taken as one.  ``grid(division)``
freezes the current estimate into a ``Grid`` that the worker thread snaps onsets to.

Without a clock, ``phrase_beat(onsets)`` estimates the beat from the median inter-onset interval
of the player's phrase (folded into 60..180 BPM) and ``Grid`` is anchored at the phrase's first
onset.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

TICKS_PER_BEAT = 24
FIT_TICKS = 192  # four beats of ticks in the fit: the slope error grows as the grid is extrapolated
CLOCK_TIMEOUT_S = 0.5  # no tick for this long: the clock is gone
CHORD_TOLERANCE_S = 0.035
LATE_TICK_S = 0.002  # a tick this much later than the fitted line is never called an outlier

DIVISIONS = {"1/4": 1.0, "1/8": 0.5, "1/8t": 1 / 3, "1/16": 0.25, "1/16t": 1 / 6, "1/32": 0.125}
"""Grid step in beats (quarter notes) per quantize setting."""


@dataclass(frozen=True)
class Grid:
    """Points ``origin + k * step``; immutable, so another thread can use it safely."""

    origin: float
    step: float
    source: str = "clock"  # what the tempo came from: "clock" (MIDI clock) or "phrase" (the player's onsets)

    def snap(self, t: float, not_before: float | None = None) -> float:
        """The grid point nearest ``t``, but never before ``not_before``."""
        k = round((t - self.origin) / self.step)
        point = self.origin + k * self.step
        if not_before is not None and point < not_before - 1e-9:
            point = self.ceil(not_before)
        return point

    def ceil(self, t: float) -> float:
        """The first grid point at or after ``t``."""
        return self.origin + math.ceil((t - self.origin) / self.step - 1e-9) * self.step


class ClockFollower:
    """MIDI clock state from tick/start/stop/continue events (engine thread only)."""

    def __init__(self) -> None:
        self._ticks: deque[tuple[int, float]] = deque(maxlen=FIT_TICKS)
        self._count = 0
        self.running = False

    def tick(self, t: float) -> None:
        self._ticks.append((self._count, t))
        self._count += 1
        self.running = True

    def start(self, t: float) -> None:
        self._ticks.clear()
        self._count = 0
        self.running = True

    def stop(self, t: float) -> None:
        self.running = False

    def cont(self, t: float) -> None:
        self.running = True

    def present(self, now: float) -> bool:
        return self.running and len(self._ticks) >= 6 and now - self._ticks[-1][1] < CLOCK_TIMEOUT_S

    def fit(self) -> tuple[float, float] | None:
        """(time of tick 0, seconds per tick) fitted to the last ticks (see ``fit_ticks``)."""
        return fit_ticks(list(self._ticks))

    @property
    def beat(self) -> float | None:
        """Seconds per quarter note, or None."""
        fitted = self.fit()
        return None if fitted is None else fitted[1] * TICKS_PER_BEAT

    @property
    def bpm(self) -> float | None:
        beat = self.beat
        return None if beat is None else 60.0 / beat

    def grid(self, division: str) -> Grid | None:
        fitted = self.fit()
        if fitted is None:
            return None
        origin, tick = fitted
        step_ticks = TICKS_PER_BEAT * DIVISIONS[division]
        # Anchor on the newest grid tick (not tick 0, maybe minutes ago), so a small slope error
        # is extrapolated over the answer's length only.
        anchor = int(self._ticks[-1][0] // step_ticks * step_ticks)
        return Grid(origin + anchor * tick, tick * step_ticks)


def fit_ticks(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """(time of tick 0, seconds per tick) by least squares over ``(tick index, arrival)`` points.

    Ticks can arrive late (a stalled scheduler, a busy MIDI driver) but never early, so after
    a first fit the ticks far above the line are dropped and the line fitted again: a burst
    of late ticks then no longer tilts the grid.
    """
    if len(points) < 2:
        return None
    fitted = _line(points)
    if fitted is None or len(points) < 8:
        return fitted
    origin, slope = fitted
    residuals = [t - (origin + i * slope) for i, t in points]
    centre = statistics.median(residuals)
    spread = statistics.median(abs(r - centre) for r in residuals)
    limit = centre + max(4.0 * 1.4826 * spread, LATE_TICK_S)
    kept = [p for p, r in zip(points, residuals) if r <= limit]
    if len(kept) == len(points) or len(kept) < len(points) // 2:
        return fitted
    return _line(kept) or fitted


def _line(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Least-squares (intercept, slope) of time over tick index; None unless the slope is positive."""
    xs = [i for i, _ in points]
    ys = [t for _, t in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    if slope <= 0:
        return None
    return my - slope * mx, slope


def phrase_beat(onsets: list[float]) -> float | None:
    """Seconds per beat estimated from a phrase's onsets (median IOI folded into 60..180 BPM)."""
    distinct = [t for i, t in enumerate(onsets) if i == 0 or t - onsets[i - 1] >= CHORD_TOLERANCE_S]
    intervals = [b - a for a, b in zip(distinct, distinct[1:])]
    if len(intervals) < 2:
        return None
    beat = statistics.median(intervals)
    while beat < 60 / 180:
        beat *= 2
    while beat > 1.0:
        beat /= 2
    return beat
