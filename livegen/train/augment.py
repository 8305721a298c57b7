"""Augmentation: make a model trained on scores at home with live playing.

Applied to a whole piece once per epoch (new random draws each epoch):

* transposition anywhere on the keyboard where the piece stays inside the piano range (uniform
  over those shifts), so the model has no favourite register and follows the player's;
* tempo scaling (steps and durations times one factor, log-uniform, x0.5 to x2);
* for quantised sources (scores): small Gaussian onset jitter (one offset per onset, so chords
  stay chords), a little articulation change of durations, and velocity variation (a per-piece level plus per-note spread), since a score has
  neither timing nor dynamics of a performance.

Pure numpy; every function takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from livegen.notes import DURATION, PITCH, STEP, VELOCITY

PIANO_LOW, PIANO_HIGH = 21, 108


@dataclass(frozen=True)
class AugmentConfig:
    transpose: int = 88  # up to this many semitones either way (88: anywhere on the piano)
    tempo: float = 1.0  # factor drawn log-uniformly in [1/(1+tempo), 1+tempo]
    jitter: float = 0.008  # seconds, std of onset noise (quantised sources)
    articulation: float = 0.15  # durations times U[1-a, 1] (quantised sources)
    velocity_level: float = 15.0  # std of a per-piece velocity offset (quantised sources)
    velocity_spread: float = 6.0  # std of per-note velocity noise (quantised sources)

    def to_dict(self) -> dict:
        return asdict(self)


NO_AUGMENTATION = AugmentConfig(0, 0.0, 0.0, 0.0, 0.0, 0.0)


def transpose(notes: np.ndarray, rng: np.random.Generator, semitones: int) -> np.ndarray:
    """Shift by a random interval in [-semitones, semitones] that keeps the piece in 21..108."""
    if semitones <= 0 or len(notes) == 0:
        return notes
    low, high = notes[:, PITCH].min(), notes[:, PITCH].max()
    down = int(min(semitones, max(low - PIANO_LOW, 0)))
    up = int(min(semitones, max(PIANO_HIGH - high, 0)))
    shift = int(rng.integers(-down, up + 1))
    out = notes.copy()
    out[:, PITCH] += shift
    return out


def scale_tempo(notes: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    if amount <= 0:
        return notes
    factor = float(np.exp(rng.uniform(-np.log1p(amount), np.log1p(amount))))
    out = notes.copy()
    out[:, STEP] *= factor
    out[:, DURATION] *= factor
    return out


def humanise(notes: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Onset jitter, articulation and velocity variation for a quantised piece; rows re-sorted."""
    out = notes.copy()
    n = len(out)
    if config.jitter > 0 and n > 1:
        # One offset per onset, so a chord moves as a whole and stays a chord (step 0, low to
        # high): jittering its notes apart would shuffle their order and teach the model that
        # chords are random arpeggios.
        onset_index = np.cumsum(out[:, STEP] > 0)  # notes at one onset share an index
        onsets = np.cumsum(out[:, STEP]) + rng.normal(0.0, config.jitter, onset_index[-1] + 1)[onset_index]
        order = np.argsort(onsets, kind="stable")
        out, onsets = out[order], onsets[order]
        out[1:, STEP] = np.diff(onsets)
        out[0, STEP] = 0.0
    if config.articulation > 0:
        out[:, DURATION] *= rng.uniform(1.0 - config.articulation, 1.0, n)
    if config.velocity_level > 0 or config.velocity_spread > 0:
        level = rng.normal(0.0, config.velocity_level)
        out[:, VELOCITY] = np.clip(np.round(out[:, VELOCITY] + level + rng.normal(0.0, config.velocity_spread, n)), 1, 127)
    out[:, DURATION] = np.maximum(out[:, DURATION], 0.01)
    return out


def augment(notes: np.ndarray, quantised: bool, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """One random variant of a piece's (N, 4) note array."""
    notes = np.asarray(notes, dtype=np.float64)
    notes = transpose(notes, rng, config.transpose)
    notes = scale_tempo(notes, rng, config.tempo)
    if quantised:
        notes = humanise(notes, rng, config)
    return notes
