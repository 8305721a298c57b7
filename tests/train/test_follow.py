"""Does the answer follow the player?  The follow metrics, and the shipped model on synthetic calls."""

from pathlib import Path

import numpy as np
import pytest
import torch

from livegen.model.checkpoint import load_model
from livegen.train.data import Piece
from livegen.train.evaluate import EvalSettings, LSTMPredictor, evaluate
from livegen.train.follow import FollowSettings, follow, in_key_share, key_of, median_ioi

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "default"
F_SHARP_MAJOR = [66, 68, 70, 71, 73, 75, 77, 78]


def scale_call(tonic_scale, seconds_per_note: float, octave_shift: int = 0, repeats: int = 3) -> np.ndarray:
    """Up and down the scale a few times, one note per step, a chord on every bar's downbeat."""
    line = list(tonic_scale) + list(reversed(tonic_scale[:-1]))
    rows = []
    for i, pitch in enumerate(line * repeats):
        rows.append([pitch + octave_shift, seconds_per_note, 0.9 * seconds_per_note, 70 + (i % 4) * 8])
        if i % 8 == 0:
            rows.append([pitch + octave_shift - 12, 0.0, 1.8 * seconds_per_note, 60])
    rows[0][1] = 0.0
    return np.array(rows, dtype=np.float64)


def answers(predictor, call: np.ndarray, count: int = 6, length: int = 24) -> list[np.ndarray]:
    return [predictor.continue_rows(call, length, seed, 1.0, (21, 108)) for seed in range(count)]


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    return LSTMPredictor(load_model(DEFAULT_MODEL, device="cpu"))


def test_key_and_interval_helpers():
    call = scale_call(F_SHARP_MAJOR, 0.25)
    assert key_of(call) == (6, "major")
    assert in_key_share(call, (6, "major")) == 1.0
    assert in_key_share(call, (0, "major")) < 0.5
    assert median_ioi(call) == pytest.approx(0.25)


def test_a_scale_at_60_120_and_180_bpm_gets_answers_at_60_120_and_180(shipped):
    medians = {}
    for bpm in (60, 120, 180):
        iois = [median_ioi(a) for a in answers(shipped, scale_call(F_SHARP_MAJOR, 60.0 / bpm))]
        medians[bpm] = float(np.median([i for i in iois if i]))
    slope = np.polyfit(np.log([60 / b for b in medians]), np.log(list(medians.values())), 1)[0]
    assert slope > 0.9, medians
    assert medians[60] > 2 * medians[180], medians


def test_the_same_call_in_octave_2_and_in_octave_6_is_answered_in_its_register(shipped):
    low_call = scale_call([p - 24 for p in F_SHARP_MAJOR], 0.3)  # F#2..
    high_call = scale_call([p + 24 for p in F_SHARP_MAJOR], 0.3)  # F#6..
    low = np.mean([a[:, 0].mean() for a in answers(shipped, low_call)])
    high = np.mean([a[:, 0].mean() for a in answers(shipped, high_call)])
    assert abs(low - low_call[:, 0].mean()) < 8 and abs(high - high_call[:, 0].mean()) < 8, (low, high)
    assert high - low > 36


def test_a_call_in_f_sharp_major_is_answered_in_f_sharp_major(shipped):
    share = np.mean([in_key_share(a, (6, "major")) for a in answers(shipped, scale_call(F_SHARP_MAJOR, 0.3), count=8)])
    assert share >= 0.85


def test_the_follow_section_of_the_eval_report(shipped):
    pieces = []
    for k in range(3):
        call = scale_call([p + k for p in F_SHARP_MAJOR], 0.2 + 0.1 * k)
        pieces.append(Piece(f"piece{k}", np.concatenate([call, call[:30]]).astype(np.float32), True))
    settings = EvalSettings(primer_notes=24, continuation_notes=32, follow=FollowSettings(max_pieces=3))
    report = evaluate({"default": shipped}, pieces, settings)
    section = report["models"]["default"]["follow"]
    expected = {"pieces", "tempo_slope", "tempo_error", "tempo_error_real", "register_distance",
                "register_distance_real", "register_ratio", "register_slope", "in_key", "in_key_real", "in_key_gap",
                "dynamics_slope", "chord_share", "chord_share_real", "settings"}
    assert set(section) == expected
    assert section["pieces"] == 3
    assert all(isinstance(section[k], float) for k in expected - {"pieces", "settings"})
    assert section["settings"]["tempo_factors"] == [0.6, 1.0, 1.6]
    assert section["tempo_slope"] > 0.9
    no_follow = evaluate({"default": shipped}, pieces, EvalSettings(primer_notes=24, follow=None))
    assert "follow" not in no_follow["models"]["default"]


B_FLAT_MINOR = [70, 72, 73, 75, 77, 78, 81, 82]  # harmonic minor: A natural


def test_the_key_prior_keeps_answers_nearer_the_calls_key(shipped):
    """The eval's continuations lean to the key as `livegen run` does (``--key-prior``)."""
    call = scale_call(B_FLAT_MINOR, 0.3)
    key = key_of(call)
    assert key == (10, "minor")
    shares = {}
    for strength in (0.0, 0.5, 1.0):
        shipped.key_prior = strength
        try:
            shares[strength] = np.mean([in_key_share(a, key) for a in answers(shipped, call, count=8)])
        finally:
            shipped.key_prior = 0.0
    assert shares[1.0] == 1.0 and shares[0.5] >= shares[0.0], shares


def test_eval_takes_the_key_prior_from_the_command_line(tmp_path):
    import json
    import subprocess
    import sys

    from factories import tiny_model_dir
    from livegen.notes import Note, Track, write_midi

    model = tiny_model_dir(tmp_path / "model")
    for k in range(2):
        notes = [Note(p, i * 0.25, i * 0.25 + 0.2, 80) for i, p in enumerate((F_SHARP_MAJOR + F_SHARP_MAJOR[::-1]) * 4)]
        write_midi(tmp_path / "data" / f"piece{k}.mid", [Track("m", notes)])
    reports = {}
    for strength in ("0", "1"):
        result = subprocess.run([sys.executable, "-m", "livegen", "eval", str(model), "--data", str(tmp_path / "data"),
                                 "--key-prior", strength, "--json", "--quiet", "--workers", "0", "--no-cache",
                                 "--continuation-notes", "16"], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        reports[strength] = json.loads(result.stdout)
    assert reports["1"]["settings"]["key_prior"] == 1.0
    follow_in_key = {s: r["models"][str(model)]["follow"]["in_key"] for s, r in reports.items()}
    assert follow_in_key["1"] == 1.0 > follow_in_key["0"], follow_in_key  # an untrained model, held in key
    bad = subprocess.run([sys.executable, "-m", "livegen", "eval", str(model), "--key-prior", "2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--key-prior" in bad.stderr


def test_the_register_prior_keeps_answers_in_the_span_of_the_call(shipped):
    """The eval's continuations stay near the call's register as `livegen run`'s do (``--register-prior``)."""
    call = scale_call([p + 12 for p in F_SHARP_MAJOR], 0.3)  # F#5..F#6, with F#4 under every downbeat
    low, high = call[:, 0].min(), call[:, 0].max()
    outside = {}
    for strength in (0.0, 1.0):
        shipped.register_prior = strength
        try:
            pitches = np.concatenate([a[:, 0] for a in answers(shipped, call, count=8)])
        finally:
            shipped.register_prior = 0.0
        outside[strength] = float(np.mean((pitches < low) | (pitches > high)))
    assert outside[1.0] == 0.0 and outside[0.0] > 0.0, outside


def test_eval_takes_the_register_prior_from_the_command_line(tmp_path):
    import json
    import subprocess
    import sys

    from factories import tiny_model_dir
    from livegen.notes import Note, Track, write_midi

    model = tiny_model_dir(tmp_path / "model")
    for k in range(2):
        line = [p + 12 for p in F_SHARP_MAJOR + F_SHARP_MAJOR[::-1]] * 4
        notes = [Note(p, i * 0.25, i * 0.25 + 0.2, 80) for i, p in enumerate(line)]
        write_midi(tmp_path / "data" / f"piece{k}.mid", [Track("m", notes)])
    reports = {}
    for strength in ("0", "1"):
        result = subprocess.run([sys.executable, "-m", "livegen", "eval", str(model), "--data", str(tmp_path / "data"),
                                 "--register-prior", strength, "--key-prior", "0", "--json", "--quiet", "--workers", "0",
                                 "--no-cache", "--continuation-notes", "16"], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        reports[strength] = json.loads(result.stdout)
    assert reports["1"]["settings"]["register_prior"] == 1.0 and reports["0"]["settings"]["register_prior"] == 0.0
    distance = {s: r["models"][str(model)]["follow"]["register_distance"] for s, r in reports.items()}
    assert distance["1"] < distance["0"], distance  # an untrained model, held near the call's register
    bad = subprocess.run([sys.executable, "-m", "livegen", "eval", str(model), "--register-prior", "2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--register-prior" in bad.stderr
