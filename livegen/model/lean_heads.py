"""Sampling the next note at batch 1 on the CPU in numpy: the sampling counterpart of LeanStep.

Why: ``sample_next`` runs ~80 tiny torch ops (four heads, then softmax, sort, cumsum and
multinomial per field), ~0.5 ms of dispatch for a few microseconds of arithmetic.  With
``head="linear"`` the four heads are one matrix-vector product of ``h`` plus rows of small
class -> logits tables (``NoteLSTM.linear_tables``, the same algebra the model trains with), so
here the joint draw step -> pitch -> duration -> velocity is one product, table lookups and adds.

Each field is drawn by inverse CDF from one uniform; the four uniforms come from one
``torch.rand`` call on the stream's seeded generator, so a seeded run stays reproducible.  The
distribution is ``sample_logits``' (temperature, nucleus top-p), not its exact draws.

``LeanHeads(model)`` snapshots the weights, like LeanStep: build a new one after training.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from livegen.model.lstm import NoteLSTM
from livegen.model.params import SamplingParams


def draw(logits: np.ndarray, temperature: float, top_p: float, uniform: float) -> int:
    """One class of ``logits`` (C,), as ``sample_logits`` draws it, by inverse CDF at ``uniform``.

    temperature 0: the argmax (the first, as torch's).  top_p < 1: a class is kept while the
    probability mass before it, in descending order, is below top_p (the first always is).
    """
    if temperature == 0.0:
        return int(logits.argmax())
    # (array methods, not np.* functions: at 128 classes numpy's dispatch is most of the cost)
    weights = logits.astype(np.float64)
    weights -= weights.max()  # -inf (masked) classes get weight exp(-inf) = 0
    if temperature != 1.0:
        weights /= temperature
    np.exp(weights, out=weights)
    if top_p < 1.0:
        order = weights.argsort()[::-1]
        cdf = weights[order].cumsum()
        # kept: position 0 and every k with cdf[k - 1] < top_p · total, a prefix of the order
        kept = min(int(cdf.searchsorted(top_p * cdf[-1], "left")) + 1, len(cdf))
        return int(order[cdf.searchsorted(uniform * cdf[kept - 1], "right")])
    cdf = weights.cumsum()
    return int(cdf.searchsorted(uniform * cdf[-1], "right"))


def ban_chord(mask: np.ndarray, step: int, chord: Sequence[int]) -> np.ndarray:
    """The pitch mask with ``chord``'s pitches forbidden when the step is 0 (one channel cannot
    strike a pitch twice at once), unless that forbids every pitch in range."""
    if not chord or step != 0:
        return mask
    banned = mask.copy()
    banned[list(chord)] = -np.inf
    return banned if np.isfinite(banned).any() else mask


class LeanLogits:
    """The next note's logits for one ``h``, field by field in the joint order, as numpy.

    The same values as NextNote's heads given the same chosen fields (float32 rounding)."""

    __slots__ = ("heads", "all", "previous")

    def __init__(self, heads: "LeanHeads", h: np.ndarray, previous: int | None = None) -> None:
        self.heads = heads
        self.all = heads.weight @ h
        self.all += heads.bias
        self.previous = previous  # the pitch just read (models with an interval head need it)

    def step(self) -> np.ndarray:
        return self.all[self.heads.slices[0]]

    def pitch(self, step: int) -> np.ndarray:
        heads = self.heads
        logits = self.all[heads.slices[1]] + heads.from_step[step, : heads.n_pitch]
        if heads.interval_index is not None:
            logits += heads.interval_scores(self.all[heads.interval_slice], step, self.previous)
        return logits

    def duration(self, step: int, pitch: int) -> np.ndarray:
        heads = self.heads
        logits = self.all[heads.slices[2]] + heads.from_step[step, heads.step_duration]
        logits += heads.from_pitch[pitch, : heads.n_duration]
        return logits

    def velocity(self, step: int, pitch: int, duration: int) -> np.ndarray:
        heads = self.heads
        logits = self.all[heads.slices[3]] + heads.from_step[step, heads.step_velocity]
        logits += heads.from_pitch[pitch, heads.n_duration :]
        logits += heads.from_duration[duration]
        return logits


class LeanHeads:
    """A linear-head NoteLSTM's four heads, packed for numpy at batch 1."""

    def __init__(self, model: NoteLSTM) -> None:
        if model.config.head != "linear":
            raise ValueError(f"LeanHeads needs head='linear', got {model.config.head!r}")
        with torch.no_grad():
            tables = [t.detach().to("cpu", torch.float32).numpy().copy() for t in model.linear_tables()]
        self.weight, self.bias, self.from_step, self.from_pitch, self.from_duration = (
            np.ascontiguousarray(t) for t in tables)
        n_p, n_s, n_d, n_v = model.sizes
        self.n_pitch, self.n_duration = n_p, n_d
        edges = np.cumsum([0, n_s, n_p, n_d, n_v])
        self.slices = tuple(slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]))  # step, pitch, duration, velocity
        self.step_duration = slice(n_p, n_p + n_d)  # columns of from_step for the duration head
        self.step_velocity = slice(n_p + n_d, n_p + n_d + n_v)
        self.interval_index = None
        if model.config.interval_range:  # its rows join the one product; its step table and layout apart
            with torch.no_grad():
                head = model.interval_head
                rows = [t.detach().to("cpu", torch.float32).numpy() for t in
                        (head.weight, head.bias, model.cond_step.weight @ head.weight.T)]
            self.weight = np.ascontiguousarray(np.concatenate([self.weight, rows[0]]))
            self.bias = np.ascontiguousarray(np.concatenate([self.bias, rows[1]]))
            self.interval_from_step = np.ascontiguousarray(rows[2])  # (step classes, 2R + 1)
            self.interval_slice = slice(int(edges[-1]), int(edges[-1]) + rows[0].shape[0])
            self.interval_index = model.interval_index.cpu().numpy()  # [previous, pitch] -> column, 2R + 1 = none
        pitch_rows = np.r_[self.slices[1], self.interval_slice] if self.interval_index is not None else self.slices[1]
        self._pitch_weight = np.ascontiguousarray(self.weight[pitch_rows])
        self._pitch_bias = np.ascontiguousarray(self.bias[pitch_rows])

    def interval_scores(self, scores: np.ndarray, step: int, previous: int | None) -> np.ndarray:
        """The interval head's scores (2R + 1,), from the product's interval rows, laid over the
        128 pitches from ``previous`` (zero beyond the head's reach)."""
        if previous is None:
            raise ValueError("this model's interval head needs the pitch just read (previous)")
        padded = np.zeros(len(scores) + 1, dtype=np.float32)
        np.add(scores, self.interval_from_step[step], out=padded[:-1])
        return padded[self.interval_index[int(previous)]]

    def pitch_logits(self, h: torch.Tensor | np.ndarray, step: int, previous: int | None = None) -> np.ndarray:
        """P(pitch | step)'s logits alone (128,), as ``logits(h).pitch(step)`` gives them, with
        the pitch head's rows only: harmonize draws voices at a known step while the player waits."""
        if isinstance(h, torch.Tensor):
            h = h.detach().numpy()
        logits = self._pitch_weight @ h.reshape(-1)
        logits += self._pitch_bias
        if self.interval_index is None:
            logits += self.from_step[step, : self.n_pitch]
            return logits
        pitch = logits[: self.n_pitch] + self.from_step[step, : self.n_pitch]
        pitch += self.interval_scores(logits[self.n_pitch :], step, previous)
        return pitch

    def logits(self, h: torch.Tensor | np.ndarray, previous: int | None = None) -> LeanLogits:
        """The heads at ``h`` ((1, hidden) or (hidden,), on the CPU); ``previous``: the pitch
        just read, which a model with an interval head needs."""
        if isinstance(h, torch.Tensor):
            h = h.detach().numpy()
        return LeanLogits(self, h.reshape(-1), previous)

    def sample(
        self,
        h: torch.Tensor | np.ndarray,
        params: SamplingParams,
        generator: torch.Generator | None,
        mask: np.ndarray,
        chord: Sequence[int] = (),
        uniforms: np.ndarray | None = None,
        previous: int | None = None,
    ) -> tuple[int, int, int, int]:
        """Draw (pitch, step, duration, velocity) tokens jointly, as ``sample_next`` does.

        ``mask``: the additive pitch mask (128,) of ``params``' range (0 or -inf).  ``uniforms``:
        the four draws' uniforms when the caller has them (else four from ``generator``).
        ``previous``: the pitch token just read (needed by a model with an interval head)."""
        t, p, rhythm = params.temperature, params.top_p, params.time_temperature
        u = uniforms if uniforms is not None else torch.rand(4, generator=generator, dtype=torch.float64).numpy()
        logits = self.logits(h, previous)
        step = draw(logits.step(), rhythm, p, u[0])
        pitch_logits = logits.pitch(step)
        pitch_logits += ban_chord(mask, step, chord)
        pitch = draw(pitch_logits, t, p, u[1])
        duration = draw(logits.duration(step, pitch), rhythm, p, u[2])
        velocity = draw(logits.velocity(step, pitch, duration), t, p, u[3])
        return pitch, step, duration, velocity


def numpy_pitch_mask(low: int, high: int) -> np.ndarray:
    """Additive float32 mask (128,) that forbids pitches outside [low, high]."""
    mask = np.full(128, -np.inf, dtype=np.float32)
    mask[low : high + 1] = 0.0
    return mask
