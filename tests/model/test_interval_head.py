"""The interval head: scores over moves from the pitch just read, added to the pitch logits."""

import dataclasses

import numpy as np
import pytest
import torch

from factories import TINY_CONFIG, tiny_model
from livegen.model.checkpoint import load_model, save_model
from livegen.model.lean_heads import LeanHeads
from livegen.model.lstm import NoteLSTM, NoteLSTMConfig, with_interval_head

LINEAR = dataclasses.replace(TINY_CONFIG, layers=1, head="linear", input_projection=False)


def test_each_score_lands_on_the_pitch_its_interval_reaches_from_every_previous_pitch():
    model = tiny_model(config=dataclasses.replace(LINEAR, interval_range=4))
    scores = torch.arange(9, dtype=torch.float32) + 1.0  # interval -4 .. 4 -> 1 .. 9
    model.interval_head.weight.data.zero_()
    model.interval_head.bias.data.copy_(scores)
    for previous in (0, 2, 60, 125, 127):
        laid = model.interval_logits(torch.zeros(1, LINEAR.hidden), torch.tensor([previous]))[0]
        for pitch in range(128):
            move = pitch - previous
            assert laid[pitch] == (move + 5 if abs(move) <= 4 else 0.0), (previous, pitch)


def test_the_lean_heads_lay_the_scores_out_alike():
    model = tiny_model(config=dataclasses.replace(LINEAR, interval_range=4))
    heads = LeanHeads(model)
    h = torch.randn(1, LINEAR.hidden)
    for previous, step in ((0, 0), (61, 3), (127, 7)):
        with torch.no_grad():
            c_step = h + model.cond_step(torch.tensor([step]))
            expected = model.pitch_head(c_step) + model.interval_logits(c_step, torch.tensor([previous]))
        torch.testing.assert_close(torch.from_numpy(heads.pitch_logits(h, step, previous)), expected[0],
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(heads.logits(h, previous).pitch(step)), expected[0],
                                   rtol=1e-5, atol=1e-5)


def test_a_model_with_an_interval_head_refuses_to_guess_the_previous_pitch():
    model = tiny_model(config=dataclasses.replace(LINEAR, interval_range=4))
    h, target = torch.zeros(1, LINEAR.hidden), torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="pitch just read"):
        model.heads(h, target)
    with pytest.raises(ValueError, match="pitch just read"):
        LeanHeads(model).logits(h).pitch(0)
    tiny_model(config=LINEAR).heads(h, target)  # no head: nothing needed


def test_growing_a_head_keeps_the_function():
    base = tiny_model(config=LINEAR)
    grown = with_interval_head(base, 6)
    assert grown.config.interval_range == 6 and not grown.training
    tokens = torch.randint(0, 16, (2, 10, 4))
    with torch.no_grad():
        for a, b in zip(base(tokens[:, :-1], tokens[:, 1:])[0], grown(tokens[:, :-1], tokens[:, 1:])[0]):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="already has an interval head"):
        with_interval_head(grown, 6)


def test_an_interval_model_round_trips_through_its_folder_and_old_configs_load(tmp_path):
    model = tiny_model(config=dataclasses.replace(LINEAR, interval_range=7))
    loaded = load_model(save_model(model, tmp_path / "m"), device="cpu")
    assert loaded.config.interval_range == 7
    tokens = torch.randint(0, 16, (1, 8, 4))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens[:, :-1], tokens[:, 1:])[0].pitch,
                                   loaded(tokens[:, :-1], tokens[:, 1:])[0].pitch)
    old = NoteLSTMConfig.from_dict({k: v for k, v in LINEAR.to_dict().items() if k != "interval_range"})
    assert old.interval_range == 0
    with pytest.raises(ValueError, match="interval_range"):
        NoteLSTMConfig(interval_range=128)


def test_the_head_learns_a_move_in_every_key_where_the_absolute_head_must_see_each_one():
    """Rising whole tones from random pitches: after the same few steps, the interval head's
    model puts more mass on 'two up' from start pitches it never saw than the plain one does."""
    rng = np.random.default_rng(0)
    seen = [p for p in range(40, 90) if p % 3]  # start pitches trained on; p % 3 == 0 never seen

    def batch(starts):
        pitches = np.array(starts)[:, None] + 2 * np.arange(9)[None, :]
        tokens = np.zeros((len(starts), 9, 4), dtype=np.int64)
        tokens[..., 0], tokens[..., 1], tokens[..., 2], tokens[..., 3] = pitches, 5, 5, 10
        return torch.as_tensor(tokens)

    def trained(config):
        torch.manual_seed(0)
        model = NoteLSTM(config)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(20):
            tokens = batch(rng.choice(seen, 16))
            logits, _ = model(tokens[:, :-1], tokens[:, 1:])
            loss = torch.nn.functional.cross_entropy(logits.pitch.flatten(0, 1), tokens[:, 1:, 0].flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return model.eval()

    def mass_on_the_truth(model):
        tokens = batch([p for p in range(42, 88) if p % 3 == 0])
        with torch.no_grad():
            logits, _ = model(tokens[:, :-1], tokens[:, 1:])
        return float(torch.softmax(logits.pitch, -1).gather(-1, tokens[:, 1:, :1]).mean())

    plain, interval = trained(LINEAR), trained(dataclasses.replace(LINEAR, interval_range=4))
    assert mass_on_the_truth(interval) > max(0.5, 2 * mass_on_the_truth(plain))
