"""The key of what was just played, and a prior that keeps the answer in it.

Why: the model alone drifts out of the player's key on music far from its corpus (held-out styles:
88 % of its notes in the call's key against 92 % for the real continuation, ten seeds), and a
player in B-flat minor expects the answer to stay there.  So the stream tracks the Krumhansl-
Kessler key of the last notes fed to it, except the notes it sampled itself (an answer keeps the
key of what it answers instead of wandering round the circle of fifths on its own notes; the
player's next phrase moves it), and sampling multiplies the probability of every pitch outside
that key by ``1 - strength``: 0 leaves the model as trained, 0.5 halves the odds of a chromatic
note, 1 allows the key's pitches only.

The key's scale is the major scale, or the natural minor with the leading tone, as ``livegen eval``
measures it (livegen/train/follow.py).  numpy only: the sampling path makes no torch call.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

WINDOW = 32
"""Notes the key is read from (about two bars of chords, or a phrase of melody)."""

DEFAULT_STRENGTH = 0.5
"""What ``livegen run``, ``generate`` and ``eval`` use unless told otherwise (the presets' default):
in-key share 0.885 -> 0.942 on held-out styles (the real continuation: 0.920, ten seeds) and
0.941 -> 0.967 on the test split (0.960, three seeds); see models/default/MODEL_CARD.md."""

MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor plus the leading tone
NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def _profiles() -> np.ndarray:
    """(24, 12): each key's profile, centred, so that argmax(profiles @ histogram) is the key
    whose profile correlates best with the histogram (the histogram's own mean and spread
    change every correlation alike)."""
    rows = [np.roll(profile, tonic) for profile in (MAJOR_PROFILE, MINOR_PROFILE) for tonic in range(12)]
    rows = np.array(rows)
    return (rows - rows.mean(axis=1, keepdims=True)) / rows.std(axis=1, keepdims=True)


PROFILES = _profiles()


def key_name(key: int) -> str:
    """``0..11`` major keys, ``12..23`` minor keys: "F# major", "Bb minor"."""
    return f"{NAMES[key % 12]} {'minor' if key >= 12 else 'major'}"


def key_pitch_classes(key: int) -> frozenset[int]:
    tonic, scale = key % 12, (MINOR_SCALE if key >= 12 else MAJOR_SCALE)
    return frozenset((tonic + step) % 12 for step in scale)


class KeyTracker:
    """Duration-weighted pitch classes of the last ``window`` notes, and their key.

    ``push`` is O(1) per note in plain Python (a microsecond); ``key()`` is one (24, 12) product,
    cached until the next note."""

    def __init__(self, window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError(f"key window must be at least 1 note, not {window}")
        self.window = window
        self._notes: deque[tuple[int, float]] = deque()
        self._histogram = [0.0] * 12
        self._key: int | None = None
        self._stale = False

    def push(self, pitch: float, duration: float) -> None:
        pitch_class, weight = int(round(pitch)) % 12, float(duration)
        if not weight >= 1e-3 or math.isinf(weight):  # NaN, negative, tiny or infinite: a short note
            weight = 1e-3
        self._notes.append((pitch_class, weight))
        self._histogram[pitch_class] += weight
        if len(self._notes) > self.window:
            old_class, old_weight = self._notes.popleft()
            self._histogram[old_class] -= old_weight
        self._stale = True

    def key(self) -> int | None:
        """The best-correlating key (0-11 major, 12-23 minor), or None before any note or when
        every pitch class weighs the same (no key is better than another)."""
        if self._stale:
            histogram = self._histogram
            flat = max(histogram) - min(histogram) <= 1e-9
            self._key = None if flat else int(np.argmax(PROFILES @ np.array(histogram)))
            self._stale = False
        return self._key

    def clear(self) -> None:
        self._notes.clear()
        self._histogram = [0.0] * 12
        self._key, self._stale = None, False

    def copy(self) -> "KeyTracker":
        other = KeyTracker.__new__(KeyTracker)
        other.window, other._notes, other._histogram = self.window, deque(self._notes), list(self._histogram)
        other._key, other._stale = self._key, self._stale
        return other


def key_log_prior(key: int, strength: float) -> np.ndarray:
    """(128,) additive log-probabilities: 0 on the key's pitches, log(1 - strength) elsewhere
    (-inf at strength 1)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"key prior must be in [0, 1], got {strength}")
    inside = np.zeros(12, dtype=bool)
    inside[list(key_pitch_classes(key))] = True
    outside = -np.inf if strength >= 1.0 else float(np.log1p(-strength))
    return np.where(np.tile(inside, 11)[:128], 0.0, outside)
