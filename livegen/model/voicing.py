"""Harmonize mode's model side: sample one chord note at a *given* step, and read the chord order.

``NoteStream.sample`` draws the step first and the pitch given it; a voice of a chord has a
known step (0, or the time since the previous chord for the chord's first note), so here the
step is fixed and only the pitch is drawn, from P(pitch | context, step) within the voice's
window.  Duration and velocity are the engine's (the melody's guess and the player's touch).

The chord order a model was trained with is ``tokens.chord_order`` in its config: "descending"
(top note first) for models trained to harmonize, absent (meaning "ascending") for older ones.
"""

from __future__ import annotations

from typing import Sequence

import torch

from livegen.model.lean_heads import draw
from livegen.model.params import SamplingParams
from livegen.model.sampling import pitch_mask, sample_logits
from livegen.model.lstm import lean_summary


def chord_order_of(model) -> str:
    """The chord order of a NoteLSTM's training data (``ascending`` when its config says none)."""
    tokens = getattr(getattr(model, "config", None), "tokens", None)
    order = getattr(tokens, "chord_order", None) or "ascending"
    if order not in ("ascending", "descending"):
        raise ValueError(f"model config tokens.chord_order must be ascending or descending, got {order!r}")
    return order


def sample_pitch_at(stream, params: SamplingParams, step: float, taken: Sequence[int]) -> int | None:
    """One pitch from P(pitch | state, step) in ``params``' pitch range, never one of ``taken``.

    ``stream`` is a primed NoteStream (or a MemoryStream around one); the state is not advanced
    (the caller feeds the note).  On the CPU with linear heads the pitch is drawn in numpy from
    the packed heads (livegen/model/lean_heads.py): a chord's voices are sampled while the player
    waits for them, and the torch path costs ~0.4 ms a voice against ~0.03 ms.  No torch call is
    made there: on a CPU gone cold between two melody notes each one costs tens of microseconds."""
    if stream.next is None:
        return None
    # the step's bin as feed() would encode it (bin 0, a chord, for a zero step)
    row = (float(taken[0]) if taken else 60.0, max(float(step), 0.0), 0.5, 64.0)
    step_bin = int(stream.tokenizer.encode_one(row, stream.tempo.unit)[1])  # in the stream's running tempo
    heads = getattr(stream, "heads", None)
    summary = lean_summary(stream.next) if heads is not None else None
    if summary is not None:
        # only the allowed pitches, in ascending order: the same draw as the masked row gives
        banned = set(taken)
        allowed = [p for p in range(max(params.pitch_low, 0), min(params.pitch_high, 127) + 1) if p not in banned]
        if not allowed:
            return None
        logits = heads.pitch_logits(summary, step_bin, stream.next.previous)[allowed]
        take = getattr(stream, "take_uniform", None)  # drawn ahead between chords: no torch call now
        uniform = take() if take is not None else float(torch.rand(1, generator=stream.generator, dtype=torch.float64))
        return allowed[draw(logits, params.temperature, params.top_p, uniform)]
    with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=False):
        mask = pitch_mask(params.pitch_low, params.pitch_high, stream.device)
        if taken:
            mask[list(taken)] = float("-inf")
        if not torch.isfinite(mask).any():
            return None
        step_token = torch.tensor([step_bin], device=stream.device)
        logits = stream.next.pitch_logits(step_token) + mask
        pitch = sample_logits(logits, params.temperature, params.top_p, stream.generator)
    return int(pitch.item())
