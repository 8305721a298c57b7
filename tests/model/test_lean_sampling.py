"""The numpy sampler (livegen.model.lean_heads) against the torch one it stands in for.

Logits must match NextNote's heads to float32 rounding; draws cannot match (inverse CDF on one
uniform per field, not torch.multinomial), so the distributions are compared by histogram.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from factories import TINY_CONFIG, melody, tiny_model
from livegen.model.checkpoint import load_model
from livegen.model.lean_heads import LeanHeads, numpy_pitch_mask
from livegen.model.sampling import SamplingParams, pitch_mask, sample_next
from livegen.model.stream import NoteStream, continue_notes
from livegen.notes import notes_to_array

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "default"
LINEAR = dataclasses.replace(TINY_CONFIG, layers=1, head="linear", input_projection=False)


def linear_model(seed: int = 0):
    return tiny_model(seed, LINEAR)


def interval_model(seed: int = 0):
    """The shipped layout since 0.4: linear heads and an interval head (a reach short enough that
    the tiny melody's moves and farther ones both occur)."""
    return tiny_model(seed, dataclasses.replace(LINEAR, interval_range=3))


MODELS = {"tiny linear": linear_model, "tiny interval": interval_model}


@pytest.fixture(scope="module")
def shipped():
    return load_model(DEFAULT_MODEL, device="cpu")


def primed(model, notes: int = 12) -> NoteStream:
    stream = NoteStream(model, seed=0)
    stream.feed(notes_to_array(melody(notes)))
    return stream


@pytest.mark.parametrize("which", ["tiny linear", "tiny interval", "shipped default"])
def test_lean_logits_equal_the_torch_heads(which, shipped):
    model = MODELS[which]() if which in MODELS else shipped
    stream = NoteStream(model, seed=0)
    rows = notes_to_array(melody(10))
    choices = torch.Generator().manual_seed(1)
    n_p, n_s, n_d, _ = model.sizes
    for i, fed in enumerate([rows[:3], *rows[3:]]):  # h from torch's batched pass, then from LeanStep
        stream.feed(fed)
        lean, torch_next = stream.heads.logits(stream.next.h, stream.next.previous), stream.next
        step, pitch, duration = (int(torch.randint(0, n, (1,), generator=choices)) for n in (n_s, n_p, n_d))
        with torch.no_grad():
            expected = [torch_next.step_logits(), torch_next.pitch_logits(torch.tensor([step])),
                        torch_next.duration_logits(torch.tensor([pitch])),
                        torch_next.velocity_logits(torch.tensor([duration]))]
        got = [lean.step(), lean.pitch(step), lean.duration(step, pitch), lean.velocity(step, pitch, duration)]
        for name, a, b in zip(("step", "pitch", "duration", "velocity"), got, expected):
            torch.testing.assert_close(torch.from_numpy(a), b[0], rtol=1e-4, atol=1e-4, msg=f"{name} at note {i}")


def nucleus(logits: torch.Tensor, params: SamplingParams) -> np.ndarray:
    """The exact distribution ``sample_logits`` draws from: softmax at the temperature, then the
    classes kept while the mass before them (in descending order) is below top_p, renormalised."""
    top_p = params.top_p
    probs, order = torch.softmax(logits.double() / params.temperature, -1).sort(descending=True)
    keep = (probs.cumsum(-1) - probs) < top_p
    out = torch.zeros_like(probs)
    out[order[keep]] = probs[keep]
    return (out / out.sum()).numpy()


@torch.inference_mode()
def exact_step_and_pitch(stream: NoteStream, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """P(step) and the pitch marginal sum_s P(s) P(pitch | s) of the torch sampler, from NextNote."""
    step = nucleus(stream.next.step_logits()[0], params)
    mask = pitch_mask(params.pitch_low, params.pitch_high)
    pitch = sum(p * nucleus(stream.next.pitch_logits(torch.tensor([s]))[0] + mask, params)
                for s, p in enumerate(step) if p > 0)
    return step, pitch


def distance_to(exact: np.ndarray, draws: np.ndarray) -> tuple[float, float]:
    """Total variation between ``draws``' histogram and ``exact``, and the bound it should stay
    under: 1.5 times the distance sampling noise alone gives on average (sum_i E|p̂_i - p_i| / 2,
    with E|p̂ - p| ~ sqrt(2 p (1 - p) / (pi n))), plus 0.01."""
    n = len(draws)
    observed = np.bincount(draws, minlength=len(exact)) / n
    noise = 0.5 * float(np.sqrt(2 * exact * (1 - exact) / (np.pi * n)).sum())
    return 0.5 * float(np.abs(observed - exact).sum()), 1.5 * noise + 0.01


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (1.0, 0.9), (0.6, 0.95)])
@pytest.mark.parametrize("which", ["tiny linear", "tiny interval", "shipped default"])
def test_lean_draws_follow_the_torch_sampler_distribution(which, temperature, top_p, shipped):
    """The lean sampler's step and pitch histograms (20000 draws) sit as close to the torch
    sampler's exact distribution as sampling noise allows, and so do 3000 of torch's own draws."""
    stream = primed(MODELS[which]() if which in MODELS else shipped)
    params = SamplingParams(temperature=temperature, top_p=top_p)
    generator = torch.Generator().manual_seed(1)
    mask = numpy_pitch_mask(params.pitch_low, params.pitch_high)
    lean = np.array([stream.heads.sample(stream.next.h, params, generator, mask, previous=stream.next.previous)
                     for _ in range(20000)])
    torch_masks = pitch_mask(params.pitch_low, params.pitch_high)
    reference = torch.cat([sample_next(stream.next, params, generator, torch_masks) for _ in range(3000)]).numpy()
    step, pitch = exact_step_and_pitch(stream, params)
    for name, column, exact in (("step", 1, step), ("pitch", 0, pitch)):
        for sampler, draws in (("lean", lean), ("torch", reference)):
            distance, bound = distance_to(exact, draws[:, column])
            assert distance < bound, f"{sampler} {name}: total variation {distance:.3f} >= {bound:.3f}"
    # nothing the nucleus cuts is ever drawn (top_p 0.9 does cut some step bins)
    assert set(lean[:, 1].tolist()) <= set(np.flatnonzero(step).tolist())
    assert top_p == 1.0 or np.count_nonzero(step) < len(step)


def test_temperature_zero_is_the_torch_argmax(shipped):
    for model in (linear_model(), interval_model(), chordy_model(), shipped):  # chordy: the chord rule at step 0
        stream = NoteStream(model, seed=0)
        for low, high in ((21, 108), (55, 60)):
            params = SamplingParams(temperature=0.0, pitch_low=low, pitch_high=high)
            for row in notes_to_array(melody(8)):
                stream.feed(row)
                chord = [int(row[0]), low]
                lean = stream.heads.sample(stream.next.h, params, None, numpy_pitch_mask(low, high), chord,
                                           previous=stream.next.previous)
                expected = sample_next(stream.next, params, None, pitch_mask(low, high), chord)[0].tolist()
                assert list(lean) == expected


def chordy_model():
    """A linear-head model that mostly answers with a zero step (a chord note)."""
    model = linear_model()
    with torch.no_grad():
        model.step_head[0].bias[0] += 8.0
    return model


def test_pitch_range_and_chord_rule_hold():
    stream = primed(chordy_model())
    params = SamplingParams(temperature=1.5, pitch_low=48, pitch_high=53)
    chord = [48, 50, 52]
    rows = [stream.sample(params, chord=chord) for _ in range(300)]
    assert all(48 <= row[0] <= 53 for row in rows)
    chord_notes = [int(row[0]) for row in rows if row[1] == 0]
    assert len(chord_notes) > 100 and not set(chord_notes) & set(chord)
    later_notes = [int(row[0]) for row in rows if row[1] > 0]  # a later onset may repeat them
    assert len(later_notes) > 20 and set(later_notes) & set(chord)
    # a chord that fills the range bans nothing: the range's pitches still sound
    full = SamplingParams(pitch_low=48, pitch_high=50)
    pitches = {int(stream.sample(full, chord=[48, 49, 50])[0]) for _ in range(100)}
    assert pitches and pitches <= {48, 49, 50}


def test_the_same_seed_gives_the_same_notes():
    model = linear_model()
    assert NoteStream(model).heads is not None
    a = continue_notes(model, melody(8), 50, seed=11)
    b = continue_notes(model, melody(8), 50, seed=11)
    c = continue_notes(model, melody(8), 50, seed=12)
    assert a == b and a != c


def test_only_cpu_eval_linear_heads_take_the_lean_path(monkeypatch):
    calls = []
    original = LeanHeads.sample
    monkeypatch.setattr(LeanHeads, "sample", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    mlp = primed(tiny_model())  # TINY_CONFIG has mlp heads
    assert mlp.heads is None
    rows = [mlp.sample(SamplingParams(pitch_low=40, pitch_high=70)) for _ in range(20)]
    assert all(40 <= row[0] <= 70 for row in rows) and not calls
    assert NoteStream(linear_model().train()).heads is None  # training: torch's step and heads
    linear = primed(linear_model())
    linear.sample(SamplingParams())
    assert calls == [1]


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.6, 0.95)])
def test_a_harmonize_voice_follows_the_pitch_distribution_at_its_step_within_its_window(shipped, temperature, top_p):
    """``sample_pitch_at`` (harmonize's voices) reads the pitch head alone and draws among the
    window's pitches that are not taken: P(pitch | state, step), masked, as the torch heads give it."""
    from livegen.model.voicing import sample_pitch_at

    stream = primed(shipped)
    params = SamplingParams(temperature=temperature, top_p=top_p, pitch_low=48, pitch_high=66)
    taken = [60, 55]
    step_bin = int(stream.tokenizer.encode_one((taken[0], 0.0, 0.5, 64.0), stream.tempo.unit)[1])
    previous = stream.next.previous
    torch.testing.assert_close(torch.from_numpy(stream.heads.pitch_logits(stream.next.h, step_bin, previous)),
                               torch.from_numpy(stream.heads.logits(stream.next.h, previous).pitch(step_bin)))
    with torch.inference_mode():
        mask = pitch_mask(params.pitch_low, params.pitch_high)
        mask[taken] = float("-inf")
        exact = nucleus(stream.next.pitch_logits(torch.tensor([step_bin]))[0] + mask, params)
    draws = np.array([sample_pitch_at(stream, params, 0.0, taken) for _ in range(20000)])
    assert set(draws.tolist()) <= set(range(48, 67)) - set(taken)
    distance, bound = distance_to(exact, draws)
    assert distance < bound, f"total variation {distance:.3f} >= {bound:.3f}"
    assert sample_pitch_at(stream, dataclasses.replace(params, pitch_low=60, pitch_high=60), 0.0, taken) is None


def test_a_prepared_feed_and_a_harmonize_voice_make_no_torch_call(shipped, monkeypatch):
    """After ``prepare_next`` (harmonize's idle time between chords) the melody's feed and a
    voice's draw run in numpy only: on a CPU gone cold each torch call costs tens of microseconds."""
    from livegen.model.voicing import sample_pitch_at

    stream = primed(shipped)
    stream.prepare_next()
    expected = NoteStream(shipped, seed=0)
    expected.feed(notes_to_array(melody(12)))

    def forbidden(*args, **kwargs):
        raise AssertionError("a torch call on the lean path")

    with monkeypatch.context() as patch:
        for name in ("rand", "from_numpy", "tensor", "as_tensor", "zeros", "empty"):
            patch.setattr(torch, name, forbidden)
        for name in ("detach", "numpy", "view"):
            patch.setattr(torch.Tensor, name, forbidden)
        stream.feed(np.array([72.0, 0.4, 0.3, 80.0]))
        pitch = sample_pitch_at(stream, SamplingParams(pitch_low=48, pitch_high=71), 0.0, [72])
    assert 48 <= pitch <= 71
    expected.feed(np.array([72.0, 0.4, 0.3, 80.0]))  # the same state as the torch path gives
    torch.testing.assert_close(stream.state[0], expected.state[0], rtol=1e-5, atol=1e-5)
    stream.feed(notes_to_array(melody(3)))  # a batched (torch) feed after lean ones, then lean again
    stream.feed(np.array([60.0, 0.4, 0.3, 80.0]))
    assert stream.state[0].shape == (shipped.config.layers, 1, shipped.config.hidden)


def test_uniforms_drawn_ahead_follow_the_seed_and_stay_with_their_stream():
    stream, again = NoteStream(linear_model(), seed=5), NoteStream(linear_model(), seed=5)
    first = np.concatenate([stream.take_uniforms(4) for _ in range(40)])  # more than one block
    assert np.array_equal(first, np.concatenate([again.take_uniforms(4) for _ in range(40)]))
    assert len(set(first.tolist())) == len(first) and ((0 <= first) & (first < 1)).all()
    left = stream._ahead[stream._ahead_at:].copy()
    fork = stream.fork()  # its own buffer: never the parent's uniforms again
    assert len(fork._ahead) == 0
    fork.take_uniform()
    assert np.array_equal(stream._ahead[stream._ahead_at:], left) and not set(fork._ahead.tolist()) & set(left.tolist())
    stream.prepare_next()
    stream.generator = torch.Generator().manual_seed(9)  # a new generator: nothing drawn from the old one is used
    assert np.array_equal(stream.take_uniforms(2), torch.rand(64, generator=torch.Generator().manual_seed(9),
                                                              dtype=torch.float64).numpy()[:2])
