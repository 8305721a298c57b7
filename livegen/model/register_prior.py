"""The register the player is playing in, and a prior that keeps the answer near it.

Why: sampled notes wander.  On the validation split the answers of release 0.2 (key prior on)
put 12 % of their notes outside the lowest-to-highest span of the 24-note call, where the real
continuation puts 7.5 % there; the answers that ended more than 5 semitones from the call's mean
pitch had 35 % of their notes outside it.  "Play high, it stays high" is what a player
expects, so the stream tracks the span of the last notes the player fed (the lowest and the
highest of the last ``WINDOW``; the notes it sampled itself do not count, as for the key), and
sampling multiplies a pitch's probability by ``(1 - strength)`` for every ``OCTAVE`` semitones it
lies beyond that span: 0 leaves the model as trained, 0.5 halves the odds of a pitch an octave
above the highest note played, 1 keeps the answer inside the span.

numpy only: the sampling path makes no torch call.
"""

from __future__ import annotations

from collections import deque

import numpy as np

WINDOW = 32
"""Notes the span is read from (as the key: about two bars of chords, or a phrase of melody)."""

OCTAVE = 12.0
"""Semitones beyond the span over which a pitch's odds fall by the factor ``1 - strength``."""

DEFAULT_STRENGTH = 0.75
"""What ``livegen run``, ``generate`` and ``eval`` use unless told otherwise (the presets' default):
chosen on the validation split as the strength whose register distance is nearest the real
music's (1.21x -> 1.03x); on the test split 1.32x -> 1.10x (3 seeds) and on the held-out styles
1.28x -> 1.09x (10 seeds); see models/default/MODEL_CARD.md."""


class RegisterTracker:
    """The lowest and the highest of the last ``window`` pitches pushed.

    ``push`` is O(1) in plain Python; ``span()`` is one min/max over the window, cached until the
    next push."""

    def __init__(self, window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError(f"register window must be at least 1 note, not {window}")
        self.window = window
        self._pitches: deque[int] = deque(maxlen=window)
        self._span: tuple[int, int] | None = None
        self._stale = False

    def push(self, pitch: float) -> None:
        if pitch == pitch:  # NaN is no pitch
            self._pitches.append(min(max(int(round(pitch)), 0), 127))
            self._stale = True

    def span(self) -> tuple[int, int] | None:
        """(lowest, highest) of the window, or None before any note."""
        if self._stale:
            self._span = (min(self._pitches), max(self._pitches))
            self._stale = False
        return self._span

    def clear(self) -> None:
        self._pitches.clear()
        self._span, self._stale = None, False

    def copy(self) -> "RegisterTracker":
        other = RegisterTracker.__new__(RegisterTracker)
        other.window, other._pitches = self.window, deque(self._pitches, maxlen=self.window)
        other._span, other._stale = self._span, self._stale
        return other


def register_log_prior(span: tuple[int, int], strength: float) -> np.ndarray:
    """(128,) additive log-probabilities: 0 inside ``span`` (inclusive), and
    ``log(1 - strength)`` per ``OCTAVE`` semitones beyond it (-inf beyond it at strength 1)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"register prior must be in [0, 1], got {strength}")
    low, high = span
    pitches = np.arange(128)
    beyond = np.maximum(low - pitches, 0) + np.maximum(pitches - high, 0)
    if strength >= 1.0:
        return np.where(beyond > 0, -np.inf, 0.0)
    return beyond * (float(np.log1p(-strength)) / OCTAVE)
