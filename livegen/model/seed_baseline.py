"""The seed recipe, faithfully in torch: TensorFlow's "music generation with an RNN" tutorial.

    inputs   (B, 25, 3)  pitch / 128, step, duration of the last 25 notes
    LSTM(128) -> last hidden state (B, 128)
    heads    pitch: Dense(128) logits; step: Dense(1); duration: Dense(1)
    loss     0.05 * CE(pitch) + MSE+pressure(step) + MSE+pressure(duration)
             where MSE+pressure = mean((y - ŷ)² + 10 · max(-ŷ, 0))
    target   only the note after the window (one target per 25-note window)

It predicts no velocity (the tutorial writes every note at velocity 100; we use
``config.velocity``).  Step and duration are regressed means, so generated rhythms drift to one
value: the collapse the project's categorical model is built to avoid.  Kept as a baseline so every
comparison runs side by side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ARCH = "seed-lstm"


@dataclass(frozen=True)
class SeedLSTMConfig:
    hidden: int = 128
    window: int = 25
    pitch_weight: float = 0.05
    step_weight: float = 1.0
    duration_weight: float = 1.0
    positive_pressure: float = 10.0
    velocity: int = 100  # written on every generated note

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.window < 1:
            raise ValueError(f"hidden and window must be positive in {self}")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"velocity must be in 1..127, got {self.velocity}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SeedLSTMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown seed model config keys: {', '.join(unknown)}")
        return cls(**data)


class SeedOutput(NamedTuple):
    pitch: torch.Tensor  # (B, 128) logits
    step: torch.Tensor  # (B,) seconds
    duration: torch.Tensor  # (B,) seconds


def features(rows: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(..., 4) note rows -> (..., 3) model inputs: pitch / 128, step, duration."""
    rows = torch.as_tensor(np.asarray(rows) if not torch.is_tensor(rows) else rows, dtype=torch.float32)
    return torch.stack([rows[..., 0] / 128.0, rows[..., 1], rows[..., 2]], dim=-1)


def mse_with_positive_pressure(target: torch.Tensor, predicted: torch.Tensor, pressure: float) -> torch.Tensor:
    mse = (target - predicted) ** 2
    return (mse + pressure * torch.relu(-predicted)).mean()


class SeedLSTM(nn.Module):
    def __init__(self, config: SeedLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(3, config.hidden, batch_first=True)
        self.pitch = nn.Linear(config.hidden, 128)
        self.step = nn.Linear(config.hidden, 1)
        self.duration = nn.Linear(config.hidden, 1)
        with torch.no_grad():  # Keras' unit_forget_bias: forget gate bias starts at 1
            h = config.hidden
            self.lstm.bias_ih_l0.zero_()
            self.lstm.bias_hh_l0.zero_()
            self.lstm.bias_ih_l0[h : 2 * h] = 1.0

    def forward(self, x: torch.Tensor) -> SeedOutput:
        """x (B, window, 3) -> predictions for the note after the window."""
        out, _ = self.lstm(x)  # (B, T, hidden)
        last = out[:, -1]  # (B, hidden)
        return SeedOutput(self.pitch(last), self.step(last).squeeze(-1), self.duration(last).squeeze(-1))

    def loss(self, output: SeedOutput, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """target (B, 4) rows (pitch, step, duration, velocity) -> weighted total, parts."""
        c = self.config
        parts = {
            "pitch": F.cross_entropy(output.pitch.float(), target[:, 0].long()),
            "step": mse_with_positive_pressure(target[:, 1], output.step.float(), c.positive_pressure),
            "duration": mse_with_positive_pressure(target[:, 2], output.duration.float(), c.positive_pressure),
        }
        total = c.pitch_weight * parts["pitch"] + c.step_weight * parts["step"] + c.duration_weight * parts["duration"]
        return total, parts

    @torch.no_grad()
    def pitch_log_probs(self, rows: np.ndarray) -> np.ndarray:
        """Log P(pitch of note i | the window before it) for i >= window -> (N - window, 128)."""
        window = self.config.window
        x = features(rows).to(next(self.parameters()).device)  # (N, 3)
        if len(x) <= window:
            return np.zeros((0, 128))
        windows = x.unfold(0, window, 1)[:-1].transpose(1, 2)  # (N - window, window, 3)
        chunks = [torch.log_softmax(self(chunk).pitch.float(), dim=-1) for chunk in windows.split(4096)]
        return torch.cat(chunks).cpu().numpy()

    @torch.no_grad()
    def generate(
        self, primer: np.ndarray, length: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> np.ndarray:
        """The tutorial's predict_next_note loop -> (length, 4) rows.

        Pitch sampled from softmax(logits / temperature); step and duration are the regressed
        values clamped at 0 (so a zero duration can come out, as in the tutorial).
        """
        device = next(self.parameters()).device
        window = torch.zeros(self.config.window, 3, device=device)
        primer_x = features(np.asarray(primer)[-self.config.window :]).to(device)
        window[-len(primer_x) :] = primer_x
        rows = np.zeros((length, 4))
        for i in range(length):
            out = self(window.unsqueeze(0))
            logits = out.pitch[0].float()
            if temperature == 0:
                pitch = int(logits.argmax())
            else:
                pitch = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator))
            step = max(float(out.step[0]), 0.0)
            duration = max(float(out.duration[0]), 0.0)
            rows[i] = (pitch, step, duration, self.config.velocity)
            window = torch.cat([window[1:], features(rows[i : i + 1]).to(device)])
        return rows
