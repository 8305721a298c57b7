"""`livegen eval --session-memory`: the motif measures, and the report through the real CLI."""

import json
import subprocess
import sys

import numpy as np

from factories import tiny_model_dir
from livegen.notes import Note, Track, write_midi
from livegen.train.session_eval import longest_copy, motif_reuse


def rows(pitches):
    return np.array([[p, 0.25, 0.2, 80] for p in pitches], dtype=float)


def test_motif_reuse_and_longest_copy_count_interval_patterns():
    primer = rows([60, 62, 64, 65, 67, 65, 64, 62])
    assert motif_reuse(primer, rows([70, 72, 74, 75])) == 1.0  # a transposed copy: same intervals
    assert motif_reuse(primer, rows([60, 61, 70, 50])) == 0.0
    assert longest_copy(primer, rows([72, 74, 76, 77, 79, 50])) == 5
    assert longest_copy(primer, rows([60, 50, 40])) == 1


def test_eval_reports_session_memory_through_the_cli(tmp_path):
    model = tiny_model_dir(tmp_path / "model")
    motif = [60, 62, 64, 60, 67, 65, 64, 62]
    for k in range(3):
        notes = [Note(p + k, i * 0.25, i * 0.25 + 0.2, 80) for i, p in enumerate(motif * 12)]
        write_midi(tmp_path / "data" / f"piece{k}.mid", [Track("m", notes)])
    result = subprocess.run([sys.executable, "-m", "livegen", "eval", str(model), "--data", str(tmp_path / "data"),
                             "--session-memory", "0.5", "--json", "--quiet", "--workers", "0", "--no-cache",
                             "--continuation-notes", "16"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    memory = json.loads(result.stdout)["models"][str(model)]["session_memory"]
    assert {"weight", "pitch_nll", "pitch_nll_without", "motif_reuse", "motif_reuse_without"} <= set(memory)
    assert memory["weight"] == 0.5
    assert (memory["key_prior"], memory["register_prior"]) == (0.5, 0.75)  # the continuations sample as `run` does
    assert memory["pitch_nll"] < 0.5 * memory["pitch_nll_without"]  # a random model, a piece that repeats
    assert memory["motif_reuse"] > memory["motif_reuse_without"]
    bad = subprocess.run([sys.executable, "-m", "livegen", "eval", str(model), "--session-memory", "1.5"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--session-memory" in bad.stderr


def test_the_continuations_sample_with_the_priors_livegen_run_uses():
    """A full register prior keeps the sampled continuation inside the primer's span (a tiny,
    untrained model wanders without it), as `livegen run --memory W --register-prior 1` would."""
    import numpy as np

    from factories import tiny_model
    from livegen.train.session_eval import SessionSettings, sample_continuation

    primer = np.array([[p, 0.25, 0.2, 80.0] for p in [84, 86, 88, 89, 91, 89, 88, 86] * 4])
    kept = sample_continuation(tiny_model(), primer, 64, 0.5, SessionSettings(), seed=1, register_prior=1.0)
    free = sample_continuation(tiny_model(), primer, 64, 0.5, SessionSettings(), seed=1)
    assert kept[:, 0].min() >= 84 and kept[:, 0].max() <= 91
    assert free[:, 0].min() < 84 or free[:, 0].max() > 91


def _score_file(path, repeat: bool):
    """A two-measure tune between repeat signs when ``repeat``."""
    import music21

    part = music21.stream.Part()
    for number, pitches in enumerate((["C4", "D4", "E4", "F4"], ["G4", "A4", "B4", "C5"]), start=1):
        measure = music21.stream.Measure(number=number)
        measure.append(music21.meter.TimeSignature("4/4")) if number == 1 else None
        for name in pitches:
            measure.append(music21.note.Note(name, quarterLength=1))
        if repeat and number == 1:
            measure.leftBarline = music21.bar.Repeat(direction="start")
        if repeat and number == 2:
            measure.rightBarline = music21.bar.Repeat(direction="end")
        part.append(measure)
    score = music21.stream.Score([part])
    score.write("musicxml", fp=str(path))
    return str(path)


def test_repeated_set_from_a_split_takes_only_held_out_pieces_that_repeat(tmp_path):
    from livegen.notes import read_midi
    from livegen.train.data import write_split
    from livegen.train.session_eval import build_repeated_set, main, split_sources

    held_repeat = _score_file(tmp_path / "held_repeat.musicxml", repeat=True)
    held_plain = _score_file(tmp_path / "held_plain.musicxml", repeat=False)
    trained = _score_file(tmp_path / "trained_repeat.musicxml", repeat=True)
    write_split(tmp_path / "model", {"train": [trained], "validation": [held_plain], "test": [held_repeat]})
    sources = split_sources(tmp_path / "model")
    assert sources == {held_plain: {0}, held_repeat: {0}}
    written = build_repeated_set(tmp_path / "set", sources, per_file=5, limit=5)
    assert [p.name for p in written] == ["held_repeat-0.mid"]
    assert [n.pitch for n in read_midi(written[0])] == [60, 62, 64, 65, 67, 69, 71, 72] * 2
    assert main(["repeats", str(tmp_path / "cli"), "--from-split", str(tmp_path / "model")]) == 0
    assert [p.name for p in (tmp_path / "cli").iterdir()] == ["held_repeat-0.mid"]
