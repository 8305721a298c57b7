"""Fine-tuning: `livegen train --init-from MODEL --data MY_MIDI` adapts a trained model to a player's music."""

import json

import numpy as np
import pytest

from livegen.errors import ModelError
from livegen.model.checkpoint import load_model
from livegen.notes import Note, Track, write_midi
from livegen.train.commands import run_train
from livegen.train.data import ingest, read_split, select
from livegen.train.evaluate import LSTMPredictor, likelihoods
from train_fixtures import TINY, train_args, write_songs


def player_song(index: int, length: int = 64) -> list[Note]:
    """The player's own style, unlike the base corpus: falling minor arpeggios in triplets."""
    base = 62 + index % 5
    shape = [0, -3, -7, -12, -8, -5]
    shape = shape[index % 6:] + shape[:index % 6]  # each take its own figure, not a transposed copy
    notes, t = [], 0.0
    for i in range(length):
        step = 1 / 3 * 0.4
        lift = (i // 12) % 2 * (2 + index // 6)
        notes.append(Note(base + shape[i % 6] + lift, t, t + step * 0.5, 40 + (i % 3) * 25))
        t += step
    return notes


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    songs = write_songs(root / "songs", count=12, corrupt=False)
    out = root / "model"
    assert run_train(train_args("--data", songs, "--out", out, "--epochs", "3", "--lr", "0.01",
                                "--cache", root / "c", *TINY)) == 0
    return out


def test_fine_tuning_lowers_the_loss_on_the_players_music(base_model, tmp_path):
    mine = tmp_path / "my-midi"
    mine.mkdir()
    for i in range(8):
        write_midi(mine / f"take{i}.mid", [Track("me", player_song(i))])
    out = tmp_path / "mine"
    args = train_args("--init-from", base_model, "--data", mine, "--out", out, "--epochs", "30", "--lr", "0.02",
                      "--val-fraction", "0.25", "--test-fraction", "0.0", "--cache", tmp_path / "c", *TINY)
    assert run_train(args) == 0
    split = read_split(out)
    pieces = select(ingest([str(p) for p in sorted(mine.glob("*.mid"))], progress=False).pieces, split["validation"])
    assert pieces
    before = likelihoods(LSTMPredictor(load_model(base_model, device="cpu")), pieces)["pitch_nll"]
    after = likelihoods(LSTMPredictor(load_model(out, device="cpu")), pieces)["pitch_nll"]
    assert after < 0.85 * before, (before, after)
    tuned, base = load_model(out, device="cpu"), load_model(base_model, device="cpu")
    assert tuned.config == base.config  # the same architecture and time representation
    assert json.loads((out / "config.json").read_text())["training"]["init_from"] == str(base_model)


def test_init_from_a_missing_or_foreign_model_is_one_clear_error(base_model, tmp_path):
    songs = write_songs(tmp_path / "songs", count=4, corrupt=False)
    with pytest.raises(ModelError, match="nowhere"):
        run_train(train_args("--init-from", tmp_path / "nowhere", "--data", songs, "--out", tmp_path / "o",
                             "--epochs", "1", "--cache", tmp_path / "c", *TINY))
    with pytest.raises(ModelError, match="--init-from"):
        run_train(train_args("--init-from", base_model, "--arch", "seed", "--data", songs, "--out", tmp_path / "o2",
                             "--epochs", "1", "--cache", tmp_path / "c", *TINY))


def test_interval_range_grows_a_zeroed_head_on_a_model_without_one_and_cannot_change_one(base_model, tmp_path):
    """How 0.4 grew from 0.3: the grown model starts as the same function, then trains."""
    songs = write_songs(tmp_path / "songs", count=6, corrupt=False)
    assert load_model(base_model, device="cpu").config.interval_range == 36  # a new model's default
    plain = tmp_path / "plain"
    assert run_train(train_args("--interval-range", "0", "--data", songs, "--out", plain, "--epochs", "1",
                                "--cache", tmp_path / "c", *TINY)) == 0
    assert load_model(plain, device="cpu").config.interval_range == 0
    out = tmp_path / "grown"
    assert run_train(train_args("--init-from", plain, "--interval-range", "5", "--data", songs, "--out", out,
                                "--epochs", "1", "--lr", "0.01", "--cache", tmp_path / "c", *TINY)) == 0
    grown = load_model(out, device="cpu")
    assert grown.config.interval_range == 5
    assert float(grown.interval_head.weight.detach().abs().sum()) > 0  # trained from zero
    with pytest.raises(ModelError, match="interval head of reach 5"):
        run_train(train_args("--init-from", out, "--interval-range", "12", "--data", songs, "--out", tmp_path / "o",
                             "--epochs", "1", "--cache", tmp_path / "c", *TINY))
    kept = tmp_path / "kept"  # without the flag a model keeps what it has
    assert run_train(train_args("--init-from", out, "--data", songs, "--out", kept, "--epochs", "1",
                                "--cache", tmp_path / "c", *TINY)) == 0
    assert load_model(kept, device="cpu").config.interval_range == 5
