import numpy as np

from livegen.notes import notes_to_array
from livegen.train.augment import NO_AUGMENTATION, AugmentConfig, augment
from train_fixtures import song


def test_augmentation_keeps_notes_valid_and_in_the_piano_range():
    rows = notes_to_array(song(3))
    rng = np.random.default_rng(0)
    shifts, factors = set(), set()
    for _ in range(50):
        out = augment(rows, True, rng, AugmentConfig())
        assert out.shape == rows.shape
        assert (out[:, 1] >= 0).all() and (out[:, 2] > 0).all()
        assert 21 <= out[:, 0].min() and out[:, 0].max() <= 108
        assert (1 <= out[:, 3]).all() and (out[:, 3] <= 127).all()
        shifts.add(int(np.sort(out[:, 0])[0] - np.sort(rows[:, 0])[0]))
        factors.add(round(float(out[:, 1].sum() / rows[:, 1].sum()), 2))
    # Anywhere on the keyboard: the song (pitches 60..~72) can go down ~39 and up ~36 semitones.
    low, high = rows[:, 0].min(), rows[:, 0].max()
    assert len(shifts) > 20 and min(shifts) >= 21 - low and max(shifts) <= 108 - high
    assert min(shifts) < -20 and max(shifts) > 20
    # Tempo x0.5 to x2 (the relative-time model must never see one tempo only).
    assert len(factors) > 10 and min(factors) >= 0.49 and max(factors) <= 2.01
    assert min(factors) < 0.7 and max(factors) > 1.4


def test_transposition_never_leaves_the_piano():
    rows = np.array([[21.0, 0, 0.5, 64], [108.0, 0.5, 0.5, 64]])
    for seed in range(20):
        out = augment(rows, False, np.random.default_rng(seed), AugmentConfig())
        np.testing.assert_array_equal(out[:, 0], rows[:, 0])


def test_only_quantised_sources_get_jitter_and_velocity_changes():
    rows = notes_to_array(song(1))
    performed = augment(rows, False, np.random.default_rng(1), AugmentConfig(transpose=0, tempo=0.0))
    np.testing.assert_array_equal(performed, rows)
    scored = augment(rows, True, np.random.default_rng(1), AugmentConfig(transpose=0, tempo=0.0))
    assert not np.array_equal(scored[:, 3], rows[:, 3])
    assert not np.allclose(scored[:, 1], rows[:, 1])
    np.testing.assert_array_equal(augment(rows, True, np.random.default_rng(1), NO_AUGMENTATION), rows)


def test_jitter_moves_chords_as_a_whole():
    rows = notes_to_array(song(2))
    chord_notes = rows[:, 1] == 0
    for seed in range(10):
        out = augment(rows, True, np.random.default_rng(seed), AugmentConfig(transpose=0, tempo=0.0))
        np.testing.assert_array_equal(out[:, 1] == 0, chord_notes)  # same notes start chords
        np.testing.assert_array_equal(out[:, 0], rows[:, 0])  # order within chords kept
