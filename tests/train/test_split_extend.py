"""--split-extend: a retrain on more music keeps the earlier release's validation and test pieces."""

import dataclasses
import json

import numpy as np
import pytest

from livegen.errors import TrainingDataError
from livegen.notes import Track, write_midi
from livegen.train.commands import run_train
from livegen.train.data import Piece, extend_split, read_split
from train_fixtures import TINY, song, train_args, write_songs


def piece(piece_id: str, pitches) -> Piece:
    notes = np.array([[p, i * 0.5, 0.4, 64] for i, p in enumerate(pitches)], dtype=np.float32)
    return Piece(piece_id, notes, False)


def test_new_pieces_join_training_and_copies_of_evaluated_pieces_stay_out():
    tune = [60, 62, 64, 65, 67, 65, 64, 62] * 3
    recorded = {"train": ["a"], "validation": ["v"], "test": ["t"], "held_out_styles": ["h"]}
    pieces = [piece("a", [50 + i % 7 for i in range(24)]), piece("v", [70 - i % 5 for i in range(24)]),
              piece("t", tune), piece("h", [40 + i % 3 for i in range(24)]),
              piece("new", [55 + i % 4 for i in range(24)]),
              piece("copy", [p + 7 for p in tune])]  # the test tune transposed: a leak if trained on
    split, leaked = extend_split(recorded, pieces)
    assert split == {"train": ["a", "new"], "validation": ["v"], "test": ["t"]}
    assert leaked == ["copy"]
    assert recorded["train"] == ["a"]  # the recorded split is not changed in place


def test_train_split_extend_keeps_the_evaluation_sets(tmp_path):
    first = write_songs(tmp_path / "first", count=10, corrupt=False)
    common = ["--cache", tmp_path / "cache", "--test-fraction", "0.2", "--epochs", "1", *TINY]
    assert run_train(train_args("--data", first, "--out", tmp_path / "old", *common)) == 0
    old = read_split(tmp_path / "old")
    more = tmp_path / "more"
    more.mkdir()
    for i in (20, 21, 22):
        write_midi(more / f"new{i}.mid", [Track("melody", song(i))])
    test_song = int(old["test"][0].rsplit("song", 1)[1][:2])
    copy = [dataclasses.replace(n, pitch=n.pitch + 2) for n in song(test_song)]  # a transposed copy of a test piece
    write_midi(more / "copy.mid", [Track("melody", copy)])

    args = ["--data", first, "--data", more, "--split-from", tmp_path / "old", *common]
    assert run_train(train_args(*args, "--out", tmp_path / "new", "--split-extend")) == 0
    new = read_split(tmp_path / "new")
    assert (new["validation"], new["test"]) == (old["validation"], old["test"])
    added = sorted(set(new["train"]) - set(old["train"]))
    assert [a.rsplit("/", 1)[1] for a in added] == ["new20.mid", "new21.mid", "new22.mid"]
    assert [c.rsplit("/", 1)[1] for c in new["left_out_as_copies"]] == ["copy.mid"]
    assert new["extended_from"] == str(tmp_path / "old")
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    assert config["training"]["data"]["train_pieces"] == len(new["train"])

    # without --split-extend the recorded split is used as it is: the new files are not trained on
    assert run_train(train_args(*args, "--out", tmp_path / "same")) == 0
    assert read_split(tmp_path / "same")["train"] == old["train"]


def test_split_extend_needs_a_split(tmp_path):
    songs = write_songs(tmp_path / "songs", count=4, corrupt=False)
    with pytest.raises(TrainingDataError, match="--split-extend needs --split-from"):
        run_train(train_args("--data", songs, "--out", tmp_path / "m", "--split-extend", *TINY))
