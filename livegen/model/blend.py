"""The LSTM blended with the session memory at sampling time: an interpolated cache model.

The blend is a true mixture of the two joint distributions over the next note's step and pitch,

    P(step, pitch) = (1 - w) · P_lstm(step) P_lstm(pitch | step) + w · P_mem(step) P_mem(pitch | step),

sampled field by field: the step from the mixed step distribution, then the pitch from the
mixture with the posterior weight ``w_s = w P_mem(s) / P(s)`` (so the pitch marginal is exactly
``(1 - w) P_lstm(pitch) + w P_mem(pitch)``, what ``livegen eval --session-memory`` scores).
Duration and velocity are the LSTM's, given the step and pitch chosen.  Temperature, top-p, the
pitch range and the chord rule apply to the mixture as they apply to the LSTM alone.

The weight ``w`` follows the memory's confidence, as cache language models do: the knob ``W``
(preset key ``memory``) is the weight at neutral confidence, and ``blend_weight`` moves it up when
the player's recent notes match a long, consistently continued context and down when nothing
matches.  ``W = 0`` is the LSTM exactly (the memory is not even asked); ``W = 1`` is the session
model alone, like mirror mode.

The copy guard: an answer may follow the memory's script (a pitch the memory gave at least
COPY_SHARE of its mass) for COPY_LIMIT notes in a row; after that the LSTM alone plays until the
answer leaves the memorised line, then the memory leads again.  Like the repetition penalty of text
generators it acts only when sampling (0 < W < 1), so the scored mixture is unchanged: without it,
at W = 0.5 answers replayed whole sections where the music itself varies them (README).

``MemoryStream`` wraps a NoteStream: ``feed`` teaches the memory (the player's notes: the
worker feeds only those), ``fork`` gives an answer stream whose memory cursor moves with the
answer but learns nothing, ``sample`` blends with ``params.memory``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from livegen.model.fields import Draws, next_logits, softmax
from livegen.model.lean_heads import ban_chord
from livegen.model.memory import Prediction, SessionMemory, add_interval_pitches
from livegen.model.params import SamplingParams
from livegen.model.stream import NoteStream, make_generator
from livegen.model.tokens import Tokenizer

PITCH_FLOOR = 1e-4  # share of the session model's pitch mass spread over every pitch (never 0)
CONFIDENCE_NEUTRAL = 0.35  # the memory confidence at which the weight is the knob's value (measured, see README)
CONFIDENCE_GAIN = 12.0  # how far confidence moves the weight, in logits per unit of confidence (measured)
COPY_LIMIT = 12  # answer notes in a row the memory may lead before the LSTM must vary the material (measured)
COPY_SHARE = 0.5  # a note "follows the memory's script" when the memory gave its pitch at least this share


def blend_weight(knob: float, confidence: float, adaptive: bool = True) -> float:
    """The mixture weight for one note: ``knob`` at neutral confidence, 0 and 1 kept exactly.

    Adaptive: logit(w) = logit(knob) + GAIN · (confidence - NEUTRAL), the cache-model idea that
    a context seen often and always continued the same way deserves more trust.
    """
    if knob <= 0.0 or knob >= 1.0 or not adaptive:
        return min(max(knob, 0.0), 1.0)
    logit = math.log(knob / (1.0 - knob)) + CONFIDENCE_GAIN * (confidence - CONFIDENCE_NEUTRAL)
    return 1.0 / (1.0 + math.exp(min(-logit, 700.0)))  # (math, not numpy: scalars; 700 keeps exp finite)


class StepBins:
    """Which of a model's step bins each rhythm class of the memory falls in, per tempo.

    Why: the bins depend only on the memory's unit and the stream's unit, which repeat (each is
    a median of recent steps), so they are computed once per pair (a bounded cache) instead of
    per note.  ``sums[b]`` is 1 for the classes in bin ``b``: P(bin) = sums @ P(class)."""

    LIMIT = 256  # unit pairs kept; a free-tempo session can make many, so the cache starts over

    def __init__(self, memory: SessionMemory, tokenizer: Tokenizer) -> None:
        self.memory, self.tokenizer = memory, tokenizer
        self._cache: dict[tuple[float, float], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __call__(self, prediction: Prediction, unit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bins (rhythms,), sums (step bins, rhythms), occupied (step bins,) bool) at these units."""
        key = (prediction.unit, unit)
        found = self._cache.get(key)
        if found is None:
            seconds = self.memory.step_seconds(prediction)
            tokenizer = self.tokenizer
            bins = tokenizer.encode_step(seconds, unit) if tokenizer.relative else tokenizer.encode_step(seconds)
            bins = np.asarray(bins, dtype=np.int64)
            sums = np.zeros((tokenizer.config.step_bins, len(bins)))
            sums[bins, np.arange(len(bins))] = 1.0
            if len(self._cache) >= self.LIMIT:
                self._cache.clear()
            found = self._cache[key] = (bins, sums, sums.any(axis=1))
        return found


class SessionDistributions:
    """The session model's next-note distributions over a model's step bins and 128 pitches."""

    def __init__(self, prediction: Prediction, memory: SessionMemory, tokenizer: Tokenizer, unit: float,
                 step_bins: StepBins | None = None) -> None:
        self.prediction = prediction
        self.bins, self._sums, self._occupied = (step_bins or StepBins(memory, tokenizer))(prediction, unit)
        self.step = self._sums @ prediction.probs.sum(axis=0)  # (step bins,) P(bin)
        self._interval_limit = memory.config.interval_limit

    def pitch(self, step_bin: int) -> np.ndarray:
        """P(pitch | step bin) (128,): the intervals of the rhythm classes in that bin, from the last pitch."""
        return self.add_pitch(np.zeros(128), 1.0, step_bin)

    def add_pitch(self, out: np.ndarray, weight: float, step_bin: int) -> np.ndarray:
        """``out += weight · pitch(step_bin)`` in place (the sampler's mixture, without a temporary)."""
        probs = self.prediction.probs
        intervals = probs @ self._sums[step_bin] if self._occupied[step_bin] else probs.sum(axis=1)
        return add_interval_pitches(out, weight, intervals, self.prediction.last_pitch, self._interval_limit, PITCH_FLOOR)


def _of_stream(name: str) -> property:
    """A read-only view of the wrapped NoteStream's attribute ``name`` (MemoryStream stands in
    for a NoteStream wherever one is read)."""
    return property(lambda self: getattr(self.stream, name), doc=f"The wrapped stream's ``{name}``.")


class MemoryStream:
    """A Predictor (feed / fork / sample) blending a NoteStream with a SessionMemory."""

    def __init__(self, stream: NoteStream, memory: SessionMemory, adaptive: bool = True) -> None:
        self.stream = stream
        self.memory = memory
        self.adaptive = adaptive
        self._cursor = None  # an answer's own position in the memory; None: the learning cursor
        self._learns = True
        self.copy_run = 0  # notes in a row this answer played as the memory scripted them
        self._scripted = False  # whether the last note sampled was the memory's script
        self._step_bins = StepBins(memory, stream.tokenizer)  # shared with forks (same memory, same model)

    # the NoteStream's surface (read-only), for the daemon, harmonize's voicing and the benchmarks
    tempo = _of_stream("tempo")
    primed = _of_stream("primed")
    next = _of_stream("next")
    model = _of_stream("model")
    tokenizer = _of_stream("tokenizer")
    device = _of_stream("device")
    generator = _of_stream("generator")
    heads = _of_stream("heads")
    key = _of_stream("key")

    def set_beat(self, seconds: float | None) -> None:
        self.stream.set_beat(seconds)

    def warm_up(self) -> None:
        self.stream.warm_up()
        probe = self.fork()
        probe.stream.generator = make_generator(0, self.stream.device)
        probe.feed(np.array([[60.0, 0.0, 0.5, 80.0]]))
        probe.sample(SamplingParams(memory=0.5))

    def feed(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        self.stream.feed(rows)
        self.learn(rows)

    def learn(self, rows: np.ndarray) -> None:
        """The memory's half of ``feed``: harmonize feeds the player's note to the LSTM first
        (``feed_accompaniment``), voices the chord, then teaches the memory with this."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        if self._learns:
            self.memory.observe(rows)
        else:
            self.memory.advance(self._cursor, rows)
            self.copy_run = self.copy_run + 1 if self._scripted else 0  # the answer plays its note
            self._scripted = False

    def prepare_next(self) -> None:
        self.stream.prepare_next()

    def take_uniform(self) -> float:
        return self.stream.take_uniform()

    def feed_accompaniment(self, rows: np.ndarray) -> None:
        """Notes livegen added to the player's own (harmonize's voices): the LSTM hears them,
        the memory, which learns only what the player played, does not."""
        self.stream.feed(rows)

    def fork(self) -> "MemoryStream":
        other = MemoryStream.__new__(MemoryStream)
        other.__dict__.update(self.__dict__)
        other.stream = self.stream.fork()
        with self.memory._lock:
            other._cursor = (self._cursor or self.memory.cursor).copy()
        other._learns = False
        other.copy_run, other._scripted = 0, False
        return other

    # -- distributions ------------------------------------------------------------------------

    def session(self) -> SessionDistributions:
        """The session model's distributions for the next note of this stream."""
        prediction = self.memory.predict(self._cursor)
        if self._step_bins.memory is not self.memory or self._step_bins.tokenizer is not self.stream.tokenizer:
            self._step_bins = StepBins(self.memory, self.stream.tokenizer)  # public attributes: one may be swapped
        return SessionDistributions(prediction, self.memory, self.stream.tokenizer, self.stream.tempo.unit,
                                    self._step_bins)

    def weight(self, params: SamplingParams, session: SessionDistributions) -> float:
        return blend_weight(params.memory, session.prediction.confidence, self.adaptive)

    @torch.inference_mode()
    def step_probs(self, params: SamplingParams, session: SessionDistributions | None = None) -> np.ndarray:
        """The blended P(step bin) (for tests and evaluation)."""
        session = session or self.session()
        lstm = softmax(next_logits(self.stream).step())
        w = self.weight(params, session)
        return (1.0 - w) * lstm + w * session.step

    @torch.inference_mode()
    def pitch_probs(self, params: SamplingParams, step_bin: int, session: SessionDistributions | None = None) -> np.ndarray:
        """The blended P(pitch | step bin), before the pitch range and chord masks."""
        session = session or self.session()
        logits = next_logits(self.stream)
        w = self.weight(params, session)
        lstm_step = softmax(logits.step())
        mixed_step = (1.0 - w) * lstm_step[step_bin] + w * session.step[step_bin]
        w_s = w * session.step[step_bin] / mixed_step if mixed_step > 0 else w
        lstm = softmax(logits.pitch(step_bin))
        return (1.0 - w_s) * lstm + w_s * session.pitch(step_bin)

    # -- sampling -------------------------------------------------------------------------------

    def sample(self, params: SamplingParams, generator: torch.Generator | None = None,
               chord: Sequence[int] = ()) -> np.ndarray:
        """The next note row; ``params.memory`` = 0 is exactly ``NoteStream.sample``."""
        if params.memory <= 0.0:
            return self.stream.sample(params, generator, chord)
        if self.stream.heads is not None:  # numpy only: no torch context to pay for (~40 us)
            tokens = self._sample_tokens(params, generator or self.stream.generator, chord)
        else:
            with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=False):
                tokens = self._sample_tokens(params, generator or self.stream.generator, chord)
        return self.stream.mark_own(self.stream.tokenizer.decode_one(tokens, self.stream.tempo))

    def _sample_tokens(self, params: SamplingParams, generator: torch.Generator, chord: Sequence[int]) -> tuple[int, int, int, int]:
        if self.stream.next is None:
            raise RuntimeError("feed at least one note before sampling")
        logits, draw = next_logits(self.stream), Draws(self.stream, generator)
        session = self.session()
        w = self.weight(params, session)
        guarded = 0.0 < params.memory < 1.0 and self.copy_run >= COPY_LIMIT
        if guarded:  # the LSTM alone plays until the answer leaves the memorised line
            w = 0.0
        t, p, rhythm = params.temperature, params.top_p, params.time_temperature
        step_mix = softmax(logits.step(), 1.0 - w)
        step_mix += w * session.step
        step = draw.from_probs(0, step_mix, rhythm, p)
        w_s = w * session.step[step] / step_mix[step] if step_mix[step] > 0 else w
        pitch_mix = session.add_pitch(softmax(logits.pitch(step), 1.0 - w_s), w_s, step)
        if chord and step == 0:  # the range and the key and register priors, the chord's pitches banned
            pitch_mix *= np.exp(ban_chord(self.stream.pitch_mask_array(params), step, chord))
        else:  # the range and the key and register priors as factors (cached)
            pitch_mix *= self.stream.pitch_weight_array(params)
        pitch = draw.from_probs(1, pitch_mix, t, p)
        self._scripted = bool(session.pitch(step)[pitch] >= COPY_SHARE)  # counted when the note is fed
        duration = draw(2, logits.duration(step, pitch), rhythm, p)
        velocity = draw(3, logits.velocity(step, pitch, duration), t, p)
        return pitch, step, duration, velocity

