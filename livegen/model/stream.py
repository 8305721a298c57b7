"""A model's running state over a stream of notes: feed what was played, sample what comes next.

The daemon feeds each note as soon as it completes, so when a phrase ends only a note or two is
left to feed; ``generate`` primes with a whole file in one batched pass.  ``fork`` copies the
state so a continuation can be sampled without disturbing the listening state.
"""

from __future__ import annotations

import functools
import warnings
from typing import Sequence

import numpy as np
import torch

from livegen.model.key_prior import KeyTracker, key_log_prior
from livegen.model.lean import LeanStep
from livegen.model.lean_heads import LeanHeads, numpy_pitch_mask
from livegen.model.register_prior import RegisterTracker, register_log_prior
from livegen.model.lstm import NextNote, NoteLSTM, State, lean_summary
from livegen.model.sampling import SamplingParams, sample_next
from livegen.model.timebase import order_chords
from livegen.model.tokens import Tokenizer
from livegen.notes import DURATION, PITCH, STEP, Note, array_to_notes, notes_to_array


UNIFORMS_AHEAD = 64  # uniforms drawn from a stream's generator at a time (16 notes' draws)
MASKS_KEPT = 512  # pitch masks cached per stream family (ranges x keys x spans x prior strengths)

# torch warns about Intel-GPU TF32 whenever the oneDNN flags are set, which is irrelevant here.
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")


def _streaming(method):
    """Run a per-note call without gradients and without oneDNN.

    oneDNN speeds up batched training but costs ~2 ms per single-note LSTM step on CPU (its
    kernel set-up dominates at batch 1); the plain kernels take ~0.15 ms.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=False):
            return method(*args, **kwargs)

    return wrapper


class NoteStream:
    """Streaming predictor over one NoteLSTM (rows are pitch, step, duration, velocity in seconds).

    A model in relative time (see livegen.model.timebase) reads and predicts in units of the
    stream's running tempo: ``tempo`` follows every note fed, converts samples back to seconds,
    and snaps to a MIDI clock's beat once ``set_beat`` gives one.  ``key`` follows the key of the
    last notes fed, except those this stream sampled (``mark_own``), and
    ``SamplingParams.key_prior`` leans the samples towards it; ``register`` follows the span of
    the same notes, and ``SamplingParams.register_prior`` keeps the samples near it.
    """

    def __init__(self, model: NoteLSTM, seed: int | None = None) -> None:
        self.model = model
        self.tokenizer = Tokenizer(model.config.tokens)
        self.device = next(model.parameters()).device
        self._generator = make_generator(seed, self.device)
        self._state: State | None = None  # torch tensors, or None while only the numpy state is current
        self._hs: np.ndarray | None = None  # the lean path's state as numpy (layers, hidden), or None
        self._cs: np.ndarray | None = None
        self._ahead = np.empty(0)  # uniforms drawn ahead from ``generator`` (take_uniforms), used from _ahead_at on
        self._ahead_at = 0
        self.next: NextNote | None = None
        self.tempo = self.tokenizer.tracker()
        self.key = KeyTracker()
        self.register = RegisterTracker()
        self._own: list[float] | None = None  # the row sampled last: fed back, it moves neither key nor span
        self._masks: dict[tuple, torch.Tensor] = {}
        # One note at a time on the CPU goes through packed numpy weights (see lean.py).
        self._lean = LeanStep(model) if self.device.type == "cpu" and not model.training else None
        # ... and samples through packed numpy heads when they are single Linears (see lean_heads.py).
        self.heads = LeanHeads(model) if self._lean is not None and model.config.head == "linear" else None
        self._lean_masks: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # (mask, exp(mask))

    @property
    def primed(self) -> bool:
        return self.next is not None

    @property
    def generator(self) -> torch.Generator:
        """The stream's own random generator (seeded at construction)."""
        return self._generator

    @generator.setter
    def generator(self, generator: torch.Generator) -> None:
        self._generator = generator
        self._ahead, self._ahead_at = np.empty(0), 0  # uniforms drawn from the old one are dropped

    @property
    def state(self) -> State | None:
        """The recurrent state as torch tensors (made from the lean path's numpy arrays when asked)."""
        if self._state is None and self._hs is not None:
            layers, hidden = self._hs.shape
            self._state = (torch.from_numpy(self._hs).view(layers, 1, hidden),
                           torch.from_numpy(self._cs).view(layers, 1, hidden))
        return self._state

    @state.setter
    def state(self, value: State | None) -> None:
        self._state, self._hs, self._cs = value, None, None

    def _numpy_state(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self._hs is None and self._state is not None:
            lean = self._lean
            self._hs = self._state[0].detach().numpy().reshape(lean.layers, lean.hidden)
            self._cs = self._state[1].detach().numpy().reshape(lean.layers, lean.hidden)
        return self._hs, self._cs

    def reset(self) -> None:
        self.state = None
        self.next = None
        self.tempo.reset()
        self.key.clear()
        self.register.clear()

    def _mask_key(self, params: SamplingParams) -> tuple:
        key = self.key.key() if params.key_prior > 0.0 else None
        span = self.register.span() if params.register_prior > 0.0 else None
        return (params.pitch_low, params.pitch_high, key, params.key_prior if key is not None else 0.0,
                span, params.register_prior if span is not None else 0.0)

    def mark_own(self, row: np.ndarray) -> np.ndarray:
        """``row`` was sampled here: fed back, it will not move the key (an answer keeps the key of
        what it answers instead of wandering off on its own notes).  Returns ``row``."""
        self._own = np.asarray(row, dtype=np.float64).tolist()
        return row

    def pitch_mask_array(self, params: SamplingParams) -> np.ndarray:
        """The additive (128,) pitch mask of ``params``: the pitch range, the key prior on the key
        of the last notes fed and the register prior on their span (cached; never written in place)."""
        return self._mask_entry(params)[0]

    def pitch_weight_array(self, params: SamplingParams) -> np.ndarray:
        """``exp(pitch_mask_array(params))``, the same mask as factors on probabilities (the
        memory blend mixes probabilities); cached beside the mask, never written in place."""
        return self._mask_entry(params)[1]

    def _mask_entry(self, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
        cache_key = self._mask_key(params)
        entry = self._lean_masks.get(cache_key)
        if entry is None:
            mask = numpy_pitch_mask(params.pitch_low, params.pitch_high)
            _, _, key, _, span, _ = cache_key
            if key is not None:
                with_key = mask + key_log_prior(key, params.key_prior)
                if np.isfinite(with_key).any():  # a range wholly outside the key keeps its pitches
                    mask = with_key
            if span is not None:
                near = mask + register_log_prior(span, params.register_prior)
                if np.isfinite(near).any():  # a range wholly outside the player's span keeps its pitches
                    mask = near
            if len(self._lean_masks) >= MASKS_KEPT:
                self._lean_masks.clear()
            entry = self._lean_masks[cache_key] = (mask, np.exp(mask))
        return entry

    def prepare_next(self, uniforms: int = 8) -> None:
        """Do now what the next one-note feed and draws need and the note does not decide (see
        LeanStep.prepare), and have ``uniforms`` uniforms drawn ahead (``take_uniforms``):
        harmonize calls it after a chord, while the player holds the key."""
        if self._lean is not None:
            hs, _ = self._numpy_state()
            if hs is not None:
                self._lean.prepare_numpy(hs)
        if len(self._ahead) - self._ahead_at < uniforms:
            self._draw_ahead()

    def _draw_ahead(self) -> None:
        drawn = torch.rand(UNIFORMS_AHEAD, generator=self.generator, dtype=torch.float64, device=self.device)
        self._ahead = np.concatenate([self._ahead[self._ahead_at:], drawn.cpu().numpy()])
        self._ahead_at = 0

    def take_uniforms(self, count: int) -> np.ndarray:
        """``count`` uniforms from the stream's own generator, drawn ``UNIFORMS_AHEAD`` at a time:
        one torch call per block instead of one per note (each costs microseconds warm, tens of
        them on a CPU gone cold).  The sequence is fixed by the seed, as before."""
        if len(self._ahead) - self._ahead_at < count:
            self._draw_ahead()
        taken = self._ahead[self._ahead_at : self._ahead_at + count]
        self._ahead_at += count
        return taken

    def take_uniform(self) -> float:
        return float(self.take_uniforms(1)[0])

    def set_beat(self, seconds: float | None) -> None:
        """The beat of a running MIDI clock (None: no clock): the best estimate of the tempo."""
        self.tempo.beat = seconds if seconds and seconds > 0 else None

    def feed(self, rows: np.ndarray) -> None:
        """Advance over one row (4,) or several (N, 4) of notes, in onset order."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        own, self._own = self._own, None
        if own is None or len(rows) != 1 or rows[0].tolist() != own:
            for row in rows[-max(self.key.window, self.register.window):].tolist():
                self.key.push(row[PITCH], row[DURATION])
                self.register.push(row[PITCH])
        if len(rows) == 1 and self._lean is not None:
            hs, cs = self._numpy_state()
            token = self.tokenizer.encode_one(rows[0], self.tempo.unit)
            hs, cs = self._lean.step(token, hs, cs)
            self._state, self._hs, self._cs = None, hs, cs
            self.next = NextNote(self.model, array=hs[-1:], previous=token[0])
            self.tempo.push(rows[0, STEP])
        elif len(rows):
            self._feed_torch(order_chords(rows, self.tokenizer.config.chord_order, self.tokenizer.config.chord_seconds))

    @_streaming
    def _feed_torch(self, rows: np.ndarray) -> None:
        tokens = torch.as_tensor(self.tokenizer.encode(rows, self.tempo), device=self.device)
        self.tempo.extend(rows[:, STEP])
        if len(rows) == 1:
            self.next, self.state = self.model.step(tokens, self.state)
        else:
            h, self.state = self.model.encode(tokens.unsqueeze(0), self.state)
            self.next = NextNote(self.model, h[:, -1], previous=tokens[-1:, 0])

    def sample(
        self, params: SamplingParams, generator: torch.Generator | None = None, chord: Sequence[int] = ()
    ) -> np.ndarray:
        """Sample the next note row (pitch, step, duration, velocity) without feeding it.

        ``chord``: pitches struck at the current onset, which a zero step may not repeat.
        ``generator`` defaults to the stream's own (seeded at construction).
        """
        if self.next is None:
            raise RuntimeError("feed at least one note before sampling")
        if self.heads is not None and lean_summary(self.next) is not None:
            mask = self.pitch_mask_array(params)
            uniforms = self.take_uniforms(4) if generator is None or generator is self.generator else None
            tokens = self.heads.sample(lean_summary(self.next), params, generator or self.generator, mask, chord,
                                       uniforms, previous=self.next.previous)
            return self.mark_own(self.tokenizer.decode_one(tokens, self.tempo))
        return self.mark_own(self._sample_torch(params, generator, chord))

    @_streaming
    def _sample_torch(self, params: SamplingParams, generator: torch.Generator | None, chord: Sequence[int]) -> np.ndarray:
        key = self._mask_key(params)
        mask = self._masks.get(key)
        if mask is None:
            if len(self._masks) >= MASKS_KEPT:
                self._masks.clear()
            array = self.pitch_mask_array(params)
            mask = self._masks[key] = torch.as_tensor(array, dtype=torch.float32, device=self.device)
        tokens = sample_next(self.next, params, generator or self.generator, mask, chord)
        return self.tokenizer.decode(tokens.cpu().numpy(), self.tempo)[0]

    def warm_up(self) -> None:
        """Run one throw-away feed and sample so the first real answer pays no lazy set-up."""
        probe = self.fork()
        probe.generator = make_generator(0, self.device)
        probe.feed(np.array([[60.0, 0.0, 0.5, 80.0]]))
        probe.feed(probe.sample(SamplingParams()))
        probe.feed(np.array([[60.0, 0.0, 0.5, 80.0], [64.0, 0.0, 0.5, 80.0]]))

    def fork(self) -> "NoteStream":
        """An independent copy sharing the model (the state arrays are never written in place)."""
        other = NoteStream.__new__(NoteStream)
        other.__dict__.update(self.__dict__)
        other._masks = self._masks
        other.tempo = self.tempo.copy()
        other.key = self.key.copy()
        other.register = self.register.copy()
        other._ahead, other._ahead_at = np.empty(0), 0  # the uniforms drawn ahead are this stream's own
        return other


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A torch generator on ``device``, seeded when a seed is given (reproducible runs)."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def continue_notes(
    model: NoteLSTM,
    primer: Sequence[Note],
    length: int,
    params: SamplingParams = SamplingParams(),
    seed: int | None = None,
) -> list[Note]:
    """Prime with ``primer`` and sample ``length`` new notes that follow its last onset."""
    if not primer:
        raise ValueError("the primer has no notes")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    stream = NoteStream(model, seed)
    primer_rows = notes_to_array(primer)
    stream.feed(primer_rows)
    rows = np.empty((length, 4))
    last_onset = max(n.start for n in primer)
    chord = [n.pitch for n in primer if n.start == last_onset]  # pitches at the latest onset
    for i in range(length):
        row = stream.sample(params, chord=chord)
        chord = chord + [int(row[PITCH])] if row[STEP] == 0 else [int(row[PITCH])]
        rows[i] = row
        stream.feed(row)
    return array_to_notes(rows, start=last_onset)
