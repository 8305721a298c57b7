"""The session memory's fast paths against plain, slow references written from the definitions.

Why: SessionMemory.predict and SessionDistributions are computed incrementally and in a
rearranged order for speed; these references recount everything from the remembered symbols
each time, so a fast path that drifts from the definition (forgetting, BREAKs, forks, the dense
follower path, the step-bin cache, the draws from probabilities) fails here.
"""

from collections import Counter

import numpy as np
import pytest
import torch

from livegen.model.blend import PITCH_FLOOR, MemoryStream
from livegen.model.fields import Draws
from livegen.model.lean_heads import draw
from livegen.model.lstm import NoteLSTM, NoteLSTMConfig
from livegen.model.memory import BREAK, DENSE_FOLLOWERS, MemoryConfig, SessionMemory
from livegen.model.stream import NoteStream
from livegen.model.tokens import Tokenizer, TokenConfig


def reference_predict(history: list[int], context: list[int], config: MemoryConfig) -> tuple[np.ndarray, float, int, int]:
    """Interpolated PPM from scratch: uniform, then the unigram, then each longer matching
    context k (n-grams that hold no BREAK) with Witten-Bell weight n / (n + distinct followers).
    Returns (probs, confidence, order, the most followers of a matched context)."""
    probs = np.full(config.symbols, 1.0 / config.symbols)
    unigram = Counter(s for s in history if s != BREAK)
    total = sum(unigram.values())
    if total:
        keep = total / (total + len(unigram))
        dense = np.zeros(config.symbols)
        for symbol, count in unigram.items():
            dense[symbol] = count / total
        probs = (1.0 - keep) * probs + keep * dense
    order, confidence, most = 0, 0.0, 0
    for k in range(1, min(config.order, len(context)) + 1):
        wanted = tuple(context[-k:])
        followers = Counter(
            history[i] for i in range(k, len(history))
            if BREAK not in history[i - k : i + 1] and tuple(config.key(s) for s in history[i - k : i]) == wanted)
        if not followers:
            break
        n = sum(followers.values())
        keep = n / (n + len(followers))
        dense = np.zeros(config.symbols)
        for symbol, count in followers.items():
            dense[symbol] = count / n
        probs = (1.0 - keep) * probs + keep * dense
        order, confidence, most = k, keep * k / config.order, max(most, len(followers))
    return probs, confidence, order, most


def random_rows(rng: np.random.Generator, n: int, intervals: int) -> np.ndarray:
    pitches = 60 + rng.integers(-intervals, intervals + 1, n).cumsum() % 24
    steps = rng.choice([0.0, 0.2, 0.4, 0.8], n, p=[0.1, 0.4, 0.4, 0.1])
    return np.column_stack([pitches, steps, np.full(n, 0.3), np.full(n, 80.0)]).astype(float)


def assert_predicts_like_reference(memory: SessionMemory, history: list[int], cursor=None) -> int:
    prediction = memory.predict(cursor)
    probs, confidence, order, most = reference_predict(history, (cursor or memory.cursor).context, memory.config)
    np.testing.assert_allclose(prediction.probs.reshape(-1), probs, rtol=1e-12, atol=1e-15)
    assert prediction.order == order
    assert prediction.confidence == pytest.approx(confidence, rel=1e-12, abs=1e-15)
    return most


@pytest.mark.parametrize("context_rhythm", [False, True])
@pytest.mark.parametrize("intervals", [1, 4])
def test_predict_equals_the_reference_through_forgetting_breaks_and_forks(tmp_path, context_rhythm, intervals):
    config = MemoryConfig(order=4, capacity=120, context_rhythm=context_rhythm)
    rng = np.random.default_rng(intervals)
    first = SessionMemory(config)
    first.observe(random_rows(rng, 150, intervals))  # past capacity: forgotten already
    memory = SessionMemory.load(first.save(tmp_path / "m.json.gz"))  # a BREAK ends the loaded session
    history = (first.to_dict()["history"] + [BREAK])[-config.capacity :]
    assert memory.to_dict()["history"] == history
    most = assert_predicts_like_reference(memory, history)
    for row in random_rows(rng, 200, intervals):  # crosses the BREAK out of the window, then forgets on
        history = (history + memory.advance(memory.cursor.copy(), row))[-config.capacity :]
        memory.observe(row)
        most = max(most, assert_predicts_like_reference(memory, history))
        if rng.random() < 0.1:  # an answer's cursor moves on and teaches nothing
            fork = memory.cursor.copy()
            memory.advance(fork, random_rows(rng, 3, intervals))
            most = max(most, assert_predicts_like_reference(memory, history, fork))
    assert memory.to_dict()["history"] == history
    if intervals == 4 and not context_rhythm:
        assert most > DENSE_FOLLOWERS  # the vectorised follower path ran too


def reference_session(memory: SessionMemory, prediction, tokenizer: Tokenizer, unit: float):
    """P(step bin) and P(pitch | step bin) by loops over rhythm classes, intervals and pitches."""
    c = memory.config
    bins = []
    for ratio in c.rhythm_ratios():
        seconds = ratio * prediction.unit
        bins.append(int(tokenizer.encode_step(seconds, unit) if tokenizer.relative else tokenizer.encode_step(seconds)))
    step = np.zeros(tokenizer.config.step_bins)
    for rhythm, b in enumerate(bins):
        step[b] += prediction.probs[:, rhythm].sum()

    def pitch(step_bin: int) -> np.ndarray:
        columns = [r for r, b in enumerate(bins) if b == step_bin] or list(range(c.rhythms))
        intervals = prediction.probs[:, columns].sum(axis=1)
        out = np.zeros(128)
        if prediction.last_pitch is not None:
            for i, p in enumerate(intervals):
                target = prediction.last_pitch + i - c.interval_limit
                if 0 <= target < 128:
                    out[target] = p
        if out.sum() <= 0:
            return np.full(128, 1.0 / 128)
        return out / out.sum() * (1.0 - PITCH_FLOOR) + PITCH_FLOOR / 128

    return step, pitch


def small_model(tokens: TokenConfig) -> NoteLSTM:
    torch.manual_seed(0)
    config = NoteLSTMConfig(hidden=16, layers=1, pitch_embedding=8, field_embedding=8, dropout=0.0, head="linear",
                            input_projection=False, tokens=tokens)
    return NoteLSTM(config).eval()


@pytest.mark.parametrize("tokens", [TokenConfig.relative_default(), TokenConfig()], ids=["relative", "seconds"])
def test_session_distributions_equal_the_direct_computation(tokens):
    rng = np.random.default_rng(3)
    stream = MemoryStream(NoteStream(small_model(tokens), seed=0), SessionMemory(MemoryConfig(capacity=300)))
    for edge in (False, True):  # a last pitch at the edge of the keyboard cuts the interval range
        rows = random_rows(rng, 400, 3)
        if edge:
            rows[:, 0] = np.clip(rows[:, 0] + 55, 0, 127)
            stream.set_beat(0.3)  # a MIDI clock snaps the stream's unit, not the memory's: the units differ
        for row in rows:
            stream.feed(row)
            if rng.random() < 0.2:
                for target in (stream, stream.fork()):
                    session = target.session()
                    step, pitch = reference_session(target.memory, session.prediction, target.tokenizer,
                                                    target.stream.tempo.unit)
                    np.testing.assert_allclose(session.step, step, rtol=1e-12, atol=1e-15)
                    for b in range(len(step)):  # bins with and without a rhythm class in them
                        np.testing.assert_allclose(session.pitch(b), pitch(b), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.8, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_draws_from_probabilities_are_the_draws_from_their_logs(temperature, top_p):
    stream = NoteStream(small_model(TokenConfig.relative_default()), seed=0)
    stream.feed(random_rows(np.random.default_rng(0), 4, 2))
    rng = np.random.default_rng(1)
    for _ in range(300):
        probs = rng.random(40) * (rng.random(40) < 0.7)  # unnormalised, some zero (masked)
        draws = Draws(stream, stream.generator)
        if rng.random() < 0.1:
            draws.uniforms[1], probs[0] = 0.0, 0.0  # the lowest uniform still never draws a zero class
        with np.errstate(divide="ignore"):
            chosen = draws.from_probs(1, probs, temperature, top_p)
            assert chosen == draw(np.log(probs), temperature, top_p, draws.uniforms[1]) and probs[chosen] > 0
