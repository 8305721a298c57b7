"""Does the answer follow the player?  Tempo, register, key, dynamics and chords, measured.

A model is judged by what a player hears.  Each held-out piece gives a *call* (its first notes, as
a player would play them) and the *real continuation* (the notes that follow).  The call is
played to the model at other tempos, an octave lower and higher, softly and loudly, and the
answers are measured against the call, with the real continuation as the reference of what music
does:

* tempo slope: log(median inter-onset interval of the answer) regressed on log(that of the call),
  within each piece, over calls at 0.6x, 1x and 1.6x tempo (1 = the answer follows the player,
  0 = it ignores him); tempo error: |log(answer IOI / real continuation IOI)| at 1x;
* register: |mean pitch of the answer - mean pitch of the call|, and the same for the real
  continuation; register slope: answer mean pitch on call mean pitch over octave shifts;
* key: share of answer notes in the call's Krumhansl-Kessler key (major scale, or natural minor
  plus the leading tone), and the real continuation's share;
* dynamics slope: answer mean velocity over call mean velocity between a soft and a loud call;
* chord share: notes struck with another (step under 10 ms), answer and real continuation.

numpy only; the predictors come from livegen.train.evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from livegen.model.key_prior import MAJOR_PROFILE, MAJOR_SCALE, MINOR_PROFILE, MINOR_SCALE
from livegen.notes import DURATION, PITCH, STEP, VELOCITY

TEMPO_FACTORS = (0.6, 1.0, 1.6)  # the call played at these tempos (1.6 = faster)
OCTAVE_SHIFTS = (-12, 0, 12)
SOFT, LOUD = 40.0, 100.0  # mean velocities of the soft and loud calls
CHORD_SECONDS = 0.01
MAJOR, MINOR = MAJOR_PROFILE, MINOR_PROFILE  # Krumhansl-Kessler, shared with the key prior that sampling applies


@dataclass(frozen=True)
class FollowSettings:
    call_notes: int = 24
    answer_notes: int = 16
    max_pieces: int = 150
    temperature: float = 1.0
    seed: int = 0
    pitch_range: tuple[int, int] = (21, 108)


def median_ioi(rows: np.ndarray) -> float | None:
    """Median interval between onsets (chord notes share one onset), or None under two onsets."""
    steps = np.asarray(rows)[1:, STEP]
    steps = steps[steps >= CHORD_SECONDS]
    return float(np.median(steps)) if len(steps) else None


def key_of(rows: np.ndarray) -> tuple[int, str]:
    """Krumhansl-Kessler key (tonic pitch class, "major"/"minor") of duration-weighted pitch classes."""
    rows = np.asarray(rows)
    histogram = np.bincount(rows[:, PITCH].astype(int) % 12, weights=np.maximum(rows[:, DURATION], 1e-3), minlength=12)
    best, best_key = -np.inf, (0, "major")
    for tonic in range(12):
        for mode, profile in (("major", MAJOR), ("minor", MINOR)):
            r = np.corrcoef(histogram, np.roll(profile, tonic))[0, 1]
            if np.isfinite(r) and r > best:
                best, best_key = r, (tonic, mode)
    return best_key


def in_key_share(rows: np.ndarray, key: tuple[int, str]) -> float:
    tonic, mode = key
    scale = {(tonic + d) % 12 for d in (MAJOR_SCALE if mode == "major" else MINOR_SCALE)}
    pitch_classes = np.asarray(rows)[:, PITCH].astype(int) % 12
    return float(np.mean([pc in scale for pc in pitch_classes])) if len(pitch_classes) else float("nan")


def chord_share(rows: np.ndarray) -> float:
    steps = np.asarray(rows)[1:, STEP]
    return float(np.mean(steps < CHORD_SECONDS)) if len(steps) else 0.0


def at_tempo(rows: np.ndarray, factor: float) -> np.ndarray:
    out = np.array(rows, dtype=np.float64)
    out[:, [STEP, DURATION]] /= factor
    return out


def at_level(rows: np.ndarray, mean_velocity: float) -> np.ndarray:
    out = np.array(rows, dtype=np.float64)
    out[:, VELOCITY] = np.clip(np.round(out[:, VELOCITY] - out[:, VELOCITY].mean() + mean_velocity), 1, 127)
    return out


def transposed(rows: np.ndarray, semitones: int, pitch_range: tuple[int, int]) -> np.ndarray | None:
    out = np.array(rows, dtype=np.float64)
    out[:, PITCH] += semitones
    low, high = pitch_range
    return out if out[:, PITCH].min() >= low and out[:, PITCH].max() <= high else None


def _within_slope(groups: list[list[tuple[float, float]]]) -> float | None:
    """Slope of y on x with an intercept per group (pooled within-group regression)."""
    sxy = sxx = 0.0
    for points in groups:
        if len(points) < 2:
            continue
        x, y = np.array(points).T
        x, y = x - x.mean(), y - y.mean()
        sxy += float(x @ y)
        sxx += float(x @ x)
    return sxy / sxx if sxx > 0 else None


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return round(float(np.mean(values)), 4) if values else None


def _median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return round(float(np.median(values)), 4) if values else None


def follow_pairs(pieces, settings: FollowSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """(call, real continuation) per piece long enough, at most ``max_pieces`` spread over the set."""
    pairs = []
    need = settings.call_notes + settings.answer_notes
    for piece in pieces:
        rows = np.asarray(piece.notes, dtype=np.float64)
        if len(rows) >= need and median_ioi(rows[: settings.call_notes]) and median_ioi(rows[settings.call_notes:need]):
            pairs.append((rows[: settings.call_notes], rows[settings.call_notes:need]))
    if settings.max_pieces and len(pairs) > settings.max_pieces:
        keep = np.linspace(0, len(pairs) - 1, settings.max_pieces).round().astype(int)
        pairs = [pairs[i] for i in keep]
    return pairs


def follow(predictor, pairs: list[tuple[np.ndarray, np.ndarray]], settings: FollowSettings) -> dict:
    """The follow metrics of one predictor (see the module docstring) on (call, continuation) pairs."""
    length, low_high = settings.answer_notes, settings.pitch_range

    def answer(call: np.ndarray, index: int) -> np.ndarray:
        rows = predictor.continue_rows(call, length, settings.seed + index, settings.temperature, low_high)
        return np.nan_to_num(np.asarray(rows, dtype=np.float64))

    tempo_groups, register_groups = [], []
    tempo_error, tempo_error_real = [], []
    register, register_real, key_share, key_share_real = [], [], [], []
    soft_loud, chords, chords_real = [], [], []
    for index, (call, real) in enumerate(pairs):
        points = []
        for factor in TEMPO_FACTORS:
            played = at_tempo(call, factor)
            out = answer(played, index)
            ioi = median_ioi(out)
            if ioi:
                points.append((np.log(median_ioi(played)), np.log(ioi)))
            if factor == 1.0:
                real_ioi, call_ioi = median_ioi(real), median_ioi(call)
                if ioi:
                    tempo_error.append(abs(np.log(ioi / real_ioi)))
                tempo_error_real.append(abs(np.log(real_ioi / call_ioi)))
                call_pitch = call[:, PITCH].mean()
                register.append(abs(out[:, PITCH].mean() - call_pitch))
                register_real.append(abs(real[:, PITCH].mean() - call_pitch))
                key = key_of(call)
                key_share.append(in_key_share(out, key))
                key_share_real.append(in_key_share(real, key))
                chords.append(chord_share(out))
                chords_real.append(chord_share(real))
        tempo_groups.append(points)
        shifted = []
        for semitones in OCTAVE_SHIFTS:
            moved = transposed(call, semitones, low_high)
            if moved is not None:
                shifted.append((moved[:, PITCH].mean(), answer(moved, index)[:, PITCH].mean()))
        register_groups.append(shifted)
        soft, loud = at_level(call, SOFT), at_level(call, LOUD)
        spread = loud[:, VELOCITY].mean() - soft[:, VELOCITY].mean()
        if spread > 0:
            soft_loud.append((answer(loud, index)[:, VELOCITY].mean() - answer(soft, index)[:, VELOCITY].mean()) / spread)

    slope = _within_slope(tempo_groups)
    register_slope = _within_slope(register_groups)
    distance, distance_real = _mean(register), _mean(register_real)
    share, share_real = _mean(key_share), _mean(key_share_real)
    return {
        "pieces": len(pairs),
        "tempo_slope": None if slope is None else round(slope, 4),
        "tempo_error": _median(tempo_error),
        "tempo_error_real": _median(tempo_error_real),
        "register_distance": distance,
        "register_distance_real": distance_real,
        "register_ratio": round(distance / distance_real, 4) if distance is not None and distance_real else None,
        "register_slope": None if register_slope is None else round(register_slope, 4),
        "in_key": share,
        "in_key_real": share_real,
        "in_key_gap": round(share - share_real, 4) if share is not None and share_real is not None else None,
        "dynamics_slope": _mean(soft_loud),
        "chord_share": _mean(chords),
        "chord_share_real": _mean(chords_real),
        "settings": {"call_notes": settings.call_notes, "answer_notes": settings.answer_notes,
                     "tempo_factors": list(TEMPO_FACTORS), "octave_shifts": list(OCTAVE_SHIFTS),
                     "soft_loud": [SOFT, LOUD], "temperature": settings.temperature, "seed": settings.seed},
    }
