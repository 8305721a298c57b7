import numpy as np
import pytest
from hypothesis import given, strategies as st

from livegen.model.tokens import TokenConfig, Tokenizer
from livegen.notes import DURATION, STEP, VELOCITY

TOKENIZER = Tokenizer(TokenConfig())
CONFIG = TOKENIZER.config


@given(st.floats(min_value=0.0, max_value=CONFIG.step_max, exclude_max=True))
def test_step_round_trip_error_is_within_the_bin_width(seconds):
    bins = TOKENIZER.encode_step(seconds)
    decoded = TOKENIZER.step_values[bins]
    assert abs(decoded - seconds) <= TOKENIZER.bin_width("step", bins)


@given(st.floats(min_value=CONFIG.duration_min, max_value=CONFIG.duration_max, exclude_max=True))
def test_duration_round_trip_error_is_within_the_bin_width(seconds):
    bins = TOKENIZER.encode_duration(seconds)
    decoded = TOKENIZER.duration_values[bins]
    assert abs(decoded - seconds) <= TOKENIZER.bin_width("duration", bins)
    assert decoded > 0


@given(st.integers(min_value=1, max_value=127))
def test_velocity_round_trip_error_is_within_the_bin_width(velocity):
    bins = TOKENIZER.encode_velocity(velocity)
    decoded = TOKENIZER.velocity_values[bins]
    assert abs(decoded - velocity) <= TOKENIZER.bin_width("velocity", bins)
    assert 1 <= decoded <= 127


def test_zero_step_is_exact_and_chords_stay_chords():
    notes = np.array([[60, 0.0, 0.5, 80], [64, 0.0, 0.5, 80], [67, 0.003, 0.5, 80], [72, 0.5, 0.5, 80]])
    tokens = TOKENIZER.encode(notes)
    assert list(tokens[:, STEP][:3]) == [0, 0, 0]
    decoded = TOKENIZER.decode(tokens)
    assert list(decoded[:3, STEP]) == [0.0, 0.0, 0.0]
    assert decoded[3, STEP] > 0


def test_relative_error_of_log_bins_is_constant_and_small():
    seconds = np.geomspace(0.02, 3.0, 500)
    decoded = TOKENIZER.decode(TOKENIZER.encode(np.column_stack([np.full(500, 60), seconds, seconds, np.full(500, 64)])))
    for column in (STEP, DURATION):
        relative = np.abs(decoded[:, column] - seconds) / seconds
        assert relative.max() < 0.08


def test_out_of_range_values_clamp_to_the_edge_bins():
    tokens = TOKENIZER.encode(np.array([[200, 99.0, 0.0001, 500], [-5, -1.0, 99.0, 0]]))
    assert tokens[0].tolist() == [127, CONFIG.step_bins - 1, 0, CONFIG.velocity_bins - 1]
    assert tokens[1].tolist() == [0, 0, CONFIG.duration_bins - 1, 0]
    assert TOKENIZER.decode(tokens)[:, VELOCITY].min() >= 1


@given(st.lists(st.tuples(
    st.floats(-10, 200), st.floats(0, 10), st.floats(0, 20), st.floats(-5, 200)) | st.tuples(
    st.just(60.0), st.sampled_from([0.0, 0.01, 4.0, float("inf"), float("nan")]),
    st.sampled_from([0.01, 8.0, 1e9, float("nan")]), st.sampled_from([1.0, 127.0, 128.0])), min_size=1, max_size=5))
def test_encode_one_gives_what_encode_gives(rows):
    for row in rows:
        assert TOKENIZER.encode_one(np.array(row)) == tuple(TOKENIZER.encode(np.array([row]))[0])


@pytest.mark.parametrize("time", ["relative", "seconds"])
def test_decode_one_equals_decode(time):
    """The sampler decodes one note with Python scalars; it must give what decode gives."""
    tokenizer = Tokenizer(TokenConfig(time=time))
    tracker = tokenizer.tracker()
    for step in (0.21, 0.5, 0.35, 1.2):
        tracker.push(step)
    rng = np.random.default_rng(0)
    sizes = tokenizer.sizes
    for _ in range(200):
        tokens = [int(rng.integers(n)) for n in sizes]
        tokens[1] = 0 if rng.random() < 0.2 else tokens[1]
        expected = tokenizer.decode(np.array([tokens]), tracker)[0]
        assert np.array_equal(tokenizer.decode_one(tokens, tracker), expected)
    assert np.array_equal(tokenizer.decode_one([60, 3, 4, 5]), tokenizer.decode(np.array([[60, 3, 4, 5]]))[0])
