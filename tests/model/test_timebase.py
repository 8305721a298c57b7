"""The running tempo and relative time: what the model counts steps and durations in."""

import numpy as np
import pytest
import torch

from livegen.model.lstm import NoteLSTM, NoteLSTMConfig
from livegen.model.stream import NoteStream
from livegen.model.timebase import TempoTracker, causal_units, order_chords, snap_to_beat
from livegen.model.tokens import TokenConfig, Tokenizer


def scale(beats: list[float], seconds_per_beat: float, chord_every: int = 0) -> np.ndarray:
    """A melody with these step lengths (in beats), optionally a 3-note chord every few notes."""
    rows = []
    for i, b in enumerate(beats):
        rows.append([60 + i % 12, b * seconds_per_beat, 0.9 * b * seconds_per_beat, 80])
        if chord_every and i % chord_every == 0:
            rows += [[55 + i % 12, 0.0, b * seconds_per_beat, 70], [52 + i % 12, 0.0, b * seconds_per_beat, 70]]
    return np.array(rows, dtype=np.float64)


def test_unit_is_the_median_interval_and_ignores_chords():
    tracker = TempoTracker()
    assert tracker.unit == pytest.approx(0.3)  # nothing known yet
    for step in (0.0, 0.5, 0.0, 0.004, 0.5, 0.5):  # chord notes and a 4 ms roll add no interval
        tracker.push(step)
    assert tracker.recent == (0.5, 0.5, 0.5)
    assert tracker.unit == pytest.approx(0.5)


def test_four_note_phrase_already_gives_its_tempo():
    for seconds in (0.2, 0.5, 1.0):
        tracker = TempoTracker()
        tracker.extend(scale([1, 1, 1, 1], seconds)[:, 1])
        assert tracker.unit == pytest.approx(seconds)


def test_rubato_and_a_fermata_barely_move_the_unit():
    rng = np.random.default_rng(1)
    steps = 0.4 * np.exp(rng.normal(0, 0.15, 24))  # +-15 % rubato
    steps[10] = 2.5  # a fermata
    tracker = TempoTracker()
    tracker.extend(steps)
    assert 0.34 < tracker.unit < 0.47


def test_clock_beat_snaps_the_unit_to_a_power_of_two_of_the_beat():
    tracker = TempoTracker()
    tracker.extend([0.27, 0.24, 0.26, 0.23])  # eighths at ~120 BPM, played loosely
    tracker.beat = 0.5
    assert tracker.unit == pytest.approx(0.25)
    tracker.beat = 0.6  # a slower clock: eighths of it
    assert tracker.unit == pytest.approx(0.3)
    assert snap_to_beat(1.1, 0.5) == pytest.approx(1.0)
    empty = TempoTracker()
    empty.beat = 0.5
    assert empty.unit == pytest.approx(0.5)  # no notes yet: the clock's beat


def test_causal_units_equal_a_tracker_fed_note_by_note():
    rng = np.random.default_rng(0)
    steps = np.where(rng.random(200) < 0.3, 0.0, rng.uniform(0.05, 1.5, 200))
    history = [0.4, 0.0, 0.6]
    units = causal_units(steps, window=16, history=history)
    tracker = TempoTracker(window=16)
    tracker.extend(history)
    for step, unit in zip(steps, units):
        assert unit == pytest.approx(tracker.unit)
        tracker.push(step)


def test_relative_tokens_are_the_same_at_every_tempo():
    tokenizer = Tokenizer(TokenConfig.relative_default())
    beats = [1, 1, 0.5, 0.5, 1, 2, 1, 1, 0.5, 0.5, 0.5, 0.5, 1, 1, 2]
    reference = tokenizer.encode(scale(beats, 0.5, chord_every=4))
    for seconds in (0.25, 0.35, 1.0):
        tokens = tokenizer.encode(scale(beats, seconds, chord_every=4))
        # The first notes are read in the default unit; from the second interval on, no difference.
        np.testing.assert_array_equal(tokens[4:], reference[4:])


def test_relative_round_trip_scales_with_the_tempo():
    tokenizer = Tokenizer(TokenConfig.relative_default())
    slow, fast = scale([1] * 8, 0.8), scale([1] * 8, 0.2)
    slow_tracker, fast_tracker = tokenizer.tracker(), tokenizer.tracker()
    slow_tracker.extend(slow[:, 1])
    fast_tracker.extend(fast[:, 1])
    one_unit = np.array([[60, tokenizer.encode_step(1.0, 1.0), 10, 20]])
    assert tokenizer.decode(one_unit, slow_tracker)[0, 1] == pytest.approx(4 * tokenizer.decode(one_unit, fast_tracker)[0, 1])
    # Decoding never changes the tracker it reads.
    assert slow_tracker.recent == tuple(slow[:, 1])


def test_decoded_steps_read_back_as_the_same_bins():
    tokenizer = Tokenizer(TokenConfig.relative_default())
    tracker = tokenizer.tracker()
    tracker.extend([0.03] * 4)  # very fast playing: the smallest bins are below the chord threshold
    unit = tracker.unit
    for step_bin in range(tokenizer.config.step_bins):
        row = tokenizer.decode(np.array([[60, step_bin, 5, 10]]), tracker)[0]
        again = tokenizer.encode_one(row, unit)[1]
        if step_bin == 0:
            assert row[1] == 0 and again == 0
        elif tokenizer.step_values[step_bin] * unit > 0.01:
            assert again == step_bin
        else:  # a bin that would be faster than a chord's spread: still a sounded step, never a chord
            assert row[1] == pytest.approx(0.01) and again > 0


def test_order_chords_sorts_only_within_chords_and_keeps_the_rhythm():
    rows = np.array([[60, 0.0, 1, 80], [64, 0.0, 1, 81], [67, 0.003, 1, 82], [62, 0.5, 1, 83], [50, 0.5, 2, 84], [55, 0, 2, 85]])
    down = order_chords(rows, "descending")
    np.testing.assert_array_equal(down[:, 0], [67, 64, 60, 62, 55, 50])
    np.testing.assert_array_equal(down[:, 1], rows[:, 1])  # steps stay at their positions
    np.testing.assert_array_equal(down[:3, 3], [82, 81, 80])  # velocity and duration travel with their pitch
    np.testing.assert_array_equal(order_chords(down, "ascending")[:, 0], [60, 64, 67, 62, 50, 55])


@pytest.fixture(scope="module")
def relative_model():
    torch.manual_seed(0)
    config = NoteLSTMConfig(hidden=32, layers=2, head="linear", input_projection=False,
                            tokens=TokenConfig.relative_default())
    return NoteLSTM(config).eval()


def test_streaming_equals_batched_in_relative_time(relative_model):
    rows = scale([1, 0.5, 0.5, 1, 1, 2, 0.5, 0.5, 1, 1], 0.37, chord_every=3)
    one_by_one, batched, split = NoteStream(relative_model), NoteStream(relative_model), NoteStream(relative_model)
    for row in rows:
        one_by_one.feed(row)
    batched.feed(rows)
    split.feed(rows[:5])
    for row in rows[5:]:
        split.feed(row)
    assert one_by_one.tempo.unit == pytest.approx(batched.tempo.unit) == pytest.approx(split.tempo.unit)
    for other in (batched, split):
        torch.testing.assert_close(other.state[0], one_by_one.state[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(other.next.h, one_by_one.next.h, atol=1e-5, rtol=1e-5)


def test_a_relative_stream_answers_at_the_players_tempo(relative_model):
    """Same call at three tempos, same seed: the same answer, scaled in time (exactly)."""
    from livegen.model.sampling import SamplingParams

    answers = {}
    for seconds in (0.25, 0.5, 1.0):
        stream = NoteStream(relative_model, seed=3)
        stream.feed(scale([1, 1, 0.5, 0.5, 1, 1, 2, 1], seconds))
        rows = []
        for _ in range(12):
            row = stream.sample(SamplingParams())
            rows.append(row)
            stream.feed(row)
        answers[seconds] = np.array(rows)
    np.testing.assert_array_equal(answers[0.25][:, 0], answers[1.0][:, 0])
    np.testing.assert_allclose(answers[1.0][:, 1:3], 4 * answers[0.25][:, 1:3], rtol=1e-9, atol=0.011)
    np.testing.assert_allclose(answers[0.5][:, 1:3], 2 * answers[0.25][:, 1:3], rtol=1e-9, atol=0.011)


def test_the_stream_snaps_to_a_clock_beat(relative_model):
    stream = NoteStream(relative_model)
    stream.feed(scale([1] * 6, 0.26))
    assert stream.tempo.unit == pytest.approx(0.26)
    stream.set_beat(0.5)
    assert stream.tempo.unit == pytest.approx(0.25)
    fork = stream.fork()
    stream.set_beat(None)
    assert fork.tempo.unit == pytest.approx(0.25) and stream.tempo.unit == pytest.approx(0.26)
