"""A stream's next-note logits as numpy, field by field, and draws of one note: lean or torch.

Why: a sampler that mixes the LSTM's distributions with others (the session memory's blend,
livegen.model.blend) works in numpy.  On the CPU with linear heads the logits come from
``LeanHeads`` and the draws from four uniforms (no torch op but one ``torch.rand``); elsewhere
(CUDA, mlp heads) from NextNote's torch heads and ``sample_logits`` on the model's device, as
before.  Either way the logits agree to float32 rounding (tests/model/test_lean_sampling.py).
"""

from __future__ import annotations

import numpy as np
import torch

from livegen.model.lean_heads import LeanLogits, draw
from livegen.model.lstm import NextNote, lean_summary
from livegen.model.sampling import sample_logits


class TorchLogits:
    """NextNote's heads behind LeanLogits' interface.  Call under ``torch.inference_mode``."""

    def __init__(self, next_note: NextNote) -> None:
        self.next = next_note
        self.device = next_note.h.device
        self._given: tuple[int, ...] = ()  # NextNote's later heads build on the fields last given

    def _token(self, value: int) -> torch.Tensor:
        return torch.tensor([value], device=self.device)

    def step(self) -> np.ndarray:
        return _numpy(self.next.step_logits())

    def pitch(self, step: int) -> np.ndarray:
        self._given = (step,)
        return _numpy(self.next.pitch_logits(self._token(step)))

    def duration(self, step: int, pitch: int) -> np.ndarray:
        if self._given[:1] != (step,):
            self.pitch(step)
        self._given = (step, pitch)
        return _numpy(self.next.duration_logits(self._token(pitch)))

    def velocity(self, step: int, pitch: int, duration: int) -> np.ndarray:
        if self._given != (step, pitch):
            self.duration(step, pitch)
        return _numpy(self.next.velocity_logits(self._token(duration)))


def _numpy(logits: torch.Tensor) -> np.ndarray:
    return logits[0].float().cpu().numpy()


def next_logits(stream) -> LeanLogits | TorchLogits:
    """The logits of a primed NoteStream's next note, the way the stream itself samples."""
    if stream.heads is not None:
        summary = lean_summary(stream.next)
        if summary is not None:
            return stream.heads.logits(summary, stream.next.previous)
    return TorchLogits(stream.next)


class Draws:
    """The draws of one note's four fields (0 step, 1 pitch, 2 duration, 3 velocity) from
    ``generator``: lean streams take the four uniforms at once, others draw with sample_logits."""

    def __init__(self, stream, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.device = stream.device
        self.uniforms = None
        if stream.heads is not None:  # the stream's own generator: its uniforms drawn ahead in blocks
            own = generator is stream.generator and hasattr(stream, "take_uniforms")
            self.uniforms = stream.take_uniforms(4) if own else torch.rand(4, generator=generator, dtype=torch.float64).numpy()

    def __call__(self, field: int, logits: np.ndarray, temperature: float, top_p: float) -> int:
        if self.uniforms is not None:
            return draw(logits, temperature, top_p, self.uniforms[field])
        batch = torch.from_numpy(logits)[None].to(self.device)
        return int(sample_logits(batch, temperature, top_p, self.generator))

    def from_probs(self, field: int, probs: np.ndarray, temperature: float, top_p: float) -> int:
        """The draw ``self(field, log(probs), ...)`` makes, from probabilities (>= 0, not all 0).

        Why: a mixture is made of probabilities; without top-p the lean draw's log and exp cancel,
        so the inverse CDF reads them directly (at temperature T, of probs ** (1/T): the same
        distribution as softmax(log(probs) / T), and cheaper on the rhythm's cooled draws)."""
        if self.uniforms is not None and temperature > 0.0 and top_p >= 1.0:
            cdf = (probs if temperature == 1.0 else probs ** (1.0 / temperature)).cumsum()
            return min(int(cdf.searchsorted(self.uniforms[field] * cdf[-1], "right")), len(cdf) - 1)
        with np.errstate(divide="ignore"):
            return self(field, np.log(probs), temperature, top_p)


def softmax(logits: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """float64 probabilities of one row of logits, times ``scale`` (a mixture's share, in the same pass)."""
    probs = logits.astype(np.float64)
    probs -= probs.max()
    np.exp(probs, out=probs)
    probs *= scale / probs.sum()
    return probs
