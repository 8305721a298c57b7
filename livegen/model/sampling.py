"""Sampling the next note: temperature, nucleus (top-p) and pitch-range limits, field by field."""

from __future__ import annotations

from typing import Sequence

import torch

from livegen.model.lstm import NextNote
from livegen.model.params import SamplingParams

__all__ = ["SamplingParams", "pitch_mask", "sample_logits", "sample_next"]


def sample_logits(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Draw one class per row of logits (B, C) -> (B,) int64."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep a class while the mass before it is below top_p (always keeps the first)
        keep = (sorted_probs.cumsum(dim=-1) - sorted_probs) < top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def pitch_mask(low: int, high: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Additive mask (128,) that forbids pitches outside [low, high]."""
    mask = torch.full((128,), float("-inf"), device=device)
    mask[low : high + 1] = 0.0
    return mask


@torch.inference_mode()
def sample_next(
    next_note: NextNote,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
    chord: Sequence[int] = (),
) -> torch.Tensor:
    """Sample (step, pitch, duration, velocity) tokens jointly -> (B, 4) int64.

    ``mask`` is the pitch mask of ``params``; pass a cached one on hot paths.  ``chord`` holds
    the pitches already struck at the current onset (batch size 1): if the step is zero they
    are excluded, since one channel cannot sound the same pitch twice at once.
    """
    t, p, rhythm = params.temperature, params.top_p, params.time_temperature
    step = sample_logits(next_note.step_logits(), rhythm, p, generator)
    if mask is None:
        mask = pitch_mask(params.pitch_low, params.pitch_high, next_note.h.device)
    if chord and step.numel() == 1 and step.item() == 0:
        chord_mask = mask.clone()
        chord_mask[list(chord)] = float("-inf")
        if torch.isfinite(chord_mask).any():  # a chord filling the whole range bans nothing
            mask = chord_mask
    pitch = sample_logits(next_note.pitch_logits(step) + mask, t, p, generator)
    duration = sample_logits(next_note.duration_logits(pitch), rhythm, p, generator)
    velocity = sample_logits(next_note.velocity_logits(duration), t, p, generator)
    return torch.stack([pitch, step, duration, velocity], dim=-1)
