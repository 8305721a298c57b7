"""Things many tests build: tiny random models and small MIDI files made on the spot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from livegen.model.checkpoint import save_model
from livegen.model.lstm import NoteLSTM, NoteLSTMConfig
from livegen.model.tokens import TokenConfig
from livegen.notes import Note, Track, write_midi

TINY_CONFIG = NoteLSTMConfig(
    hidden=32,
    layers=2,
    pitch_embedding=16,
    field_embedding=8,
    dropout=0.0,
    tokens=TokenConfig(step_bins=24, duration_bins=24, velocity_bins=16),
)
TINY_LINEAR_CONFIG = dataclasses.replace(TINY_CONFIG, head="linear")  # the shipped heads: streams sample them in numpy


def tiny_model(seed: int = 0, config: NoteLSTMConfig = TINY_CONFIG) -> NoteLSTM:
    """A randomly initialised, small NoteLSTM in eval mode."""
    torch.manual_seed(seed)
    return NoteLSTM(config).eval()


def tiny_model_dir(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random model into ``directory`` and return it."""
    return save_model(tiny_model(seed), directory)


def melody(count: int = 16, start: float = 0.0, step: float = 0.25, base: int = 60) -> list[Note]:
    """A simple rising and falling line with varied velocities."""
    shape = [0, 2, 4, 5, 7, 5, 4, 2]
    return [
        Note(base + shape[i % len(shape)], start + i * step, start + i * step + step * 0.9, 60 + (i * 7) % 50)
        for i in range(count)
    ]


def write_primer(path: Path, notes: list[Note] | None = None) -> Path:
    write_midi(path, [Track("primer", notes or melody())])
    return path


def quick_model(seed: int = 0, step: float = 0.12, duration: float = 0.1) -> NoteLSTM:
    """A tiny model biased to answer with short steps and notes, so real-time tests are quick.

    Still the real architecture end to end: only the output biases of the step and duration
    heads are raised at the bins of ``step`` and ``duration`` seconds.
    """
    from livegen.model.tokens import Tokenizer

    model = tiny_model(seed)
    tokenizer = Tokenizer(model.config.tokens)
    with torch.no_grad():
        model.step_head[-1].bias[int(tokenizer.encode_step(step))] += 12.0
        model.duration_head[-1].bias[int(tokenizer.encode_duration(duration))] += 12.0
    return model


def quick_model_dir(directory: Path, seed: int = 0) -> Path:
    return save_model(quick_model(seed), directory)


def sampled_answer(stream, params, notes: int = 120):
    """``notes`` rows sampled from ``stream`` with ``params``, each fed back as an answer's are."""
    import numpy as np

    out = []
    for _ in range(notes):
        row = stream.sample(params)
        out.append(row)
        stream.feed(row)
    return np.array(out)
