import dataclasses
import math

import numpy as np
import pytest
import torch

from factories import TINY_CONFIG, melody, tiny_model
from livegen.model.lean import LeanStep
from livegen.model.lstm import NoteLSTMConfig
from livegen.model.sampling import SamplingParams, sample_logits, sample_next
from livegen.model.stream import NoteStream, continue_notes, make_generator
from livegen.notes import notes_to_array


def random_tokens(model, batch, length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    columns = [torch.randint(0, size, (batch, length, 1), generator=generator) for size in model.sizes]
    # model.sizes is (pitch, step, duration, velocity) classes == token column order
    return torch.cat(columns, dim=-1)


VARIANTS = {
    "mlp heads, projection, 2 layers": TINY_CONFIG,
    "linear heads, no projection, 1 layer": dataclasses.replace(TINY_CONFIG, layers=1, head="linear",
                                                                input_projection=False),
    "linear heads, interval head": dataclasses.replace(TINY_CONFIG, layers=1, head="linear", input_projection=False,
                                                       interval_range=12),
    "mlp heads, interval head": dataclasses.replace(TINY_CONFIG, interval_range=5),
}


@pytest.mark.parametrize("config", VARIANTS.values(), ids=VARIANTS.keys())
def test_streaming_step_matches_batched_forward(config):
    model = tiny_model(config=config)
    tokens = random_tokens(model, batch=3, length=12)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    with torch.no_grad():
        batched, _ = model(inputs, targets)
        state = None
        for t in range(inputs.shape[1]):
            next_note, state = model.step(inputs[:, t], state)
            streamed = next_note.logits_given(targets[:, t])
            for name, a, b in zip(batched._fields, batched, streamed):
                torch.testing.assert_close(a[:, t], b, rtol=1e-4, atol=1e-5, msg=f"{name} at {t}")
            # the sampler's field-by-field queries give the same conditionals
            torch.testing.assert_close(next_note.step_logits(), batched.step[:, t], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(next_note.pitch_logits(targets[:, t, 1]), batched.pitch[:, t], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(next_note.duration_logits(targets[:, t, 0]), batched.duration[:, t], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(next_note.velocity_logits(targets[:, t, 2]), batched.velocity[:, t], rtol=1e-4, atol=1e-5)


VARIANTS_3_LAYERS = {**VARIANTS, "linear heads, projection, 3 layers": dataclasses.replace(TINY_CONFIG, layers=3, head="linear")}


@pytest.mark.parametrize("config", VARIANTS_3_LAYERS.values(), ids=VARIANTS_3_LAYERS.keys())
def test_lean_cpu_step_matches_the_torch_step(config):
    model = tiny_model(config=config)
    lean = LeanStep(model)
    tokens = random_tokens(model, batch=1, length=20, seed=3)[0]
    torch_state = lean_state = None
    with torch.no_grad():
        for t, token in enumerate(tokens):
            next_note, torch_state = model.step(token.unsqueeze(0), torch_state)
            h, lean_state = lean(tuple(int(x) for x in token), lean_state)
            torch.testing.assert_close(h, next_note.h, rtol=1e-4, atol=1e-5, msg=f"h at {t}")
            for a, b in zip(torch_state, lean_state):
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"state at {t}")
        # and it continues a state the batched torch path made
        _, batched_state = model.encode(tokens[:5].unsqueeze(0))
        next_note, _ = model.step(tokens[5].unsqueeze(0), batched_state)
        h, _ = lean(tuple(int(x) for x in tokens[5]), batched_state)
        torch.testing.assert_close(h, next_note.h, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", VARIANTS_3_LAYERS.values(), ids=VARIANTS_3_LAYERS.keys())
def test_a_prepared_step_equals_a_plain_one_and_only_for_its_own_state(config):
    """prepare() computes layer 0's W_hh·h ahead (harmonize, between chords): the step from that
    state must be the same, and a step from any other state must not use it."""
    model = tiny_model(config=config)
    plain, prepared = LeanStep(model), LeanStep(model)
    tokens = [tuple(int(x) for x in row) for row in random_tokens(model, batch=1, length=12, seed=5)[0]]
    plain_state = prepared_state = None
    for t, token in enumerate(tokens):
        prepared.prepare(prepared_state)
        h_plain, plain_state = plain(token, plain_state)
        h_prepared, prepared_state = prepared(token, prepared_state)
        torch.testing.assert_close(h_prepared, h_plain, rtol=1e-5, atol=1e-6, msg=f"h at {t}")
        for a, b in zip(plain_state, prepared_state):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=f"state at {t}")
    _, fork_state = plain(tokens[0], None)  # another state (a fork, a speculative answer)
    prepared.prepare(prepared_state)
    h_other, _ = prepared(tokens[1], fork_state)
    h_expected, _ = plain(tokens[1], fork_state)
    torch.testing.assert_close(h_other, h_expected, rtol=1e-5, atol=1e-6)


def test_a_cpu_stream_feeds_single_notes_through_the_lean_step():
    stream = NoteStream(tiny_model())
    assert stream._lean is not None
    assert NoteStream(tiny_model().train())._lean is None  # dropout active: keep torch's step


def test_feeding_a_batch_equals_feeding_one_note_at_a_time():
    model = tiny_model()
    rows = notes_to_array(melody(10))
    whole, single = NoteStream(model), NoteStream(model)
    whole.feed(rows)
    for row in rows:
        single.feed(row)
    torch.testing.assert_close(whole.next.h, single.next.h, rtol=1e-4, atol=1e-5)


def test_fork_does_not_disturb_the_listening_state():
    model = tiny_model()
    stream = NoteStream(model)
    stream.feed(notes_to_array(melody(6)))
    before = stream.next.h.clone()
    fork = stream.fork()
    for _ in range(5):
        fork.feed(fork.sample(SamplingParams(), make_generator(1, fork.device)))
    torch.testing.assert_close(stream.next.h, before)


def test_sampled_notes_respect_the_pitch_range_and_are_valid():
    model = tiny_model()
    params = SamplingParams(temperature=1.5, pitch_low=48, pitch_high=52)
    notes = continue_notes(model, melody(8), 200, params, seed=3)
    assert len(notes) == 200
    assert all(48 <= n.pitch <= 52 for n in notes)
    assert all(n.end > n.start and 1 <= n.velocity <= 127 for n in notes)
    assert notes[0].start >= melody(8)[-1].start


def test_same_seed_same_notes_other_seed_other_notes():
    model = tiny_model()
    a = continue_notes(model, melody(8), 50, seed=11)
    b = continue_notes(model, melody(8), 50, seed=11)
    c = continue_notes(model, melody(8), 50, seed=12)
    assert a == b and a != c


def test_temperature_zero_and_tiny_top_p_pick_the_most_likely_class():
    logits = torch.tensor([[0.1, 3.0, 0.2, 2.9]])
    generator = torch.Generator().manual_seed(0)
    assert sample_logits(logits, 0.0, 1.0, generator).item() == 1
    assert all(sample_logits(logits, 1.0, 0.01, generator).item() == 1 for _ in range(50))
    # top-p 0.99 keeps the two big classes only
    picks = {sample_logits(logits, 1.0, 0.9, generator).item() for _ in range(200)}
    assert picks == {1, 3}


def entropy(values) -> float:
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_temperature_raises_the_entropy_of_sampled_pitches():
    model = tiny_model()
    stream = NoteStream(model)
    stream.feed(notes_to_array(melody(8)))
    generator = make_generator(0, stream.device)
    entropies = []
    for temperature in (0.3, 1.0, 2.5):
        params = SamplingParams(temperature=temperature)
        pitches = [sample_next(stream.next, params, generator)[0, 0].item() for _ in range(400)]
        entropies.append(entropy(pitches))
    assert entropies[0] < entropies[1] < entropies[2]
    assert entropies[2] > math.log(20)  # spread over many pitches when hot


def test_sampling_params_reject_bad_values():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="pitch range"):
        SamplingParams(pitch_low=90, pitch_high=80)


def test_model_config_rejects_unknown_head_and_keeps_old_configs_loadable():
    with pytest.raises(ValueError, match="head"):
        NoteLSTMConfig(head="attention")
    old = NoteLSTMConfig.from_dict({"hidden": 32, "layers": 2})  # written before head/input_projection existed
    assert old.head == "mlp" and old.input_projection
