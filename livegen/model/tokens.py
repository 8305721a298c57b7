"""Timing and velocity bins: the model predicts categories, not regressed means.

Regressing step and duration with MSE (the seed recipe) pulls every prediction toward the mean,
which is why its rhythms collapse to one value.  Here each field is a class over bins:

* step: an exact-zero bin (chords) below ``step_min``, then log-spaced bins up to ``step_max``;
* duration: log-spaced bins from ``duration_min`` to ``duration_max``;
* velocity: uniform bins over 1..127.

Log spacing keeps the relative error of a bin constant, which matches how we hear time.
Values beyond the last edge fall into the last bin.  This module imports only numpy so the
real-time and I/O layers can use it without torch.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

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

    def __post_init__(self) -> None:
        if self.step_bins < 3 or self.duration_bins < 2 or not 1 <= self.velocity_bins <= 127:
            raise ValueError(f"too few or too many bins in {self}")
        if not 0 < self.step_min < self.step_max or not 0 < self.duration_min < self.duration_max:
            raise ValueError(f"bin edges must satisfy 0 < min < max in {self}")

    def to_dict(self) -> dict:
        return asdict(self)

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
        # step: bin 0 is [0, step_min); bins 1.. are log-spaced intervals.
        self.step_edges = np.geomspace(config.step_min, config.step_max, config.step_bins)
        self.step_values = np.concatenate([[0.0], np.sqrt(self.step_edges[:-1] * self.step_edges[1:])])
        self.duration_edges = np.geomspace(config.duration_min, config.duration_max, config.duration_bins + 1)
        self.duration_values = np.sqrt(self.duration_edges[:-1] * self.duration_edges[1:])
        self.velocity_edges = np.linspace(1.0, 128.0, config.velocity_bins + 1)
        self.velocity_values = np.clip(np.round((self.velocity_edges[:-1] + self.velocity_edges[1:] - 1) / 2), 1, 127)
        # Plain lists for encode_one: bisect on a list beats numpy's per-call overhead on one note.
        self._edges = (self.step_edges.tolist(), self.duration_edges.tolist(), self.velocity_edges.tolist())

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """Number of classes per field, in FIELDS order."""
        c = self.config
        return (128, c.step_bins, c.duration_bins, c.velocity_bins)

    def encode_step(self, seconds: np.ndarray | float) -> np.ndarray:
        seconds = np.asarray(seconds, dtype=np.float64)
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

    def encode(self, notes: np.ndarray) -> np.ndarray:
        """(N, 4) float note array -> (N, 4) int64 tokens."""
        notes = np.asarray(notes, dtype=np.float64).reshape(-1, 4)
        tokens = np.empty(notes.shape, dtype=np.int64)
        tokens[:, PITCH] = np.clip(np.round(notes[:, PITCH]), 0, 127)
        tokens[:, STEP] = self.encode_step(notes[:, STEP])
        tokens[:, DURATION] = self.encode_duration(notes[:, DURATION])
        tokens[:, VELOCITY] = self.encode_velocity(notes[:, VELOCITY])
        return tokens

    def encode_one(self, row: np.ndarray) -> tuple[int, int, int, int]:
        """One note row -> its four tokens, as ``encode`` gives them, in a few microseconds.

        The daemon feeds notes one at a time, where ``encode``'s numpy calls cost more than the
        model step they feed.
        """
        pitch, step, duration, velocity = (float(x) for x in row)
        if not all(map(math.isfinite, (pitch, step, duration, velocity))):
            return tuple(int(t) for t in self.encode(row)[0])  # numpy's ordering of NaN and inf
        step_edges, duration_edges, velocity_edges = self._edges
        c = self.config
        return (
            min(max(round(pitch), 0), 127),
            min(bisect.bisect_right(step_edges, step), c.step_bins - 1),
            min(max(bisect.bisect_right(duration_edges, duration) - 1, 0), c.duration_bins - 1),
            min(max(bisect.bisect_right(velocity_edges, velocity) - 1, 0), c.velocity_bins - 1),
        )

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """(N, 4) int tokens -> (N, 4) float note array (bin centres; zero step is exactly 0)."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1, 4)
        notes = np.empty(tokens.shape, dtype=np.float64)
        notes[:, PITCH] = tokens[:, PITCH]
        notes[:, STEP] = self.step_values[tokens[:, STEP]]
        notes[:, DURATION] = self.duration_values[tokens[:, DURATION]]
        notes[:, VELOCITY] = self.velocity_values[tokens[:, VELOCITY]]
        return notes

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
