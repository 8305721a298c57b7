"""The session memory's blend (livegen.model.blend) on the lean path: the LSTM's side of the
mixture comes from LeanHeads and the draws from four uniforms, and must mean what the torch
path means (tests/model/test_lean_sampling.py holds the helpers and the plain stream's tests)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from livegen.model.blend import MemoryStream
from livegen.model.checkpoint import load_model
from livegen.model.lstm import NoteLSTM, NoteLSTMConfig
from livegen.model.memory import SessionMemory
from livegen.model.params import SamplingParams
from livegen.model.sampling import pitch_mask
from livegen.model.stream import NoteStream
from livegen.model.tokens import TokenConfig
from test_lean_sampling import distance_to

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "default"
MOTIF = [(60, 1.0), (62, 1.0), (64, 0.5), (65, 0.5), (67, 2.0), (64, 1.0), (62, 0.5)]  # (pitch, beats)
ROWS = np.array([[p, b * 0.4, 0.36 * b, 80] for _ in range(3) for p, b in MOTIF], dtype=np.float64)
PARAMS = SamplingParams(memory=0.5)


def relative_model() -> NoteLSTM:
    torch.manual_seed(0)
    config = NoteLSTMConfig(hidden=24, layers=1, pitch_embedding=8, field_embedding=8, dropout=0.0, head="linear",
                            input_projection=False, tokens=TokenConfig.relative_default())
    return NoteLSTM(config).eval()


@pytest.fixture(scope="module", params=["tiny linear", "shipped default"])
def model(request):
    return relative_model() if request.param == "tiny linear" else load_model(DEFAULT_MODEL, device="cpu")


def blended(model, lean: bool = True, adaptive: bool = True) -> MemoryStream:
    stream = NoteStream(model, seed=0)
    if not lean:
        stream.heads = None  # what a CUDA or mlp-head stream does: NextNote's torch heads
    memory = MemoryStream(stream, SessionMemory(), adaptive)
    memory.feed(ROWS)
    return memory


def test_the_lean_blend_gives_the_torch_blend_distributions(model):
    lean, torch_way = blended(model), blended(model, lean=False)
    session = lean.session()
    np.testing.assert_allclose(lean.step_probs(PARAMS, session), torch_way.step_probs(PARAMS, session), atol=1e-6)
    for step in np.flatnonzero(lean.step_probs(PARAMS, session) > 1e-3):
        np.testing.assert_allclose(lean.pitch_probs(PARAMS, int(step), session),
                                   torch_way.pitch_probs(PARAMS, int(step), session), atol=1e-6)


def test_lean_blend_draws_follow_the_blended_distributions(model):
    stream = blended(model)
    session = stream.session()
    step = stream.step_probs(PARAMS, session)
    mask = np.isfinite(pitch_mask(PARAMS.pitch_low, PARAMS.pitch_high).numpy())
    pitch = np.zeros(128)
    for s in np.flatnonzero(step):
        given = stream.pitch_probs(PARAMS, int(s), session) * mask
        pitch += step[s] * given / given.sum()
    generator = torch.Generator().manual_seed(0)
    draws = np.array([stream._sample_tokens(PARAMS, generator, ()) for _ in range(10000)])
    for name, column, exact in (("step", 1, step), ("pitch", 0, pitch)):
        distance, bound = distance_to(exact, draws[:, column])
        assert distance < bound, f"{name}: total variation {distance:.3f} >= {bound:.3f}"


def test_both_blend_paths_sample_in_range_and_keep_the_chord_rule():
    model = relative_model()
    with torch.no_grad():
        model.step_head[0].bias[0] += 8.0  # the LSTM's side mostly says "a chord note"
    params = SamplingParams(memory=0.5, temperature=1.5, pitch_low=58, pitch_high=66)
    for lean in (True, False):
        answer = blended(model, lean, adaptive=False).fork()  # the memory weighs 0.5 exactly
        rows = [answer.sample(params, chord=[60, 62]) for _ in range(100)]
        assert all(58 <= row[0] <= 66 for row in rows)
        chord_notes = [row[0] for row in rows if row[1] == 0]
        assert len(chord_notes) > 20 and not {60, 62} & set(chord_notes)
