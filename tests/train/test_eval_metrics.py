import json

import numpy as np
import pytest

from livegen.notes import Note
from livegen.train import metrics
from livegen.train.commands import run_eval, run_train
from train_fixtures import TINY, eval_args, train_args, write_songs


def line(pitches, step=0.5, duration=0.4):
    return [Note(p, i * step, i * step + duration) for i, p in enumerate(pitches)]


def test_histogram_overlap_identical_is_one_disjoint_is_zero():
    a = metrics.pitch_class_histogram(line([60, 62, 64, 65]))
    b = metrics.pitch_class_histogram(line([61, 63, 66, 68]))
    assert metrics.histogram_overlap(a, a) == pytest.approx(1.0)
    assert metrics.histogram_overlap(a, b) == 0.0
    assert metrics.histogram_overlap([1, 1, 0], [0, 1, 1]) == pytest.approx(0.5)


def test_kde_overlap_and_kl():
    rng = np.random.default_rng(0)
    sample = rng.normal(0, 1, 200)
    overlap, kl = metrics.overlap_and_kl(sample, sample)
    assert overlap == pytest.approx(1.0, abs=1e-3) and kl == pytest.approx(0.0, abs=1e-9)
    overlap, kl = metrics.overlap_and_kl(sample, sample + 100)
    assert overlap == pytest.approx(0.0, abs=1e-6) and kl > 5
    half, _ = metrics.overlap_and_kl(sample, sample + 1.0)
    assert 0.3 < half < 0.8
    constant, _ = metrics.overlap_and_kl(np.zeros(10), np.zeros(10))  # zero spread still works
    assert constant == pytest.approx(1.0, abs=1e-3)


def test_distances_by_hand():
    np.testing.assert_allclose(metrics.intra_set_distances(np.array([[0.0], [3.0], [4.0]])), [3, 4, 1])
    np.testing.assert_allclose(metrics.inter_set_distances(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [0, 1]])), [5, 1])


def test_features_by_hand():
    scale = line([60, 62, 64, 65, 67])  # C D E F G, one every 0.5 s, 0.4 s long
    assert metrics.pitch_class_histogram(scale)[[0, 2, 4, 5, 7]] == pytest.approx([0.2] * 5)
    matrix = metrics.pitch_class_transition_matrix(scale).reshape(12, 12)
    assert matrix[0, 2] == matrix[2, 4] == matrix[4, 5] == matrix[5, 7] == pytest.approx(0.25)
    assert metrics.pitch_range(scale)[0] == 7
    assert metrics.mean_pitch_interval(scale)[0] == pytest.approx(7 / 4)
    assert metrics.notes_per_second(scale)[0] == pytest.approx(5 / 2.4)
    assert metrics.mean_inter_onset_interval(scale)[0] == pytest.approx(0.5)
    assert metrics.polyphony(scale)[0] == 1.0
    triads = [Note(p, t, t + 1.0) for t in (0.0, 1.0) for p in (60, 64, 67)]
    assert metrics.polyphony(triads)[0] == 3.0
    assert metrics.mean_inter_onset_interval(triads)[0] == pytest.approx(1.0)  # a chord is one onset
    lengths = metrics.note_length_histogram(line([60, 60], duration=0.4))
    assert lengths.sum() == pytest.approx(1.0) and lengths.max() == 1.0
    assert metrics.note_length_transition_matrix(scale).sum() == pytest.approx(1.0)


def test_compare_sets_identical_sets_and_collapsed_rhythm():
    rng = np.random.default_rng(1)
    real = [line(rng.integers(55, 75, 20).tolist(), step=float(s)) for s in rng.uniform(0.2, 0.6, 8)]
    same = metrics.compare_sets(real, real)
    assert set(same) == set(metrics.FEATURES)
    collapsed = [line(rng.integers(55, 75, 20).tolist(), step=0.3) for _ in range(8)]
    rhythm = metrics.rhythm_summary(collapsed)
    assert rhythm["ioi_std"] == pytest.approx(0.0, abs=1e-9) and rhythm["ioi_cv_per_piece"] == pytest.approx(0.0, abs=1e-9)
    assert metrics.rhythm_summary(real)["ioi_std"] > 0.05


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    songs = write_songs(root / "songs", count=10)
    common = ["--data", songs, "--cache", root / "cache", "--test-fraction", "0.2", *TINY]
    run_train(train_args(*common, "--out", root / "lstm", "--epochs", "1"))
    run_train(train_args(*common, "--out", root / "seed", "--arch", "seed", "--epochs", "1", "--split-from", root / "lstm"))
    return root


def test_eval_json_schema_on_recorded_test_split(trained, capsys):
    root = trained
    code = run_eval(eval_args(root / "lstm", root / "seed", "markov", "--json", "--cache", root / "cache",
                              "--workers", "0", "--quiet", "--primer-notes", "26", "--continuation-notes", "20",
                              "--output", root / "report.json"))
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((root / "report.json").read_text())
    assert report["data"]["split"] == "test" and report["data"]["pieces"] == 2
    assert report["markov"]["fitted_on"].startswith("train split")
    models = report["models"]
    assert list(models) == [str(root / "lstm"), str(root / "seed"), "markov"]
    lstm, seed, markov = models.values()
    assert (lstm["arch"], seed["arch"], markov["arch"]) == ("note-lstm", "seed-lstm", "markov")
    for entry in models.values():
        assert entry["notes_scored"] > 0 and entry["pitch_nll"] > 0 and 0 <= entry["pitch_top1"] <= entry["pitch_top5"] <= 1
        continuation = entry["continuation"]
        assert continuation["pieces"] == 2 and set(continuation["features"]) == set(metrics.FEATURES)
        for values in continuation["features"].values():
            assert 0 <= values["overlap"] <= 1 and values["kl"] >= 0
        assert set(continuation["invalid"]) >= {"total", "nonpositive_duration", "pitch_out_of_range"}
    assert lstm["continuation"]["invalid"]["total"] == 0 and markov["continuation"]["invalid"]["total"] == 0
    assert lstm["pitch_nll_given_step"] is not None and seed.get("pitch_nll_given_step") is None
    assert seed["step_nll"] is None and lstm["step_nll"] > 0 and markov["velocity_nll"] > 0
    # the marginal over steps is never below P(pitch | true step) on average by much; both are finite
    assert np.isfinite(lstm["pitch_nll"]) and np.isfinite(lstm["pitch_nll_given_step"])


def test_eval_on_a_folder_skips_and_counts_bad_files(trained, tmp_path, capsys):
    held_out = write_songs(tmp_path / "held", count=3)  # plus corrupt.mid and empty.mid
    code = run_eval(eval_args(trained / "lstm", "markov", "--data", held_out, "--markov-data", trained / "songs",
                              "--workers", "0", "--quiet", "--no-cache", "--continuation-notes", "16",
                              "--primer-notes", "26"))
    assert code == 0
    text = capsys.readouterr().out
    assert "pitch NLL" in text and "3 pieces, 2 files skipped" in text
