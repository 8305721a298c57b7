"""The key prior: the key of the last notes, and samples leaning to it (livegen.model.key_prior).

The key is read like livegen eval's in-key metric reads it (Krumhansl-Kessler, duration-weighted),
so a prior of 1 must give answers wholly in the call's key on every sampling path: the numpy
heads, the torch heads (a GPU's path), and the session memory's blend.
"""

import numpy as np
import pytest

from factories import TINY_CONFIG, sampled_answer as answer, tiny_model
from livegen.model.blend import MemoryStream
from livegen.model.key_prior import KeyTracker, key_log_prior, key_name, key_pitch_classes
from livegen.model.memory import SessionMemory
from livegen.model.sampling import SamplingParams
from livegen.model.stream import NoteStream
from livegen.notes import PITCH
from livegen.train.follow import in_key_share, key_of

F_SHARP_MAJOR = [66, 68, 70, 71, 73, 75, 77, 78]
B_FLAT_MINOR = [70, 72, 73, 75, 77, 78, 81, 82, 81, 78, 77, 75, 73, 72, 70, 65, 70]  # harmonic: A natural


def rows(pitches, duration=0.3, step=0.3):
    return np.array([[p, step, duration, 80.0] for p in pitches], dtype=np.float64)


def tracked(pitches) -> KeyTracker:
    tracker = KeyTracker()
    for p in pitches:
        tracker.push(p, 0.3)
    return tracker


def test_the_tracker_names_the_key_the_eval_measures():
    for pitches, name in ((F_SHARP_MAJOR * 2, "F# major"), (B_FLAT_MINOR, "Bb minor"), ([60, 64, 67, 72, 67, 64, 60], "C major")):
        key = tracked(pitches).key()
        assert key_name(key) == name
        tonic, mode = key_of(rows(pitches))
        assert (key % 12, "minor" if key >= 12 else "major") == (tonic, mode)


def test_the_tracker_forgets_what_left_its_window_and_copies_apart():
    tracker = tracked([60, 62, 64, 65, 67, 69, 71, 72] * 4)
    assert key_name(tracker.key()) == "C major"
    moved = tracker.copy()
    for p in F_SHARP_MAJOR * 4:
        moved.push(p, 0.3)
    assert key_name(moved.key()) == "F# major" and key_name(tracker.key()) == "C major"


def test_no_key_before_a_note_or_when_every_pitch_class_weighs_the_same():
    assert KeyTracker().key() is None
    assert tracked(range(60, 72)).key() is None
    tracker = tracked(F_SHARP_MAJOR)
    tracker.clear()
    assert tracker.key() is None


def test_the_prior_scales_out_of_key_pitches_only():
    key = tracked(F_SHARP_MAJOR).key()
    inside = key_pitch_classes(key)
    assert inside == {6, 8, 10, 11, 1, 3, 5}
    half, never, off = key_log_prior(key, 0.5), key_log_prior(key, 1.0), key_log_prior(key, 0.0)
    for pitch in range(128):
        if pitch % 12 in inside:
            assert half[pitch] == never[pitch] == 0.0
        else:
            assert half[pitch] == pytest.approx(np.log(0.5)) and never[pitch] == -np.inf
    assert not off.any()
    with pytest.raises(ValueError, match="key prior"):
        key_log_prior(key, 1.5)
    with pytest.raises(ValueError, match="key_prior"):
        SamplingParams(key_prior=-0.1)


def call_stream(seed=0, torch_heads=False) -> NoteStream:
    stream = NoteStream(tiny_model(0, TINY_CONFIG), seed=seed)
    if torch_heads:
        stream.heads = None  # the torch sampler, as on a GPU
    stream.feed(rows(F_SHARP_MAJOR * 3))
    return stream


@pytest.mark.parametrize("torch_heads", [False, True], ids=["numpy heads", "torch heads"])
def test_a_full_prior_keeps_an_untrained_model_in_the_calls_key(torch_heads):
    free = answer(call_stream(torch_heads=torch_heads), SamplingParams())
    kept = answer(call_stream(torch_heads=torch_heads), SamplingParams(key_prior=1.0))
    key = key_of(rows(F_SHARP_MAJOR * 3))
    assert in_key_share(free, key) < 0.8  # an untrained model wanders everywhere...
    assert in_key_share(kept, key) == 1.0  # ... and the prior holds it in F# major


def test_half_a_prior_leans_without_forbidding():
    free = answer(call_stream(), SamplingParams(), notes=400)
    half = answer(call_stream(), SamplingParams(key_prior=0.5), notes=400)
    key = key_of(rows(F_SHARP_MAJOR * 3))
    assert in_key_share(free, key) + 0.08 < in_key_share(half, key) < 1.0


def test_no_prior_samples_exactly_as_before():
    a = answer(call_stream(seed=3), SamplingParams(), notes=40)
    b = answer(call_stream(seed=3), SamplingParams(key_prior=0.0, temperature=1.0), notes=40)
    np.testing.assert_array_equal(a, b)


def test_a_fork_follows_its_own_notes():
    stream = call_stream()
    fork = stream.fork()
    fork.feed(rows([60, 62, 64, 65, 67, 69, 71, 72] * 5))
    assert key_name(fork.key.key()) == "C major" and key_name(stream.key.key()) == "F# major"
    stream.reset()
    assert stream.key.key() is None


def test_the_memory_blend_leans_to_the_key_too():
    memory = SessionMemory()
    blended = MemoryStream(call_stream(), memory)
    blended.feed(rows(F_SHARP_MAJOR))  # the memory learns the call
    kept = answer(blended.fork(), SamplingParams(memory=0.5, key_prior=1.0))
    assert in_key_share(kept, key_of(rows(F_SHARP_MAJOR * 4))) == 1.0


def test_a_range_wholly_outside_the_key_still_plays():
    stream = call_stream()
    got = answer(stream, SamplingParams(pitch_low=60, pitch_high=60, key_prior=1.0), notes=5)  # C: not in F# major
    assert set(got[:, PITCH]) == {60.0}


def test_an_answers_own_notes_do_not_move_the_key_and_the_players_do():
    stream = call_stream()
    answer(stream, SamplingParams(), notes=60)  # an untrained model's notes, all over the keyboard
    assert key_name(stream.key.key()) == "F# major"
    stream.feed(rows([60, 62, 64, 65, 67, 69, 71, 72] * 4))  # the player moves to C major
    assert key_name(stream.key.key()) == "C major"
    memory_stream = MemoryStream(call_stream(), SessionMemory())
    answer(memory_stream, SamplingParams(memory=0.5), notes=60)
    assert key_name(memory_stream.key.key()) == "F# major"
