import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from livegen.errors import LivegenError, ModelError, TrainingDataError
from livegen.model.checkpoint import load_model
from livegen.model.lstm import NoteLSTM
from livegen.train.commands import run_train
from livegen.train.data import read_split, split_pieces
from livegen.train.loop import LSTMBatches
from livegen.model.tokens import Tokenizer
from train_fixtures import TINY, train_args, write_songs


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    return write_songs(tmp_path_factory.mktemp("songs"), count=12)


def log_of(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_two_epochs_lower_the_loss_and_save_best_and_last(songs, tmp_path, capsys):
    out = tmp_path / "model"
    args = train_args("--data", songs, "--out", out, "--epochs", "2", "--lr", "0.01", "--cache", tmp_path / "c", *TINY)
    assert run_train(args) == 0
    printed = capsys.readouterr().out
    assert "2 skipped" in printed and "corrupt.mid" in printed and "empty.mid" in printed
    log = log_of(out)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[1]["train_total"] < log[0]["train_total"]
    assert log[1]["val_total"] < log[0]["val_total"]
    assert set(log[0]["train"]) == {"pitch", "step", "duration", "velocity"}
    assert log[0]["notes_per_second"] > 0
    model = load_model(out, device="cpu")
    assert isinstance(model, NoteLSTM) and model.config.hidden == 16
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["data"]["skipped"] == 2 and config["training"]["train_config"]["epochs"] == 2
    assert (out / "last" / "model.safetensors").is_file() and (out / "MODEL_CARD.md").is_file()


def test_split_is_by_piece_reproducible_and_recorded(songs, tmp_path):
    ids = [f"piece{i}" for i in range(40)]
    a, b = split_pieces(ids, seed=3), split_pieces(list(reversed(ids)), seed=3)
    assert a == b
    assert sorted(a["train"] + a["validation"] + a["test"]) == sorted(ids)
    assert len(a["validation"]) == 2 and len(a["test"]) == 2
    assert split_pieces(ids, seed=4) != a
    out = tmp_path / "model"
    run_train(train_args("--data", songs, "--out", out, "--epochs", "1", "--max-steps", "1", "--cache", tmp_path / "c",
                         "--val-fraction", "0.2", "--test-fraction", "0.2", *TINY))
    split = read_split(out)
    pieces = split["train"] + split["validation"] + split["test"]
    assert len(pieces) == len(set(pieces)) == 12
    assert len(split["test"]) == 2 and all(p.endswith(".mid") for p in pieces)


def test_windows_come_from_the_pieces_they_were_cut_from():
    tokenizer = Tokenizer()
    arrays = [np.column_stack([np.full(n, pitch), np.full(n, 0.5), np.full(n, 0.4), np.full(n, 64)])
              for n, pitch in ((50, 60), (7, 70), (300, 80))]
    batches = LSTMBatches(arrays, tokenizer, window=32, batch_size=4, rng=np.random.default_rng(0))
    seen = set()
    for index in range(len(batches)):
        tokens, mask = batches[index]
        for row, row_mask in zip(tokens, mask):
            length = row_mask.sum() + 1
            pitches = set(row[:length, 0].tolist())
            assert len(pitches) == 1  # a window never crosses from one piece into another
            seen |= pitches
    assert seen == {60, 70, 80}


def test_resume_continues_exactly_from_the_checkpoint(songs, tmp_path):
    common = ["--data", songs, "--cache", tmp_path / "c", "--dropout", "0", *TINY]
    straight = tmp_path / "straight"
    run_train(train_args(*common, "--out", straight, "--epochs", "2"))
    resumed = tmp_path / "resumed"
    run_train(train_args(*common, "--out", resumed, "--epochs", "1"))
    assert [r["epoch"] for r in log_of(resumed)] == [1]
    run_train(train_args(*common, "--out", resumed, "--epochs", "2", "--resume"))
    log = log_of(resumed)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[1]["step"] == log_of(straight)[1]["step"]
    a = load_file(str(straight / "last" / "model.safetensors"))
    b = load_file(str(resumed / "last" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    assert read_split(straight) == read_split(resumed)


def test_resume_without_checkpoint_and_no_data_are_user_errors(songs, tmp_path):
    with pytest.raises(ModelError, match="no checkpoint"):
        run_train(train_args("--data", songs, "--out", tmp_path / "new", "--resume", *TINY))
    with pytest.raises(TrainingDataError):
        run_train(train_args("--out", tmp_path / "x", *TINY))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mid").write_bytes(b"nope")
    with pytest.raises(LivegenError, match="none of the 1 files"):
        run_train(train_args("--data", bad, "--out", tmp_path / "y", *TINY))


def test_duplicate_tunes_stay_on_one_side_of_the_split():
    from livegen.train.data import content_key

    tune = np.array([[60, 0, 0.5, 80], [62, 0.5, 0.5, 80], [64, 0.5, 0.5, 80], [65, 0.5, 0.5, 80]], dtype=float)
    transposed = tune + np.array([5, 0, 0, 0])
    assert content_key(tune) == content_key(transposed) != content_key(tune[::-1])
    ids = [f"p{i}" for i in range(30)]
    keys = {i: ("same" if i in ("p1", "p7", "p19") else i) for i in ids}
    for seed in range(10):
        split = split_pieces(ids, seed, 0.1, 0.1, keys)
        sides = {name for name, members in split.items() if "p1" in members or "p7" in members or "p19" in members}
        assert len(sides) == 1
        assert sorted(sum(split.values(), [])) == sorted(ids)


def test_ema_saves_the_moving_average_and_resumes_it(songs, tmp_path):
    common = ["--data", songs, "--cache", tmp_path / "c", "--dropout", "0", "--ema", "0.9", *TINY]
    straight = tmp_path / "straight"
    run_train(train_args(*common, "--out", straight, "--epochs", "1"))
    (record,) = log_of(straight)
    assert set(record["val_raw"]) == set(record["val"]) and record["val_raw"] != record["val"]
    saved = load_file(str(straight / "model.safetensors"))
    average = load_file(str(straight / "last" / "average.safetensors"))
    raw = load_file(str(straight / "last" / "model.safetensors"))
    assert set(saved) == set(average) == set(raw)
    for name in saved:  # out/ holds the average (the only epoch is the best), last/ the raw weights beside it
        torch.testing.assert_close(saved[name], average[name])
    assert any(not torch.equal(saved[name], raw[name]) for name in saved)

    two = tmp_path / "two"
    run_train(train_args(*common, "--out", two, "--epochs", "2"))
    run_train(train_args(*common, "--out", straight, "--epochs", "2", "--resume"))
    a = load_file(str(two / "last" / "average.safetensors"))
    b = load_file(str(straight / "last" / "average.safetensors"))
    for name in a:  # resuming carries the average on instead of restarting it from the raw weights
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_ema_decay_must_be_below_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_args("--out", tmp_path / "x", "--ema", "1", *TINY)
    assert exit_info.value.code == 2 and "--ema" in capsys.readouterr().err
