"""The rhythm temperature: the step and duration heads sample at temperature x rhythm_temperature
(livegen.model.params), on every sampling path.

At rhythm temperature 0 an answer's steps and note lengths are always the likeliest ones given
what came before, while its pitches are still drawn; at 1 nothing changes.  An untrained model
spreads its mass widely, so a path that ignored the setting would fail at once.
"""

import numpy as np
import pytest
import torch

from factories import TINY_LINEAR_CONFIG, tiny_model
from livegen.model.blend import MemoryStream
from livegen.model.fields import next_logits
from livegen.model.memory import SessionMemory
from livegen.model.params import DEFAULT_RHYTHM_TEMPERATURE, SamplingParams, live_params
from livegen.model.stream import NoteStream
from livegen.notes import DURATION, PITCH, STEP

CALL = np.array([[60 + (i * 5) % 12, 0.3 if i % 3 else 0.0, 0.3 + 0.1 * (i % 4), 80.0] for i in range(24)])


def stream(torch_heads: bool = False, seed: int = 0) -> NoteStream:
    s = NoteStream(tiny_model(0, TINY_LINEAR_CONFIG), seed=seed)
    if torch_heads:
        s.heads = None  # the torch sampler, as on a GPU
    else:
        assert s.heads is not None
    s.feed(CALL)
    return s


def spy_tokens(note_stream: NoteStream) -> list:
    """Record the (pitch, step, duration, velocity) tokens each sample decodes, on either path."""
    seen = []
    tokenizer = note_stream.tokenizer
    decode_one, decode = tokenizer.decode_one, tokenizer.decode

    def one(tokens, tempo):
        seen.append(tuple(int(t) for t in tokens))
        return decode_one(tokens, tempo)

    def many(tokens, tempo):
        seen.append(tuple(int(t) for t in np.asarray(tokens)[0]))
        return decode(tokens, tempo)

    tokenizer.decode_one, tokenizer.decode = one, many
    return seen


def likeliest_rhythm_then_sample(sampler, note_stream: NoteStream, params: SamplingParams, notes: int = 40):
    """Sample ``notes`` notes; for each, the (step, duration) tokens drawn and the likeliest ones."""
    seen = spy_tokens(note_stream)
    drawn, likeliest, pitches = [], [], []
    for _ in range(notes):
        with torch.inference_mode():
            best_step = int(np.argmax(next_logits(note_stream).step()))
        row = sampler.sample(params)
        tokens = seen[-1]
        with torch.inference_mode():
            best_duration = int(np.argmax(next_logits(note_stream).duration(tokens[STEP], tokens[PITCH])))
        drawn.append((tokens[STEP], tokens[DURATION]))
        likeliest.append((best_step, best_duration))
        pitches.append(int(row[PITCH]))
        sampler.feed(row)
    return drawn, likeliest, pitches


@pytest.mark.parametrize("torch_heads", [False, True], ids=["numpy heads", "torch heads"])
def test_rhythm_temperature_zero_plays_the_likeliest_rhythm_and_still_draws_pitches(torch_heads):
    s = stream(torch_heads)
    drawn, likeliest, pitches = likeliest_rhythm_then_sample(s, s, SamplingParams(temperature=1.0, rhythm_temperature=0.0))
    assert drawn == likeliest
    assert len(set(pitches)) > 5  # the pitches are still sampled


@pytest.mark.parametrize("torch_heads", [False, True], ids=["numpy heads", "torch heads"])
def test_at_rhythm_temperature_one_the_rhythm_is_drawn(torch_heads):
    s = stream(torch_heads)
    drawn, likeliest, _ = likeliest_rhythm_then_sample(s, s, SamplingParams(temperature=1.0, rhythm_temperature=1.0))
    assert sum(a != b for a, b in zip(drawn, likeliest)) > 10  # so the test above says something


def test_the_memory_blend_honours_it():
    s = stream()
    memory = SessionMemory()
    memory.observe(CALL)
    blended = MemoryStream(s, memory)
    drawn, likeliest, _ = likeliest_rhythm_then_sample(
        blended, s, SamplingParams(temperature=1.0, rhythm_temperature=0.0, memory=0.5), notes=30)
    # the blend draws from the mixture; at 0 it takes the mixture's likeliest step, which the LSTM
    # alone need not share, but the duration head is the LSTM's: always its likeliest
    assert [d for _, d in drawn] == [d for _, d in likeliest]


def test_temperature_zero_stays_wholly_deterministic():
    params = SamplingParams(temperature=0.0, rhythm_temperature=0.8)
    assert params.time_temperature == 0.0
    a, b = stream(seed=1), stream(seed=2)
    assert np.array_equal(a.sample(params), b.sample(params))


def test_the_setting_is_checked_and_live_sampling_uses_the_default():
    assert SamplingParams(temperature=1.5, rhythm_temperature=0.5).time_temperature == 0.75
    assert SamplingParams().rhythm_temperature == 1.0  # the model as trained unless asked
    assert live_params().rhythm_temperature == DEFAULT_RHYTHM_TEMPERATURE
    for bad in (-0.1, 2.5):
        with pytest.raises(ValueError, match="rhythm_temperature"):
            SamplingParams(rhythm_temperature=bad)
