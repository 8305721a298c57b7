"""`python -m livegen.train.memory_ablation`: the alternatives to the shipped blend, on tiny data."""

import numpy as np
import torch

from factories import tiny_model
from livegen.train.evaluate import LSTMPredictor
from livegen.train.memory_ablation import GATE_FEATURES, WEIGHTS, ablation, learned_gate, piece_terms
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
    report = ablation(predictor, rows, knob=0.5, dynamic={"lr": 0.0, "steps": 1, "chunk": 16},
                      segment={"lr": 0.0, "segment": 16}, groups=["folk", "folk", "other"])
    eval_ratio = session_likelihoods(predictor, [Piece(p) for p in pieces()], SessionSettings(weight=0.5))["ratio"]
    assert abs(report["shipped"] - eval_ratio) < 1e-3  # the same blend as `livegen eval --session-memory`
    assert report["shipped"] < 0.7  # a random model, pieces that repeat: the memory helps a lot
    assert set(report["fixed"]) == {str(w) for w in WEIGHTS}
    assert report["oracle_fixed"] <= min(report["fixed"].values()) + 1e-9  # the per-piece best bounds them
    # the per-note best bounds every mixture, the shipped blend and the per-piece best included
    assert report["oracle_per_note"] <= min(report["shipped"], report["oracle_fixed"]) + 1e-4
    assert report["oracle_per_note_with_cache"] <= report["oracle_per_note"]
    assert report["dynamic"]["alone"] == 1.0  # no learning rate: the LSTM unchanged
    assert abs(report["dynamic_segment"]["alone"] - 1.0) < 1e-4  # ... and scored segment by segment, the same
    assert {"order_4", "order_8", "context_rhythm", "absolute_cache", "evidence", "voice_lines",
            "neural_cache"} <= set(report)
    assert {name: g["pieces"] for name, g in report["by_group"].items()} == {"folk": 2, "other": 1}
    assert all(g["shipped"] < 0.8 and g["chord_share"] == 0.0 for g in report["by_group"].values())
    assert all(g["pitch_nll_without"] > 0 for g in report["by_group"].values())


def test_dynamic_evaluation_learns_a_piece_that_repeats():
    torch.manual_seed(0)
    predictor = LSTMPredictor(tiny_model())
    rows = [predictor.prepare(p) for p in pieces()[:1]]
    report = ablation(predictor, rows, dynamic={"lr": 0.05, "steps": 3, "chunk": 8})
    assert report["dynamic"]["alone"] < 0.95


def test_krause_style_dynamic_evaluation_learns_a_piece_that_repeats():
    torch.manual_seed(0)
    predictor = LSTMPredictor(tiny_model())
    rows = [predictor.prepare(p) for p in pieces()[:1]]
    report = ablation(predictor, rows, segment={"lr": 0.01, "segment": 8})
    assert report["dynamic_segment"]["alone"] < 0.95


def test_the_voice_line_view_follows_each_voice_of_a_chorale_like_piece():
    """Two voices in chords, each repeating its own line: the voice-line view predicts every voice's
    next note (the interval view, reading soprano-alto-soprano-alto, sees jumps between them)."""
    from livegen.train.memory_ablation import voice_line_probs

    torch.manual_seed(0)
    predictor = LSTMPredictor(tiny_model())
    soprano, alto = [72, 74, 76, 77, 76, 74], [64, 65, 67, 65, 64, 62]
    notes = []
    for _ in range(8):
        for s, a in zip(soprano, alto):
            notes += [[s, 0.5, 0.4, 80], [a, 0.0, 0.4, 70]]
    rows = predictor.prepare(np.array(notes, dtype=float))
    probs = voice_line_probs(predictor, rows)
    assert probs.shape == (len(rows) - 25,) and np.all(probs > 0.0)
    is_chord_note = (rows[25:, 1] == 0.0).astype(float)  # told which notes are chord notes: the lines alone
    lines = voice_line_probs(predictor, rows, chord=is_chord_note)
    assert np.all(lines[-24:] > 0.8), lines[-24:]  # known lines, after a few rounds: each voice's next note


def test_the_neural_cache_votes_for_what_followed_the_most_similar_summary():
    """A piece that repeats an 8-note motif: after two rounds, the summary before each note is most
    like the one a round earlier, whose next pitch is the truth; a sharp softmax finds it."""
    from livegen.train.memory_ablation import neural_cache_probs

    torch.manual_seed(0)
    predictor = LSTMPredictor(tiny_model())
    rows = predictor.prepare(pieces()[0])
    sharp, flat = neural_cache_probs(predictor, rows, 1e4), neural_cache_probs(predictor, rows, 0.0)
    assert sharp.shape == flat.shape == (len(rows) - 25,)
    # theta 0: every earlier note votes alike, so the pitch's share of notes 1 .. i-1
    assert np.allclose(flat, [np.mean(rows[1:25 + k, 0] == rows[25 + k, 0]) for k in range(len(flat))])
    assert flat[-16:].mean() < 0.3 and sharp[-16:].mean() > 0.8


def test_the_learned_gate_does_at_least_as_well_as_the_best_fixed_weight_where_it_is_fitted():
    torch.manual_seed(0)
    predictor = LSTMPredictor(tiny_model())
    rows = [predictor.prepare(p) for p in pieces()]
    terms = [piece_terms(predictor, r) for r in rows]
    assert all(t["features"].shape == (len(t["lstm"]), len(GATE_FEATURES)) for t in terms)
    assert all(np.isfinite(t["features"]).all() for t in terms)
    gate = learned_gate(terms[:2], terms[2:])
    fixed = ablation(predictor, rows[:2])["fixed"]
    assert gate["fitted_on"] <= min(fixed.values()) + 1e-3  # a constant weight is one of its gates
    assert gate["scored"] < 0.8 and set(gate["theta"]) == set(GATE_FEATURES)
    assert ablation(predictor, rows[2:], gate_fit=terms[:2])["learned_gate"] == gate  # the same gate through ablation
