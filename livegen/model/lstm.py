"""The note LSTM: reads notes, predicts the next note's fields jointly.

Input: one token row per note (pitch, step bin, duration bin, velocity bin).  The LSTM's output
``h`` summarises everything played so far.  The next note is predicted field by field, each head
seeing the fields already chosen for that note:

    P(step | h) · P(pitch | h, step) · P(duration | h, step, pitch) · P(velocity | h, step, pitch, duration)

so a chord (step 0) and its pitches, or a long note and its spacing, stay coherent.  Training
feeds the true fields (teacher forcing on every position); sampling feeds the sampled ones.

The pitch head may be helped by an interval head (``interval_range`` R > 0): scores over the
intervals -R..R from the pitch just read, added to the pitch logits of the pitches they reach.  A
step up a third is then one weight for every key and register, where the absolute head must learn
it 128 times over; the same training gave a lower pitch NLL than a wider network (MODEL_CARD.md).

Options (``NoteLSTMConfig``): ``head="mlp"`` gives each field a Linear-GELU-Linear head,
``head="linear"`` one Linear (the shipped model: its heads then cost one matmul in all, see
``_linear_heads``); ``input_projection`` puts a Linear+ReLU between the note embedding and the
LSTM (older models) or feeds the embedding straight in.

``forward`` runs a whole batch of sequences; ``step`` advances one note and returns a
``NextNote`` whose conditional heads the sampler queries.  Both share the same layers, so they
give the same distributions (tested).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from livegen.model.tokens import TokenConfig

ARCH = "note-lstm"
HEADS = ("mlp", "linear")

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (layers, B, hidden)


@dataclass(frozen=True)
class NoteLSTMConfig:
    hidden: int = 256
    layers: int = 2
    pitch_embedding: int = 64
    field_embedding: int = 24
    dropout: float = 0.1
    head: str = "mlp"  # mlp: Linear-GELU-Linear per field; linear: one Linear per field (cheaper)
    input_projection: bool = True  # Linear + ReLU from the note embedding to the LSTM's width
    interval_range: int = 0  # > 0: a head over intervals -R..R from the note just read, added to the pitch logits
    tokens: TokenConfig = field(default_factory=TokenConfig)

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "pitch_embedding", "field_embedding"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.interval_range, int) or not 0 <= self.interval_range <= 127:
            raise ValueError(f"interval_range must be an integer in 0..127, got {self.interval_range!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tokens"] = self.tokens.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "NoteLSTMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        data = dict(data)
        data["tokens"] = TokenConfig.from_dict(data.get("tokens", {}))
        return cls(**data)


class Logits(NamedTuple):
    """Unnormalised scores per field; each (..., classes)."""

    step: torch.Tensor
    pitch: torch.Tensor
    duration: torch.Tensor
    velocity: torch.Tensor


def _head(kind: str, hidden: int, classes: int) -> nn.Sequential:
    if kind == "linear":
        return nn.Sequential(nn.Linear(hidden, classes))
    return nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, classes))


class NoteLSTM(nn.Module):
    def __init__(self, config: NoteLSTMConfig) -> None:
        super().__init__()
        self.config = config
        tok = config.tokens
        sizes = (128, tok.step_bins, tok.duration_bins, tok.velocity_bins)
        self.sizes = sizes
        self.in_pitch = nn.Embedding(128, config.pitch_embedding)
        self.in_step = nn.Embedding(sizes[1], config.field_embedding)
        self.in_duration = nn.Embedding(sizes[2], config.field_embedding)
        self.in_velocity = nn.Embedding(sizes[3], config.field_embedding)
        embedded = config.pitch_embedding + 3 * config.field_embedding
        if config.input_projection:
            self.in_proj = nn.Linear(embedded, config.hidden)
        self.lstm = nn.LSTM(
            config.hidden if config.input_projection else embedded,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        # Embeddings of the already-chosen fields of the note being predicted.
        self.cond_step = nn.Embedding(sizes[1], config.hidden)
        self.cond_pitch = nn.Embedding(128, config.hidden)
        self.cond_duration = nn.Embedding(sizes[2], config.hidden)
        self.step_head = _head(config.head, config.hidden, sizes[1])
        self.pitch_head = _head(config.head, config.hidden, 128)
        self.duration_head = _head(config.head, config.hidden, sizes[2])
        self.velocity_head = _head(config.head, config.hidden, sizes[3])
        if config.interval_range:
            reach = config.interval_range
            self.interval_head = nn.Linear(config.hidden, 2 * reach + 1)
            offset = torch.arange(128).unsqueeze(0) - torch.arange(128).unsqueeze(1)  # [previous, pitch]
            index = torch.where(offset.abs() <= reach, offset + reach, 2 * reach + 1)
            self.register_buffer("interval_index", index, persistent=False)  # -> column of the padded head

    def interval_logits(self, c_step: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """The interval head's scores laid out over the 128 pitches: (..., 128); zero beyond its reach."""
        scores = nn.functional.pad(self.interval_head(c_step), (0, 1))
        return torch.gather(scores, -1, self.interval_index[previous])

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., 4) int tokens -> (..., input) LSTM input."""
        x = torch.cat(
            [
                self.in_pitch(tokens[..., 0]),
                self.in_step(tokens[..., 1]),
                self.in_duration(tokens[..., 2]),
                self.in_velocity(tokens[..., 3]),
            ],
            dim=-1,
        )
        return torch.relu(self.in_proj(x)) if self.config.input_projection else x

    def encode(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """(B, T, 4) tokens -> (B, T, hidden) summaries after each note, and the final state."""
        out, state = self.lstm(self.embed(tokens), state)
        p = self.config.dropout
        if self.training and p > 0:  # dropout; a uniform draw is cheaper on CPU than nn.Dropout's bernoulli
            out = out * (torch.rand_like(out) > p) * (1.0 / (1.0 - p))
        return out, state

    def heads(self, h: torch.Tensor, target: torch.Tensor, previous: torch.Tensor | None = None) -> Logits:
        """All four heads given the context ``h`` (..., hidden) and the true next note (..., 4);
        ``previous`` (...,) is the pitch just read, which the interval head needs."""
        if self.config.interval_range and previous is None:
            raise ValueError("this model's interval head needs the pitch just read (previous)")
        if self.config.head == "linear":
            logits = self._linear_heads(h, target)
            if self.config.interval_range:
                c_step = h + self.cond_step(target[..., 1])
                logits = logits._replace(pitch=logits.pitch + self.interval_logits(c_step, previous))
            return logits
        c_step = h + self.cond_step(target[..., 1])
        c_pitch = c_step + self.cond_pitch(target[..., 0])
        c_duration = c_pitch + self.cond_duration(target[..., 2])
        pitch = self.pitch_head(c_step)
        if self.config.interval_range:
            pitch = pitch + self.interval_logits(c_step, previous)
        return Logits(
            step=self.step_head(h),
            pitch=pitch,
            duration=self.duration_head(c_pitch),
            velocity=self.velocity_head(c_duration),
        )

    def linear_tables(self) -> tuple[torch.Tensor, ...]:
        """The one-Linear heads packed in logit space: ``(weight, bias, from_step, from_pitch,
        from_duration)``; ``_linear_heads`` and the CPU sampler (livegen.model.lean_heads) share it.

        A Linear head gives W·(h + e_step + ...) + b = W·h + b + (W·e_step) + ...: so one matmul
        of h serves the four heads (``weight`` stacks them in step, pitch, duration, velocity
        order), and the already-chosen fields add rows of small tables W·E (class -> logits of
        the later heads) instead of three (..., hidden) sums feeding four matmuls.
        """
        heads = (self.step_head[0], self.pitch_head[0], self.duration_head[0], self.velocity_head[0])
        weight = torch.cat([head.weight for head in heads])  # (step + pitch + duration + velocity classes, hidden)
        bias = torch.cat([head.bias for head in heads])
        n_p, n_s, n_d, n_v = self.sizes
        later = weight[n_s:]  # (pitch + duration + velocity classes, hidden): the heads after step
        from_step = self.cond_step.weight @ later.T  # (step classes, p + d + v)
        from_pitch = self.cond_pitch.weight @ later[n_p:].T  # (128, d + v)
        from_duration = self.cond_duration.weight @ later[n_p + n_d :].T  # (duration classes, v)
        return weight, bias, from_step, from_pitch, from_duration

    def _linear_heads(self, h: torch.Tensor, target: torch.Tensor) -> Logits:
        """``heads`` for one-Linear heads, computed in logit space (the same values, less work)."""
        weight, bias, step_table, pitch_table, duration_table = self.linear_tables()
        n_p, n_s, n_d, n_v = self.sizes
        step, pitch, duration, velocity = nn.functional.linear(h, weight, bias).split((n_s, n_p, n_d, n_v), -1)
        from_step = nn.functional.embedding(target[..., 1], step_table)  # (..., p + d + v)
        from_pitch = nn.functional.embedding(target[..., 0], pitch_table)  # (..., d + v)
        from_duration = nn.functional.embedding(target[..., 2], duration_table)
        return Logits(
            step=step,
            pitch=pitch + from_step[..., :n_p],
            duration=duration + from_step[..., n_p : n_p + n_d] + from_pitch[..., :n_d],
            velocity=velocity + from_step[..., n_p + n_d :] + from_pitch[..., n_d:] + from_duration,
        )

    def forward(
        self, tokens: torch.Tensor, targets: torch.Tensor, state: State | None = None
    ) -> tuple[Logits, State]:
        """Teacher-forced logits for every position.

        tokens: (B, T, 4) the notes read; targets: (B, T, 4) the note that follows each one.
        """
        h, state = self.encode(tokens, state)  # (B, T, hidden)
        return self.heads(h, targets, tokens[..., 0]), state

    def step(self, token: torch.Tensor, state: State | None = None) -> tuple["NextNote", State]:
        """Advance by one note: token (B, 4) -> distributions over the next note, new state."""
        h, state = self.encode(token.unsqueeze(1), state)  # (B, 1, hidden)
        return NextNote(self, h[:, 0], previous=token[:, 0]), state


def with_interval_head(model: NoteLSTM, reach: int) -> NoteLSTM:
    """``model`` with an interval head over -reach..reach added, its weights zero: the same
    function, ready to be trained on (how release 0.4 grew from 0.3)."""
    if model.config.interval_range:
        raise ValueError(f"the model already has an interval head (reach {model.config.interval_range})")
    grown = NoteLSTM(replace(model.config, interval_range=reach)).to(next(model.parameters()).device)
    grown.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        grown.interval_head.weight.zero_()
        grown.interval_head.bias.zero_()
    return grown.to(next(model.parameters()).dtype).train(model.training)


class NextNote:
    """Distributions over the next note, queried field by field in the joint order.

    The sampler asks for step logits, picks a step, asks for pitch logits given it, and so on.
    """

    __slots__ = ("model", "_h", "array", "previous", "_c_step", "_c_pitch")

    def __init__(self, model: NoteLSTM, h: torch.Tensor | None = None, array=None,
                 previous: torch.Tensor | int | None = None) -> None:
        self.model = model
        self._h = h  # (B, hidden)
        self.array = array  # or the same as a numpy (1, hidden) array, from the lean step (no torch call)
        self.previous = previous  # the pitch token just read ((B,) tensor or an int): the interval head's origin

    def previous_tokens(self) -> torch.Tensor:
        """``previous`` as a (B,) tensor on the summary's device."""
        if self.previous is None:
            raise ValueError("this model's interval head needs the pitch just read (NextNote(previous=...))")
        if isinstance(self.previous, torch.Tensor):
            return self.previous.to(self.h.device)
        return torch.tensor([int(self.previous)], device=self.h.device)

    @property
    def h(self) -> torch.Tensor:
        """The summary (B, hidden) the heads read (made from ``array`` when first asked)."""
        if self._h is None:
            self._h = torch.from_numpy(self.array)
        return self._h

    def step_logits(self) -> torch.Tensor:
        return self.model.step_head(self.h)

    def pitch_logits(self, step: torch.Tensor) -> torch.Tensor:
        self._c_step = self.h + self.model.cond_step(step)
        logits = self.model.pitch_head(self._c_step)
        if self.model.config.interval_range:
            logits = logits + self.model.interval_logits(self._c_step, self.previous_tokens())
        return logits

    def duration_logits(self, pitch: torch.Tensor) -> torch.Tensor:
        self._c_pitch = self._c_step + self.model.cond_pitch(pitch)
        return self.model.duration_head(self._c_pitch)

    def velocity_logits(self, duration: torch.Tensor) -> torch.Tensor:
        return self.model.velocity_head(self._c_pitch + self.model.cond_duration(duration))

    def logits_given(self, target: torch.Tensor) -> Logits:
        """All four heads given a known next note (B, 4): for scoring and tests."""
        previous = self.previous_tokens() if self.model.config.interval_range else None
        return self.model.heads(self.h, target, previous)


def lean_summary(next_note: NextNote | None) -> np.ndarray | None:
    """The numpy summary (1, hidden) the packed heads read, or None where they cannot be used
    (no note yet, a batch wider than one, a summary on another device)."""
    if next_note is None:
        return None
    if next_note.array is not None:
        return next_note.array
    h = next_note.h
    return h.detach().numpy() if h.shape[0] == 1 and h.device.type == "cpu" else None
