import os
import shutil

import numpy as np
import pytest
from music21 import chord, dynamics, meter, note, stream, tempo, tie

from livegen.errors import TrainingDataError
from livegen.train import data
from livegen.train.data import find_files, ingest, score_to_notes
from train_fixtures import CHORALE, KERN, MUSIC21_MIDI, real_files, write_songs


def test_real_files_shipped_with_music21_with_a_corrupt_one_mixed_in(tmp_path):
    folder = real_files(tmp_path / "data")
    files = find_files([str(folder)])
    assert len(files) == 4
    result = ingest(files, tmp_path / "cache", workers=2, progress=False)
    assert result.files == 4
    assert [f.endswith("broken.mxl") for f, _ in result.skipped] == [True]
    assert "not a readable score" in result.skipped[0][1]
    by_name = {p.id.rsplit("/", 1)[-1]: p for p in result.pieces}
    assert set(by_name) == {MUSIC21_MIDI.name, CHORALE.name, KERN.name}
    chorale = by_name[CHORALE.name]
    assert chorale.quantised and not np.isnan(chorale.notes).any()
    steps, durations = chorale.notes[:, 1], chorale.notes[:, 2]
    assert (steps >= 0).all() and (durations > 0).all()
    assert (steps == 0).mean() > 0.5  # four voices: most onsets are chords
    # bwv66.6 carries no number, music21 reads its tempo as 96 per quarter: a quarter is 0.625 s
    assert np.isclose(np.min(steps[steps > 0]), 0.3125)
    assert "1 skipped" in result.summary() and "broken.mxl" in result.summary()


def test_cache_is_used_the_second_time(tmp_path, monkeypatch):
    folder = write_songs(tmp_path / "songs", count=3)
    files = find_files([str(folder)])
    first = ingest(files, tmp_path / "cache", progress=False)
    assert len(first.pieces) == 3 and len(first.skipped) == 2  # corrupt.mid, empty.mid

    def fail(path):
        raise AssertionError("parsed again")

    monkeypatch.setattr(data, "parse_file", fail)
    second = ingest(files, tmp_path / "cache", progress=False)
    assert [p.id for p in second.pieces] == [p.id for p in first.pieces]
    for a, b in zip(first.pieces, second.pieces):
        np.testing.assert_array_equal(a.notes, b.notes)
    assert second.skipped == first.skipped
    (folder / "song00.mid").write_bytes((folder / "song01.mid").read_bytes())  # new content: stale
    monkeypatch.undo()
    third = ingest(files, tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(third.pieces[0].notes, third.pieces[1].notes)


def test_cache_survives_a_reinstall_that_moves_and_touches_the_files(tmp_path, monkeypatch):
    """Reinstalling music21 (or copying a MIDI folder) gives every file a new path and mtime; the
    bytes are the same, so nothing is parsed again."""
    folder = write_songs(tmp_path / "songs", count=2)
    first = ingest(find_files([str(folder)]), tmp_path / "cache", progress=False)
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)  # new paths, new mtimes
    for file in moved.iterdir():
        os.utime(file, (1e9, 1e9))

    def fail(path):
        raise AssertionError(f"parsed again: {path}")

    monkeypatch.setattr(data, "parse_file", fail)
    second = ingest(find_files([str(moved)]), tmp_path / "cache", progress=False)
    assert len(second.pieces) == len(first.pieces) == 2 and len(second.skipped) == len(first.skipped)
    for a, b in zip(first.pieces, second.pieces):
        np.testing.assert_array_equal(a.notes, b.notes)


def test_bad_files_are_reasons_not_failures(tmp_path):
    folder = write_songs(tmp_path / "songs", count=1)
    (folder / "text.mid").write_text("hello")
    result = ingest(find_files([str(folder)]), None, progress=False)
    reasons = dict((f.rsplit("/", 1)[-1], r) for f, r in result.skipped)
    assert set(reasons) == {"corrupt.mid", "empty.mid", "text.mid"}
    assert "no notes" in reasons["empty.mid"]
    assert len(result.pieces) == 1


def test_missing_paths_are_user_errors(tmp_path):
    with pytest.raises(TrainingDataError, match="no such file"):
        find_files([str(tmp_path / "nothing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingDataError, match="no MIDI or score files"):
        find_files([str(tmp_path / "empty")])


def test_score_to_notes_tempo_ties_chords_grace_and_dynamics():
    part = stream.Part()
    part.append(meter.TimeSignature("4/4"))
    part.insert(0, tempo.MetronomeMark(number=120))
    part.insert(0, dynamics.Dynamic("p"))
    tied_a, tied_b = note.Note("C4", quarterLength=1), note.Note("C4", quarterLength=1)
    tied_a.tie, tied_b.tie = tie.Tie("start"), tie.Tie("stop")
    part.append([tied_a, tied_b])
    part.append(note.Note("D4", quarterLength=0.5).getGrace())
    part.append(chord.Chord(["E4", "G4"], quarterLength=2))
    part.insert(4, tempo.MetronomeMark(number=60))
    part.append(note.Note("A4", quarterLength=1))
    notes = score_to_notes(stream.Score([part]))
    assert [(n.pitch, round(n.start, 6), round(n.end, 6)) for n in notes] == [
        (60, 0.0, 1.0),  # two tied quarters at 120 BPM: one note of 1 s
        (64, 1.0, 2.0),  # the chord: two notes at one onset; the grace note is gone
        (67, 1.0, 2.0),
        (69, 2.0, 3.0),  # after the change to 60 BPM a quarter lasts 1 s
    ]
    velocity = notes[0].velocity
    assert all(n.velocity == velocity for n in notes) and velocity < 80  # piano, not the default


def test_corpus_files_dedupe_formats_and_filter():
    ids = data.corpus_files(["beethoven/opus18no1/movement1"])
    assert ids == ["music21:beethoven/opus18no1/movement1.mxl"]  # .krn of the same work dropped
    assert data.file_path(ids[0]).is_file()
    with pytest.raises(TrainingDataError):
        data.corpus_files(["no-such-composer-anywhere"])
