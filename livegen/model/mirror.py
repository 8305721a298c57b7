"""Mirror mode: answer with a Markov model learned online from this session's own playing.

Pachet's Continuator idea: everything the player plays is counted (``feed``), and the answer is
drawn from the longest context of recent pitches seen so far.  An answer is sampled from a fork
that only moves its own context: the model never learns from its own answers.  numpy only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from livegen.model.markov import MarkovConfig, MarkovModel
from livegen.model.params import SamplingParams
from livegen.notes import PITCH, STEP

CHORD_RETRIES = 8  # draws allowed to avoid repeating a pitch inside one chord


class MirrorPredictor:
    """A Predictor (feed / fork / sample) over an online MarkovModel."""

    def __init__(self, config: MarkovConfig | None = None, seed: int | None = None) -> None:
        self.model = MarkovModel(config)
        self.rng = np.random.default_rng(seed)
        self.context: list[int] = []
        self._learns = True

    def feed(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        if self._learns:
            self.model.observe(rows)
        self.context = (self.context + [int(round(p)) for p in rows[:, PITCH]])[-self.model.config.order :]

    def fork(self) -> "MirrorPredictor":
        other = MirrorPredictor.__new__(MirrorPredictor)
        other.model, other.rng, other.context, other._learns = self.model, self.rng, list(self.context), False
        return other

    def sample(self, params: SamplingParams, *, chord: Sequence[int] = ()) -> np.ndarray:
        draw = lambda: self.model.sample(  # noqa: E731
            self.context, self.rng, params.temperature, params.pitch_low, params.pitch_high
        )
        token = draw()
        for _ in range(CHORD_RETRIES):
            if not (token[STEP] == 0 and token[PITCH] in chord):
                break
            token = draw()
        return self.model.tokenizer.decode(np.array([token], dtype=np.int64))[0]
