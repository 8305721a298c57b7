"""The rhythm temperature where a player hears it: the shipped model's answers hold fewer stray
notes over the next onsets as it falls, and `livegen eval --rhythm-temperature` samples and
reports the continuations that way."""

import json
import subprocess
import sys

import numpy as np
import pytest

from factories import tiny_model_dir
from livegen.notes import DURATION, STEP, Note, Track, write_midi
from test_follow import F_SHARP_MAJOR, answers, scale_call, shipped  # noqa: F401 (fixture)


def held_per_onset(rows: np.ndarray) -> float:
    """Notes still sounding from an earlier onset at each onset (a legato melody has none)."""
    starts = np.cumsum(rows[:, STEP])
    ends = starts + rows[:, DURATION]
    onsets = np.unique(np.round(starts, 3))
    return float(np.mean([np.sum((starts < t - 0.01) & (ends > t + 0.01)) for t in onsets]))


def duration_entropy(rows_list) -> float:
    _, counts = np.unique(np.round(np.concatenate([r[:, DURATION] for r in rows_list]), 3), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_a_lower_rhythm_temperature_holds_fewer_stray_notes(shipped):
    call = scale_call(F_SHARP_MAJOR, 0.3)  # a melody: every note ends as the next begins
    held, entropy = {}, {}
    for factor in (0.5, 1.0, 1.5):
        shipped.rhythm_temperature = factor
        try:
            out = answers(shipped, call, count=12, length=32)
        finally:
            shipped.rhythm_temperature = 1.0
        held[factor] = np.mean([held_per_onset(a) for a in out])
        entropy[factor] = duration_entropy(out)
    assert held[0.5] < held[1.0] < held[1.5], held
    assert entropy[0.5] < entropy[1.0] < entropy[1.5], entropy


def test_eval_takes_the_rhythm_temperature_from_the_command_line(tmp_path):
    model = tiny_model_dir(tmp_path / "model")
    for k in range(2):
        notes = [Note(p, i * 0.25, i * 0.25 + 0.2, 80) for i, p in enumerate((F_SHARP_MAJOR + F_SHARP_MAJOR[::-1]) * 4)]
        write_midi(tmp_path / "data" / f"piece{k}.mid", [Track("m", notes)])
    result = subprocess.run([sys.executable, "-m", "livegen", "eval", str(model), "--data", str(tmp_path / "data"),
                             "--rhythm-temperature", "0.5", "--json", "--quiet", "--workers", "0", "--no-cache",
                             "--continuation-notes", "16", "--session-memory", "0.5"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["rhythm_temperature"] == 0.5
    assert report["models"][str(model)]["session_memory"]["rhythm_temperature"] == 0.5
    bad = subprocess.run([sys.executable, "-m", "livegen", "eval", str(model), "--rhythm-temperature", "3"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--rhythm-temperature" in bad.stderr
