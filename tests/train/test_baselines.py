import json

import numpy as np
import pytest
import torch

from factories import melody
from livegen.errors import ModelError
from livegen.model.checkpoint import load_model, save_model
from livegen.model.markov import COUNTS_FILE, MarkovConfig, MarkovModel
from livegen.model.seed_baseline import SeedLSTM, SeedLSTMConfig, features
from livegen.notes import notes_to_array
from livegen.train.commands import run_train
from livegen.train.evaluate import MarkovPredictor, SeedPredictor, load_predictor
from train_fixtures import TINY, song, train_args, write_songs


def test_seed_recipe_shapes_loss_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SeedLSTM(SeedLSTMConfig())
    rows = notes_to_array(melody(40))
    x = features(rows[:25]).unsqueeze(0)
    assert x.shape == (1, 25, 3) and float(x[0, 0, 0]) == rows[0, 0] / 128
    out = model(x)
    assert out.pitch.shape == (1, 128) and out.step.shape == (1,)
    total, parts = model.loss(out, torch.as_tensor(rows[25:26], dtype=torch.float32))
    expected = 0.05 * parts["pitch"] + parts["step"] + parts["duration"]
    assert torch.isclose(total, expected)
    save_model(model, tmp_path / "seed")
    loaded = load_model(tmp_path / "seed", device="cpu")
    assert isinstance(loaded, SeedLSTM) and loaded.config == model.config
    np.testing.assert_allclose(loaded.pitch_log_probs(rows), model.eval().pitch_log_probs(rows), atol=1e-6)
    generated = loaded.generate(rows[:25], 10, generator=torch.Generator().manual_seed(0))
    assert generated.shape == (10, 4) and (generated[:, 1:3] >= 0).all() and (generated[:, 3] == 100).all()


def test_seed_and_markov_train_save_load_through_the_command(tmp_path):
    songs = write_songs(tmp_path / "songs", count=8)
    common = ["--data", songs, "--cache", tmp_path / "cache", *TINY]
    run_train(train_args(*common, "--out", tmp_path / "seed", "--arch", "seed", "--epochs", "1"))
    run_train(train_args(*common, "--out", tmp_path / "markov", "--arch", "markov", "--markov-order", "3"))
    seed = load_predictor(str(tmp_path / "seed"), torch.device("cpu"))
    markov = load_predictor(str(tmp_path / "markov"), torch.device("cpu"))
    assert isinstance(seed, SeedPredictor) and seed.model.config.hidden == 16
    assert isinstance(markov, MarkovPredictor) and markov.model.config.order == 3
    assert json.loads((tmp_path / "seed" / "config.json").read_text())["training"]["train_config"]["lr"] == 0.005
    assert (tmp_path / "seed" / "split.json").read_text() != ""
    with pytest.raises(ModelError):
        load_model(tmp_path / "markov", device="cpu")  # not a network: refused with a clear error


def test_markov_online_matches_batch_fit_and_round_trips_as_json(tmp_path):
    pieces = [notes_to_array(song(i, 40)) for i in range(4)]
    batch = MarkovModel(MarkovConfig(order=3)).fit(pieces)
    online = MarkovModel(MarkovConfig(order=3))
    for rows in pieces:
        online.reset()
        for start in range(0, len(rows), 7):  # notes arrive a few at a time
            online.observe(rows[start : start + 7])
    assert online.notes_seen == batch.notes_seen == sum(len(p) for p in pieces)
    context = [int(p) for p in pieces[0][:5, 0]]
    for field in range(4):
        probs = batch.probabilities(context, field)
        assert probs.sum() == pytest.approx(1.0) and (probs > 0).all()
        np.testing.assert_allclose(online.probabilities(context, field), probs)
    batch.save(tmp_path / "m")
    json.loads((tmp_path / "m" / COUNTS_FILE).read_text())  # plain JSON, no pickle
    loaded = MarkovModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.probabilities(context, 0), batch.probabilities(context, 0))
    a = loaded.continue_rows(pieces[0][:8], 30, np.random.default_rng(5))
    b = batch.continue_rows(pieces[0][:8], 30, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert (a[:, 2] > 0).all() and (a[:, 1] >= 0).all()
    greedy = batch.continue_rows(pieces[0][:8], 10, np.random.default_rng(0), temperature=0)
    np.testing.assert_array_equal(greedy, batch.continue_rows(pieces[0][:8], 10, np.random.default_rng(9), temperature=0))


def test_markov_backs_off_and_respects_the_pitch_range():
    model = MarkovModel(MarkovConfig(order=2)).fit([notes_to_array(melody(16))])
    unseen = model.probabilities([1, 2], 0)  # nothing matches: overall counts, smoothed
    assert unseen.argmax() in {60, 62, 64, 65, 67} and unseen[1] > 0
    rows = model.continue_rows(np.array([[1, 0, 0.5, 60]]), 20, np.random.default_rng(0), pitch_low=60, pitch_high=64)
    assert set(rows[:, 0].astype(int)) <= {60, 62, 64}
    with pytest.raises(ModelError):
        model.continue_rows(np.array([[60, 0, 0.5, 60]]), 1, np.random.default_rng(0), pitch_low=100, pitch_high=110)


def test_corrupt_markov_files_are_model_errors(tmp_path):
    MarkovModel().fit([notes_to_array(melody(16))]).save(tmp_path / "m")
    (tmp_path / "m" / COUNTS_FILE).write_text('{"format": "livegen-markov", "format_version": 1, "tables": [[]]}')
    with pytest.raises(ModelError, match="corrupt"):
        MarkovModel.load(tmp_path / "m")
    with pytest.raises(ModelError, match="not a Markov model folder"):
        MarkovModel.load(tmp_path / "nothing")
