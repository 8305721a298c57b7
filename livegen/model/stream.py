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

from livegen.model.lean import LeanStep
from livegen.model.lean_heads import LeanHeads, numpy_pitch_mask
from livegen.model.lstm import NextNote, NoteLSTM, State
from livegen.model.sampling import SamplingParams, pitch_mask, sample_next
from livegen.model.timebase import order_chords
from livegen.model.tokens import Tokenizer
from livegen.notes import PITCH, STEP, Note, array_to_notes, notes_to_array


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
    and snaps to a MIDI clock's beat once ``set_beat`` gives one.
    """

    def __init__(self, model: NoteLSTM, seed: int | None = None) -> None:
        self.model = model
        self.tokenizer = Tokenizer(model.config.tokens)
        self.device = next(model.parameters()).device
        self.generator = make_generator(seed, self.device)
        self.state: State | None = None
        self.next: NextNote | None = None
        self.tempo = self.tokenizer.tracker()
        self._masks: dict[tuple[int, int], torch.Tensor] = {}
        # One note at a time on the CPU goes through packed numpy weights (see lean.py).
        self._lean = LeanStep(model) if self.device.type == "cpu" and not model.training else None
        # ... and samples through packed numpy heads when they are single Linears (see lean_heads.py).
        self.heads = LeanHeads(model) if self._lean is not None and model.config.head == "linear" else None
        self._lean_masks: dict[tuple[int, int], np.ndarray] = {}

    @property
    def primed(self) -> bool:
        return self.next is not None

    def reset(self) -> None:
        self.state = None
        self.next = None
        self.tempo.reset()

    def prepare_next(self) -> None:
        """Do now the part of the next one-note feed that does not depend on the note (see
        LeanStep.prepare): harmonize calls it after a chord, while the player holds the key."""
        if self._lean is not None:
            self._lean.prepare(self.state)

    def set_beat(self, seconds: float | None) -> None:
        """The beat of a running MIDI clock (None: no clock): the best estimate of the tempo."""
        self.tempo.beat = seconds if seconds and seconds > 0 else None

    def feed(self, rows: np.ndarray) -> None:
        """Advance over one row (4,) or several (N, 4) of notes, in onset order."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        if len(rows) == 1 and self._lean is not None:
            h, self.state = self._lean(self.tokenizer.encode_one(rows[0], self.tempo.unit), self.state)
            self.next = NextNote(self.model, h)
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
            self.next = NextNote(self.model, h[:, -1])

    def sample(
        self, params: SamplingParams, generator: torch.Generator | None = None, chord: Sequence[int] = ()
    ) -> np.ndarray:
        """Sample the next note row (pitch, step, duration, velocity) without feeding it.

        ``chord``: pitches struck at the current onset, which a zero step may not repeat.
        ``generator`` defaults to the stream's own (seeded at construction).
        """
        if self.next is None:
            raise RuntimeError("feed at least one note before sampling")
        if self.heads is not None and self.next.h.shape[0] == 1:
            key = (params.pitch_low, params.pitch_high)
            mask = self._lean_masks.get(key)
            if mask is None:
                mask = self._lean_masks[key] = numpy_pitch_mask(*key)
            tokens = self.heads.sample(self.next.h, params, generator or self.generator, mask, chord)
            return self.tokenizer.decode_one(tokens, self.tempo)
        return self._sample_torch(params, generator, chord)

    @_streaming
    def _sample_torch(self, params: SamplingParams, generator: torch.Generator | None, chord: Sequence[int]) -> np.ndarray:
        key = (params.pitch_low, params.pitch_high)
        mask = self._masks.get(key)
        if mask is None:
            mask = self._masks[key] = pitch_mask(*key, device=self.device)
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
        """An independent copy sharing the model (the state tensors are immutable here)."""
        other = NoteStream.__new__(NoteStream)
        other.__dict__.update(self.__dict__)
        other._masks = self._masks
        other.tempo = self.tempo.copy()
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
