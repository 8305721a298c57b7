"""`python -m livegen.train.pointer_ablation`: a memory trained to copy from the piece so far."""

import numpy as np
import torch

from factories import tiny_model
from livegen.train.evaluate import LSTMPredictor
from livegen.train.pointer_ablation import PieceTerms, copy_masks, piece_terms, ratios, train_pointer
from livegen.train.session_eval import CONTEXT, SessionSettings, session_likelihoods


class Piece:
    def __init__(self, notes):
        self.notes = notes


def test_each_head_marks_the_earlier_notes_whose_copy_gives_the_truth():
    pitches = torch.tensor([60, 62, 64, 60, 62, 64, 67] + [70] * (CONTEXT - 7) + [72, 65])
    masks = copy_masks(pitches, (0, 1, 3))
    assert masks.shape == (3, 2, len(pitches) - 1)  # heads, scored notes, earlier notes 1..N-1
    first, second = CONTEXT, CONTEXT + 1  # their pitches 72 (no earlier 72) and 65
    assert not masks[0, 0].any()  # nothing earlier is a 72
    # offset 1: 70 -> 72 is +2, the moves 60->62 and 62->64 into notes 1, 2, 4, 5 (column = j - 1)
    assert set(torch.nonzero(masks[1, 0])[:, 0].tolist()) == {0, 1, 3, 4}
    # offset 1 for 72 -> 65, a fall of 7: none; offset 3 (from note first - 2, a 70: -5): none
    assert not masks[1, 1].any() and not masks[2, 1].any()
    # offset 3 for the first: 72 - pitches[first - 3] = 2: notes j with pitch[j] - pitch[j-3] = 2
    wanted = {j - 1 for j in range(3, first) if pitches[j] - pitches[j - 3] == 2}
    assert set(torch.nonzero(masks[2, 0])[:, 0].tolist()) == wanted
    assert not masks[:, 1, first:].any()  # never the note itself or later ones


def pieces(count=4):
    motifs = [[60, 62, 64, 60, 67, 65, 64, 62], [72, 71, 69, 67, 65, 67, 69, 71]]
    return [np.array([[p + k, 0.25, 0.2, 80] for p in motifs[k % 2] * 8], dtype=float) for k in range(count)]


def test_a_trained_pointer_copies_what_repeats_and_beats_the_lstm_and_its_untrained_self():
    torch.manual_seed(0)
    predictor = LSTMPredictor(tiny_model())
    terms = [piece_terms(predictor, predictor.prepare(p), "folk") for p in pieces()]
    assert all(isinstance(t, PieceTerms) and len(t.lstm) == len(t.pitches) - CONTEXT for t in terms)
    # the shipped memory's terms are the eval's: the same blend inputs as `livegen eval --session-memory`
    eval_nll = session_likelihoods(predictor, [Piece(p) for p in pieces()[:1]], SessionSettings(weight=0.5))
    assert abs(-terms[0].lstm.log().sum().item() - eval_nll["pitch_nll_without"] * len(terms[0].lstm)) < 1e-2
    untrained = ratios(train_pointer(terms[:3], epochs=0), terms[3:])
    trained = ratios(train_pointer(terms[:3], epochs=15, lr=1e-2), terms[3:])
    assert set(trained["by_group"]) == {"folk"}
    assert trained["ratio"] < 0.5 * untrained["ratio"]  # the gate learned, from other pieces, to trust the copies
