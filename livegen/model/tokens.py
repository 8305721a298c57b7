"""Timing and velocity bins: the model predicts categories, not regressed means.

Regressing step and duration with MSE (the seed recipe) pulls every prediction toward the mean,
which is why its rhythms collapse to one value.  Here each field is a class over bins:

* step: an exact-zero bin (chords) below ``step_min``, then log-spaced bins up to ``step_max``;
* duration: log-spaced bins from ``duration_min`` to ``duration_max``;
* velocity: uniform bins over 1..127.

Log spacing keeps the relative error of a bin constant, which matches how we hear time.
Values beyond the last edge fall into the last bin.

``time = "relative"`` (the models from 0.2 on): step and duration are counted in units of the
running tempo (see livegen.model.timebase), so the bin edges are in units, not seconds; a step
shorter than ``chord_seconds`` is still the exact-zero bin.  ``time = "seconds"`` is the first
release's absolute time (and the Markov model's).  ``chord_order`` says how the notes of a chord
are ordered in training, so readers order them the same way.  This module imports only numpy so the
real-time and I/O layers can use it without torch.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, fields
from typing import Sequence

import numpy as np

from livegen.model.timebase import CHORD_SECONDS, DEFAULT_UNIT, DEFAULT_WINDOW, TempoTracker, causal_units
from livegen.notes import DURATION, PITCH, STEP, VELOCITY

FIELDS = ("pitch", "step", "duration", "velocity")
"""Token columns, in the order of a note array's columns."""


@dataclass(frozen=True)
class TokenConfig:
    step_bins: int = 48  # including the zero bin
    step_min: float = 0.01  # seconds; smaller steps count as simultaneous (chord)
    step_max: float = 4.0
    duration_bins: int = 48
    duration_min: float = 0.01
    duration_max: float = 8.0
    velocity_bins: int = 32
    time: str = "seconds"  # "seconds" or "relative" (steps and durations in units of the running tempo)
    tempo_window: int = DEFAULT_WINDOW  # relative: intervals the running median looks back over
    default_unit: float = DEFAULT_UNIT  # relative: seconds per unit before any interval is known
    chord_seconds: float = CHORD_SECONDS  # relative: shorter steps are chord notes (the zero bin)
    chord_order: str = "ascending"  # how chord notes are ordered: ascending (low first) or descending

    def __post_init__(self) -> None:
        if self.time not in ("seconds", "relative"):
            raise ValueError(f"time must be seconds or relative, got {self.time!r}")
        if self.chord_order not in ("ascending", "descending"):
            raise ValueError(f"chord_order must be ascending or descending, got {self.chord_order!r}")
        if not isinstance(self.tempo_window, int) or self.tempo_window < 1 or not self.default_unit > 0 \
                or not self.chord_seconds > 0:
            raise ValueError(f"tempo_window must be >= 1, default_unit and chord_seconds > 0 in {self}")
        if self.step_bins < 3 or self.duration_bins < 2 or not 1 <= self.velocity_bins <= 127:
            raise ValueError(f"too few or too many bins in {self}")
        if not 0 < self.step_min < self.step_max or not 0 < self.duration_min < self.duration_max:
            raise ValueError(f"bin edges must satisfy 0 < min < max in {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def relative_default(cls, chord_order: str = "descending") -> "TokenConfig":
        """The bins of relative time: steps from 1/20 to 16 units, durations from 1/20 to 32."""
        return cls(step_min=0.05, step_max=16.0, duration_min=0.05, duration_max=32.0, time="relative",
                   chord_order=chord_order)

    @classmethod
    def from_dict(cls, data: dict) -> "TokenConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown token config keys: {', '.join(unknown)}")
        return cls(**data)


class Tokenizer:
    """Encodes note arrays (pitch, step, duration, velocity) to int tokens and back."""

    def __init__(self, config: TokenConfig | None = None) -> None:
        self.config = config = config or TokenConfig()
        self.relative = config.time == "relative"
        # step: bin 0 is [0, step_min); bins 1.. are log-spaced intervals.
        self.step_edges = np.geomspace(config.step_min, config.step_max, config.step_bins)
        self.step_values = np.concatenate([[0.0], np.sqrt(self.step_edges[:-1] * self.step_edges[1:])])
        self.duration_edges = np.geomspace(config.duration_min, config.duration_max, config.duration_bins + 1)
        self.duration_values = np.sqrt(self.duration_edges[:-1] * self.duration_edges[1:])
        self.velocity_edges = np.linspace(1.0, 128.0, config.velocity_bins + 1)
        self.velocity_values = np.clip(np.round((self.velocity_edges[:-1] + self.velocity_edges[1:] - 1) / 2), 1, 127)
        # Plain lists for encode_one: bisect on a list beats numpy's per-call overhead on one note.
        self._edges = (self.step_edges.tolist(), self.duration_edges.tolist(), self.velocity_edges.tolist())
        self._values = (self.step_values.tolist(), self.duration_values.tolist(), self.velocity_values.tolist())

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """Number of classes per field, in FIELDS order."""
        c = self.config
        return (128, c.step_bins, c.duration_bins, c.velocity_bins)

    def tracker(self) -> TempoTracker:
        """A fresh running tempo for one stream of notes (relative time)."""
        c = self.config
        return TempoTracker(c.tempo_window, c.default_unit, c.chord_seconds)

    def units(self, steps: np.ndarray, tracker: TempoTracker | None = None) -> np.ndarray:
        """Seconds per unit before each step (all ones in absolute time).

        ``tracker``: the running tempo of the stream these steps continue (read, not changed).
        """
        steps = np.asarray(steps, dtype=np.float64).reshape(-1)
        if not self.relative:
            return np.ones(len(steps))
        c = self.config
        history = tracker.recent if tracker is not None else ()
        units = causal_units(steps, c.tempo_window, c.default_unit, c.chord_seconds, history)
        if tracker is not None and tracker.beat:
            from livegen.model.timebase import snap_to_beat

            units = np.array([snap_to_beat(u, tracker.beat) for u in units])
        return units

    def encode_step(self, seconds: np.ndarray | float, units: np.ndarray | float = 1.0) -> np.ndarray:
        seconds = np.asarray(seconds, dtype=np.float64)
        if self.relative:
            with np.errstate(all="ignore"):
                bins = np.maximum(np.searchsorted(self.step_edges, seconds / units, side="right"), 1)
            bins = np.where(seconds < self.config.chord_seconds, 0, bins)
        else:
            bins = np.searchsorted(self.step_edges, seconds, side="right")  # 0 below step_min
        return np.minimum(bins, self.config.step_bins - 1)

    def encode_duration(self, seconds: np.ndarray | float) -> np.ndarray:
        seconds = np.asarray(seconds, dtype=np.float64)
        bins = np.searchsorted(self.duration_edges, seconds, side="right") - 1
        return np.clip(bins, 0, self.config.duration_bins - 1)

    def encode_velocity(self, velocity: np.ndarray | float) -> np.ndarray:
        velocity = np.asarray(velocity, dtype=np.float64)
        bins = np.searchsorted(self.velocity_edges, velocity, side="right") - 1
        return np.clip(bins, 0, self.config.velocity_bins - 1)

    def encode(self, notes: np.ndarray, tracker: TempoTracker | None = None) -> np.ndarray:
        """(N, 4) float note array -> (N, 4) int64 tokens.

        Relative time: each note in the unit known before it, starting from ``tracker``'s
        running tempo (a fresh one if None); the tracker itself is not changed.
        """
        notes = np.asarray(notes, dtype=np.float64).reshape(-1, 4)
        units = self.units(notes[:, STEP], tracker) if self.relative else 1.0
        tokens = np.empty(notes.shape, dtype=np.int64)
        tokens[:, PITCH] = np.clip(np.round(notes[:, PITCH]), 0, 127)
        tokens[:, STEP] = self.encode_step(notes[:, STEP], units)
        with np.errstate(all="ignore"):
            tokens[:, DURATION] = self.encode_duration(notes[:, DURATION] / units)
        tokens[:, VELOCITY] = self.encode_velocity(notes[:, VELOCITY])
        return tokens

    def encode_one(self, row: np.ndarray, unit: float = 1.0) -> tuple[int, int, int, int]:
        """One note row -> its four tokens, as ``encode`` gives them, in a few microseconds.

        The daemon feeds notes one at a time, where ``encode``'s numpy calls cost more than the
        model step they feed.  ``unit``: seconds per unit before this note (relative time).
        """
        pitch, step, duration, velocity = (float(x) for x in row)
        if not all(map(math.isfinite, (pitch, step, duration, velocity))):
            return self._encode_one_numpy(row, unit)  # numpy's ordering of NaN and inf
        step_edges, duration_edges, velocity_edges = self._edges
        c = self.config
        if self.relative:
            step_bin = 0 if step < c.chord_seconds else max(bisect.bisect_right(step_edges, step / unit), 1)
            duration = duration / unit
        else:
            step_bin = bisect.bisect_right(step_edges, step)
        return (
            min(max(round(pitch), 0), 127),
            min(step_bin, c.step_bins - 1),
            min(max(bisect.bisect_right(duration_edges, duration) - 1, 0), c.duration_bins - 1),
            min(max(bisect.bisect_right(velocity_edges, velocity) - 1, 0), c.velocity_bins - 1),
        )

    def _encode_one_numpy(self, row: np.ndarray, unit: float) -> tuple[int, int, int, int]:
        row = np.asarray(row, dtype=np.float64).reshape(1, 4)
        tokens = np.empty(4, dtype=np.int64)
        tokens[PITCH] = np.clip(np.round(row[0, PITCH]), 0, 127)
        tokens[STEP] = self.encode_step(row[0, STEP], unit)
        with np.errstate(all="ignore"):
            tokens[DURATION] = self.encode_duration(row[0, DURATION] / unit)
        tokens[VELOCITY] = self.encode_velocity(row[0, VELOCITY])
        return tuple(int(t) for t in tokens)

    def decode(self, tokens: np.ndarray, tracker: TempoTracker | None = None) -> np.ndarray:
        """(N, 4) int tokens -> (N, 4) float note array (bin centres; zero step is exactly 0).

        Relative time: note by note, each in the unit its predecessors give, starting from
        ``tracker``'s running tempo (a copy is advanced; the tracker itself is not changed).
        """
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1, 4)
        notes = np.empty(tokens.shape, dtype=np.float64)
        notes[:, PITCH] = tokens[:, PITCH]
        notes[:, STEP] = self.step_values[tokens[:, STEP]]
        notes[:, DURATION] = self.duration_values[tokens[:, DURATION]]
        notes[:, VELOCITY] = self.velocity_values[tokens[:, VELOCITY]]
        if self.relative:
            running = tracker.copy() if tracker is not None else self.tracker()
            chord = self.config.chord_seconds
            for row in notes:
                unit = running.unit
                # A sounded step never shrinks into a chord: read back, it must give the same bin.
                row[STEP] = max(row[STEP] * unit, chord) if row[STEP] > 0 else 0.0
                row[DURATION] *= unit
                running.push(row[STEP])
        return notes

    def decode_one(self, tokens: Sequence[int], tracker: TempoTracker | None = None) -> np.ndarray:
        """One note's tokens (pitch, step, duration, velocity) -> its row (4,), as ``decode`` gives
        it, with Python scalars: a sampled note is decoded while the player waits."""
        pitch, step, duration, velocity = (int(t) for t in tokens)
        steps, durations, velocities = self._values
        step_value, duration_value = steps[step], durations[duration]
        if self.relative:
            unit = tracker.unit if tracker is not None else self.tracker().unit
            step_value = max(step_value * unit, self.config.chord_seconds) if step_value > 0 else 0.0
            duration_value *= unit
        return np.array([pitch, step_value, duration_value, velocities[velocity]], dtype=np.float64)

    def bin_width(self, field: str, bins: np.ndarray | int) -> np.ndarray:
        """Width in field units of the given bins: the bound on a round trip's error."""
        bins = np.asarray(bins, dtype=np.int64)
        if field == "step":
            lower = np.concatenate([[0.0], self.step_edges[:-1]])
            upper = self.step_edges
        elif field == "duration":
            lower, upper = self.duration_edges[:-1], self.duration_edges[1:]
        elif field == "velocity":
            lower, upper = self.velocity_edges[:-1], self.velocity_edges[1:]
        else:
            raise ValueError(f"no bins for field {field!r}")
        return (upper - lower)[bins]
