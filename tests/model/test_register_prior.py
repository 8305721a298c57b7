"""The register prior: the span of the last notes, and samples kept near it
(livegen.model.register_prior).

An untrained model wanders over the whole keyboard, so a prior of 1 must keep its answers inside
the span the player played on every sampling path (the numpy heads, the torch heads of a GPU, the
session memory's blend), and a partial prior must pull them in without forbidding anything.
"""

import numpy as np
import pytest

from factories import TINY_LINEAR_CONFIG, sampled_answer as answer, tiny_model
from livegen.model.blend import MemoryStream
from livegen.model.memory import SessionMemory
from livegen.model.register_prior import OCTAVE, RegisterTracker, register_log_prior
from livegen.model.sampling import SamplingParams
from livegen.model.stream import NoteStream
from livegen.notes import PITCH

HIGH_CALL = [84, 86, 88, 89, 91, 89, 88, 86]  # C6..G6
LOW_CALL = [36, 38, 40, 41, 43, 41, 40, 38]  # C2..G2


def rows(pitches, duration=0.3, step=0.3):
    return np.array([[p, step, duration, 80.0] for p in pitches], dtype=np.float64)


def call_stream(call=HIGH_CALL, seed=0, torch_heads=False) -> NoteStream:
    stream = NoteStream(tiny_model(0, TINY_LINEAR_CONFIG), seed=seed)
    assert stream.heads is not None  # the numpy heads unless told otherwise
    if torch_heads:
        stream.heads = None  # the torch sampler, as on a GPU
    stream.feed(rows(call * 3))
    return stream


def inside(out: np.ndarray, call) -> float:
    pitches = out[:, PITCH]
    return float(np.mean((pitches >= min(call)) & (pitches <= max(call))))


def test_the_tracker_keeps_the_span_of_its_window_and_copies_apart():
    tracker = RegisterTracker(window=4)
    assert tracker.span() is None
    for pitch in (60, 72, 65, 64):
        tracker.push(pitch)
    assert tracker.span() == (60, 72)
    moved = tracker.copy()
    for pitch in (40, 41, 42, 43):
        moved.push(pitch)
    assert moved.span() == (40, 43) and tracker.span() == (60, 72)
    tracker.push(float("nan"))  # no pitch: nothing changes
    assert tracker.span() == (60, 72)
    tracker.clear()
    assert tracker.span() is None
    with pytest.raises(ValueError, match="window"):
        RegisterTracker(window=0)


def test_the_prior_costs_one_factor_per_octave_beyond_the_span():
    half = register_log_prior((60, 72), 0.5)
    assert not half[60:73].any()
    assert half[84] == pytest.approx(np.log(0.5)) and half[48] == pytest.approx(np.log(0.5))
    assert half[96] == pytest.approx(2 * np.log(0.5)) and half[73] == pytest.approx(np.log(0.5) / OCTAVE)
    never = register_log_prior((60, 72), 1.0)
    assert np.all(never[60:73] == 0.0) and np.all(np.isneginf(never[:60])) and np.all(np.isneginf(never[73:]))
    assert not register_log_prior((60, 72), 0.0).any()
    with pytest.raises(ValueError, match="register prior"):
        register_log_prior((60, 72), 1.5)
    with pytest.raises(ValueError, match="register_prior"):
        SamplingParams(register_prior=-0.1)


@pytest.mark.parametrize("torch_heads", [False, True], ids=["numpy heads", "torch heads"])
@pytest.mark.parametrize("call", [HIGH_CALL, LOW_CALL], ids=["high call", "low call"])
def test_a_full_prior_keeps_an_untrained_model_in_the_players_span(call, torch_heads):
    free = answer(call_stream(call, torch_heads=torch_heads), SamplingParams())
    kept = answer(call_stream(call, torch_heads=torch_heads), SamplingParams(register_prior=1.0))
    assert inside(free, call) < 0.5  # an untrained model wanders everywhere...
    assert inside(kept, call) == 1.0  # ... and the prior holds it where the player played


def test_half_a_prior_pulls_in_without_forbidding():
    free = answer(call_stream(), SamplingParams(), notes=400)
    half = answer(call_stream(), SamplingParams(register_prior=0.5), notes=400)
    spread = lambda out: float(np.mean(np.abs(out[:, PITCH] - np.mean(HIGH_CALL))))  # noqa: E731
    assert spread(half) < spread(free) - 3.0
    assert inside(half, HIGH_CALL) < 1.0


def test_no_prior_samples_exactly_as_before():
    a = answer(call_stream(seed=3), SamplingParams(), notes=40)
    b = answer(call_stream(seed=3), SamplingParams(register_prior=0.0), notes=40)
    np.testing.assert_array_equal(a, b)


def test_the_memory_blend_keeps_to_the_span_too():
    blended = MemoryStream(call_stream(), SessionMemory())
    blended.feed(rows(HIGH_CALL))  # the memory learns the call
    kept = answer(blended.fork(), SamplingParams(memory=0.5, register_prior=1.0))
    assert inside(kept, HIGH_CALL) == 1.0


def test_a_pitch_range_wholly_outside_the_span_still_plays():
    got = answer(call_stream(), SamplingParams(pitch_low=40, pitch_high=41, register_prior=1.0), notes=5)
    assert set(got[:, PITCH]) <= {40.0, 41.0}


def test_an_answers_own_notes_do_not_move_the_span_and_the_players_do():
    stream = call_stream()
    answer(stream, SamplingParams(), notes=60)  # an untrained model's notes, all over the keyboard
    assert stream.register.span() == (min(HIGH_CALL), max(HIGH_CALL))
    stream.feed(rows(LOW_CALL * 4))  # the player moves down
    assert stream.register.span() == (min(LOW_CALL), max(LOW_CALL))
    fork = stream.fork()
    fork.feed(rows(HIGH_CALL * 4))
    assert fork.register.span() == (min(HIGH_CALL), max(HIGH_CALL)) and stream.register.span() == (36, 43)
    stream.reset()
    assert stream.register.span() is None
