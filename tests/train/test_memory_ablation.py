"""`python -m livegen.train.memory_ablation`: the alternatives to the shipped blend, on tiny data."""

import numpy as np
import torch

from factories import tiny_model
from livegen.train.evaluate import LSTMPredictor
from livegen.train.memory_ablation import WEIGHTS, ablation
from livegen.train.session_eval import SessionSettings, session_likelihoods


class Piece:
    def __init__(self, notes):
        self.notes = notes


def pieces():
    motif = [60, 62, 64, 60, 67, 65, 64, 62]
    return [np.array([[p + k, 0.25, 0.2, 80] for p in motif * 8], dtype=float) for k in range(3)]


def test_the_ablation_agrees_with_the_eval_and_its_oracle_bounds_every_fixed_weight():
    torch.manual_seed(0)
    predictor = LSTMPredictor(tiny_model())
    rows = [predictor.prepare(p) for p in pieces()]
    report = ablation(predictor, rows, knob=0.5, dynamic={"lr": 0.0, "steps": 1, "chunk": 16})
    eval_ratio = session_likelihoods(predictor, [Piece(p) for p in pieces()], SessionSettings(weight=0.5))["ratio"]
    assert abs(report["shipped"] - eval_ratio) < 1e-3  # the same blend as `livegen eval --session-memory`
    assert report["shipped"] < 0.7  # a random model, pieces that repeat: the memory helps a lot
    assert set(report["fixed"]) == {str(w) for w in WEIGHTS}
    assert report["oracle_fixed"] <= min(report["fixed"].values()) + 1e-9  # the per-piece best bounds them
    assert report["dynamic"]["alone"] == 1.0  # no learning rate: the LSTM unchanged
    assert {"order_4", "order_8", "context_rhythm", "absolute_cache", "evidence"} <= set(report)


def test_dynamic_evaluation_learns_a_piece_that_repeats():
    torch.manual_seed(0)
    predictor = LSTMPredictor(tiny_model())
    rows = [predictor.prepare(p) for p in pieces()[:1]]
    report = ablation(predictor, rows, dynamic={"lr": 0.05, "steps": 3, "chunk": 8})
    assert report["dynamic"]["alone"] < 0.95
