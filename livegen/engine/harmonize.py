"""Harmonize mode: voices under (or over, or around) each note the player strikes, at once.

On a player's note-on the engine asks the worker thread to voice one chord:

    melody note -> feed it, and sample ``voices`` pitches at step 0 (the rest of the chord)
                -> schedule them all at the note-on's own instant, send them from the worker

The model reads a chord in the order it was trained on (``chord_order`` in its config:
"ascending", low to high, for older models; "descending", top note first, for models trained
to harmonize a melody).  So the chord is generated in that order: with "descending" and voices
below, the melody is fed first and each voice is sampled below the one before; with
"ascending", the lowest voice comes first (with the melody's step), the melody last.  The first
note of the chord carries the time since the previous chord; every other note has step 0.

Every voice has a pitch window by its position (rank): the k-th voice below the melody lies
within ``REACH * k`` semitones under it and at least ``ROOM * (k-1) + 1`` under it, leaving a
third for each of the k-1 voices above it; voices above mirror that.  A voice also stays strictly between its neighbours already chosen, so no
pitch is struck twice and the melody is never doubled.  A window that is empty (the preset's
pitch range, the ends of the keyboard) drops that voice.

The model picks every voice among the pitches the voice-leading rules allow: consonant with the
melody (``CONSONANT_TO_MELODY``; the fourth only for a voice above the lowest one) and making no
parallel fifth or octave with the parts already placed, the melody included (``parallels_with``);
a voice with no consonant pitch left in its window is left out, and parallels are allowed when
nothing else is left.  A voice an "ascending" model picks before it has read the melody cannot
take the melody into account at all, so it needs the rules; a "descending" model reads the melody
first, and on held-out chorales its voices alone were consonant 88 % of the time but made 0.36
parallels per onset (Bach: 0.08), so the rules hold for it too.

The player's note is fed at its note-on, before its length is known: it is fed with a guessed
duration, the length of the player's previous melody note (``FIRST_GUESS_S`` for the first),
clamped to ``GUESS_RANGE_S``; the voices are fed with the same duration.  The model's state
then holds the melody and the voices, so voice leading and key carry on to the next chord.

The voices end when the player's note ends (the assembler reports that at pedal-up when the
sustain pedal held it) or when the next melody note starts, whichever is first; panic, mute,
a mode or preset switch and shutdown close them too.  ``HOLD_LIMIT_S`` is a backstop only.

This module never imports torch: the predictor is anything with ``feed``/``sample``; a model
that can sample a pitch at a given step (``ModelVoicing.sample``, see livegen/model/voicing.py)
is used that way, any other predictor through ``sample`` with the window as its pitch range.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Protocol, Sequence

import numpy as np

from livegen.clock import Clock
from livegen.model.params import SamplingParams
from livegen.notes import PITCH

PLACEMENTS = ("below", "above", "around")
CHORD_ORDERS = ("ascending", "descending")
MAX_VOICES = 8
REACH = 12  # semitones: the k-th voice from the melody lies within REACH * k of it
ROOM = 3  # semitones kept free per voice between the k-th voice and the melody (a third each)
FIRST_GUESS_S = 0.5  # guessed duration of the first melody note
GUESS_RANGE_S = (0.05, 2.0)  # guessed durations are clamped to this
CONSONANT_TO_MELODY = frozenset({0, 3, 4, 7, 8, 9})  # interval classes; 5 (the fourth) above the lowest voice
HOLD_LIMIT_S = 120.0  # a voice's scheduled end if nothing closes it before (never reached in play)


class VoicePredictor(Protocol):
    def feed(self, rows: np.ndarray) -> None: ...

    def sample(self, params: SamplingParams, *, chord: Sequence[int] = ()) -> np.ndarray: ...


VoiceSampler = Callable[[object, SamplingParams, float, Sequence[int]], int | None]
"""(predictor, params with the voice's window as pitch range, step seconds, pitches taken) -> pitch."""


def sample_any(predictor: VoicePredictor, params: SamplingParams, step: float, taken: Sequence[int]) -> int | None:
    """Any predictor: sample a note in the window and keep its pitch (its step is ignored)."""
    pitch = int(predictor.sample(params, chord=list(taken))[PITCH])
    ok = params.pitch_low <= pitch <= params.pitch_high and pitch not in taken
    return pitch if ok else None


@dataclass(frozen=True)
class ModelVoicing:
    """What the engine needs to know of the model to voice a chord."""

    chord_order: str = "ascending"
    sample: VoiceSampler = sample_any

    def __post_init__(self) -> None:
        if self.chord_order not in CHORD_ORDERS:
            raise ValueError(f"chord_order must be one of {', '.join(CHORD_ORDERS)}, got {self.chord_order!r}")


# --- where the voices go (pure) -----------------------------------------------------------------


def check_placement(voices: int, placement: str) -> None:
    if not 1 <= voices <= MAX_VOICES:
        raise ValueError(f"voices must be 1..{MAX_VOICES}, got {voices!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"harmonize must be one of {', '.join(PLACEMENTS)}, got {placement!r}")


def voice_ranks(voices: int, placement: str) -> list[int]:
    """Signed ranks of the voices: -1 the nearest below the melody, -2 the next..., +1 above.

    around: half below (the odd one too), half above, nearest first, alternating."""
    check_placement(voices, placement)
    if placement == "below":
        return [-k for k in range(1, voices + 1)]
    if placement == "above":
        return list(range(1, voices + 1))
    below, above = (voices + 1) // 2, voices // 2
    ranks = []
    for k in range(1, below + 1):
        ranks.append(-k)
        if k <= above:
            ranks.append(k)
    return ranks


def generation_order(ranks: Sequence[int], chord_order: str) -> list[int]:
    """The chord's notes (0 is the melody) in the order the model reads a chord."""
    members = sorted({0, *ranks})
    return members if chord_order == "ascending" else members[::-1]


def voice_window(melody: int, rank: int, chosen: dict[int, int], low: int = 0, high: int = 127) -> tuple[int, int]:
    """Inclusive pitch window of the voice at ``rank`` given the pitches ``chosen`` so far
    (rank -> pitch, the melody at 0) and the allowed range; low > high means no room."""
    k = abs(rank)
    if rank < 0:
        lo, hi = melody - REACH * k, melody - 1 - ROOM * (k - 1)
    else:
        lo, hi = melody + 1 + ROOM * (k - 1), melody + REACH * k
    above = [pitch for r, pitch in chosen.items() if r > rank]
    below = [pitch for r, pitch in chosen.items() if r < rank]
    if above:
        hi = min(hi, min(above) - 1)
    if below:
        lo = max(lo, max(below) + 1)
    return max(lo, low, 0), min(hi, high, 127)


def dissonant_to(melody: int, low: int, high: int, lowest: bool) -> list[int]:
    """Pitches in [low, high] dissonant with the melody (the fourth too for the lowest voice)."""
    allowed = CONSONANT_TO_MELODY if lowest else CONSONANT_TO_MELODY | {5}
    return [p for p in range(low, high + 1) if abs(melody - p) % 12 not in allowed]


def parallels_with(rank: int, candidates: Sequence[int], chosen: dict[int, int], previous: dict[int, int]) -> list[int]:
    """The candidate pitches for ``rank`` that would move in parallel fifths or octaves with a
    part already chosen (rank -> pitch; both parts sounding in the ``previous`` chord too)."""
    if rank not in previous:
        return []
    before = previous[rank]
    bad = []
    for pitch in candidates:
        moved = pitch - before
        if moved == 0:
            continue
        for other, now in chosen.items():
            if other not in previous or now == previous[other] or (now > previous[other]) != (moved > 0):
                continue
            first, second = abs(before - previous[other]) % 12, abs(pitch - now) % 12
            if first == second and first in (0, 7):
                bad.append(pitch)
                break
    return bad


def guess_duration(previous: float | None) -> float:
    """The duration a melody note is fed with at its note-on (see the module doc)."""
    if previous is None:
        return FIRST_GUESS_S
    return float(min(max(previous, GUESS_RANGE_S[0]), GUESS_RANGE_S[1]))


# --- voicing one chord (worker thread, or offline in the eval) ------------------------------------


@dataclass(frozen=True)
class Melody:
    """A melody note as the model is fed it at its note-on."""

    pitch: int
    step: float  # seconds since the previous melody onset (0 for the first)
    duration: float  # guessed
    velocity: int


def voice_chord(
    predictor: VoicePredictor,
    voicing: ModelVoicing,
    melody: Melody,
    ranks: Sequence[int],
    params: SamplingParams,
    velocity: int,
    primed: bool = True,
    previous: dict[int, int] | None = None,
    deferred: list[Callable[[], None]] | None = None,
    on_voice: Callable[[int, int], None] | None = None,
) -> list[tuple[int, int]]:
    """Feed the melody and sample the voices around it in the model's chord order, feeding each.

    Returns (rank, pitch) per voice placed, in generation order.  ``primed`` False (nothing fed
    yet) puts the melody first: there is no state to sample a voice from before it.
    ``previous``: the last chord (rank -> pitch, the melody at 0), for the parallels rule.
    ``deferred``: when given, the chord's last feed (and a session memory's lesson of the
    melody, see ``MemoryStream.learn``) is appended to it instead of run, so the caller can send
    the voices first (no voice waits for it) and feed afterwards.
    ``on_voice(rank, pitch)``: called as soon as each voice is chosen, before the model is fed
    it, so the caller can send that voice while the next one is sampled.
    """
    natural = generation_order(ranks, voicing.chord_order)
    order = list(natural)
    if not primed:
        order.remove(0)
        order.insert(0, 0)
    lowest_rank = min(ranks)
    chosen = {0: melody.pitch}
    placed: list[tuple[int, int]] = []
    pending: list[Callable[[], None]] = []  # the last note chosen, fed before the next is sampled
    feed_voice = getattr(predictor, "feed_accompaniment", predictor.feed)  # a session memory learns only the player
    learn = getattr(predictor, "learn", None)  # ... and learns the melody once the voices are out
    later: list[Callable[[], None]] = []

    def run_pending() -> None:
        while pending:
            pending.pop()()

    step = melody.step  # the first note of the chord carries the step, the rest are simultaneous
    for rank in order:
        if rank == 0:
            run_pending()
            row = np.array([[melody.pitch, step, melody.duration, melody.velocity]], dtype=np.float64)
            if learn is not None and feed_voice is not predictor.feed:
                pending.append(lambda row=row: feed_voice(row))
                later.append(lambda row=row: learn(row))
            else:
                pending.append(lambda row=row: predictor.feed(row))
            step = 0.0
            continue
        low, high = voice_window(melody.pitch, rank, chosen, params.pitch_low, params.pitch_high)
        if low > high:
            continue
        window = dataclasses.replace(params, pitch_low=low, pitch_high=high)
        taken = list(chosen.values())
        # The voice-leading rules hold for every voice, whichever order the model reads the chord in.
        room = high - low + 1
        dissonant = set(dissonant_to(melody.pitch, low, high, rank == lowest_rank))
        if len(dissonant) == room:  # no consonant pitch left for this voice: leave it out
            continue
        parallel = set(parallels_with(rank, range(low, high + 1), chosen, previous)) if previous else set()
        taken += sorted(dissonant | parallel if len(dissonant | parallel) < room else dissonant)
        run_pending()
        pitch = voicing.sample(predictor, window, step, taken)
        if pitch is None or not low <= pitch <= high or pitch in taken:
            continue
        chosen[rank] = pitch
        placed.append((rank, pitch))
        if on_voice is not None:
            on_voice(rank, pitch)
        row = np.array([[pitch, step, melody.duration, velocity]], dtype=np.float64)
        pending.append(lambda row=row: feed_voice(row))
        step = 0.0
    if deferred is None:
        run_pending()
        for job in later:
            job()
    else:
        deferred.extend(pending + later)
    return placed


# --- the engine's side ----------------------------------------------------------------------------


class NoteScheduler(Protocol):
    def schedule_note(self, pitch: int, velocity: int, channel: int, on_at: float, off_at: float,
                      tag: Hashable | None = None, wake: bool = True) -> int | None: ...

    def cancel(self, tag: Hashable | None = None, now: float | None = None) -> list: ...

    def advance(self, now: float) -> list: ...


class JobRunner(Protocol):
    def call(self, job: Callable[[object], None]) -> None: ...

    def feed(self, rows) -> None: ...


@dataclass
class _Chord:
    tag: tuple[str, int]
    key: tuple[int, int]  # the melody's (channel, pitch)
    closed: bool = False


@dataclass(frozen=True)
class HarmonizeSettings:
    """The session settings one chord needs (a copy, so a later preset switch cannot mix in)."""

    voices: int
    placement: str
    params: SamplingParams
    channel: int
    velocity_scale: float = 1.0


class Harmonizer:
    """One chord of voices per melody note; each chord is closed with its melody note.

    Engine thread: ``note_on``, ``note_off``, ``close_all``.  Worker thread: the voicing job
    ``note_on`` queues, which schedules the voices on the scheduler and sends them at once.
    A lock makes closing and scheduling exclusive, so a chord closed before its job ran is
    never heard (a very short note, a panic).
    """

    def __init__(
        self,
        scheduler: NoteScheduler,
        worker: JobRunner,
        voicing: ModelVoicing | None = None,
        clock: Clock = time.monotonic,
        log: Callable[[dict], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.worker = worker
        self.voicing = voicing or ModelVoicing()
        self.clock = clock
        self._log = log or (lambda record: None)
        self._lock = threading.Lock()
        self._open: dict[tuple[str, int], _Chord] = {}
        self._count = 0
        self._previous_onset: float | None = None
        self._previous_duration: float | None = None
        self._onsets: dict[tuple[int, int], float] = {}  # melody keys held: (channel, pitch) -> onset
        self._previous_chord: dict[int, int] = {}  # rank -> pitch (melody at 0), worker thread only
        self.chords = 0
        self.voices_sent = 0

    # -- engine thread ----------------------------------------------------------------------

    def note_on(self, pitch: int, velocity: int, channel: int, t: float, settings: HarmonizeSettings,
                muted: bool = False) -> None:
        """A melody note started at ``t``: close the previous chord, feed the note, voice it."""
        self.close_all(t)
        step = 0.0 if self._previous_onset is None else max(t - self._previous_onset, 0.0)
        self._previous_onset = t
        self._onsets[(channel, pitch)] = t
        melody = Melody(pitch, step, guess_duration(self._previous_duration), velocity)
        if muted:  # no voices, but the model still hears the melody
            self.worker.feed([[melody.pitch, melody.step, melody.duration, melody.velocity]])
            return
        self._count += 1
        chord = _Chord(("harmonize", self._count), (channel, pitch))
        with self._lock:
            self._open[chord.tag] = chord
        self.worker.call(lambda predictor: self._voice(predictor, chord, melody, t, settings))

    def note_off(self, channel: int, pitch: int, t: float, duration: float | None = None) -> None:
        """The melody note on ``(channel, pitch)`` stopped sounding: its voices end now."""
        onset = self._onsets.pop((channel, pitch), None)
        if onset is not None:
            self._previous_duration = duration if duration is not None else max(t - onset, 0.0)
        with self._lock:
            chords = [c for c in self._open.values() if c.key == (channel, pitch)]
        for chord in chords:
            self._close(chord, t)

    def close_all(self, t: float | None = None) -> None:
        """End every chord now (next melody note, panic, mute, mode switch, shutdown)."""
        with self._lock:
            chords = list(self._open.values())
        for chord in chords:
            self._close(chord, t)

    def forget_melody(self) -> None:
        """Start afresh: the next melody note has step 0 and a first guess (after a mode switch)."""
        self._previous_onset = None
        self._onsets.clear()

    @property
    def sounding(self) -> int:
        with self._lock:
            return len(self._open)

    def _close(self, chord: _Chord, t: float | None) -> None:
        with self._lock:
            chord.closed = True
            self._open.pop(chord.tag, None)
        self.scheduler.cancel(chord.tag, t if t is not None and t <= self.clock() else None)

    # -- worker thread ----------------------------------------------------------------------

    def _voice(self, predictor, chord: _Chord, melody: Melody, t: float, settings: HarmonizeSettings) -> None:
        started = self.clock()
        velocity = int(np.clip(round(melody.velocity * settings.velocity_scale), 1, 127))
        ranks = voice_ranks(settings.voices, settings.placement)
        deferred: list[Callable[[], None]] = []
        sent: list = []
        first: list[float] = []

        def send(rank: int, pitch: int) -> None:
            """Each voice leaves as soon as it is chosen, from this thread (no wake-up to wait for)."""
            with self._lock:
                if chord.closed:
                    return
                self.scheduler.schedule_note(pitch, velocity, settings.channel, t, t + HOLD_LIMIT_S, chord.tag,
                                             wake=False)
            sent.extend(self.scheduler.advance(self.clock()))
            if not first:
                first.append(self.clock())

        holding = getattr(self.scheduler, "holding_log", contextlib.nullcontext)
        try:
            with holding():  # the voices' log lines are written once the chord is out
                placed = voice_chord(predictor, self.voicing, melody, ranks, settings.params, velocity,
                                     primed=getattr(predictor, "primed", True), previous=self._previous_chord,
                                     deferred=deferred, on_voice=send)
                voiced = self.clock()
            self._previous_chord = {0: melody.pitch, **dict(placed)}
        finally:  # the chord's last note reaches the model after its voices left, on every path
            for feed in deferred:
                feed()
            prepare = getattr(predictor, "prepare_next", None)
            if prepare is not None:
                prepare()  # the next melody note's feed then skips its recurrent product
        self.chords += 1
        self.voices_sent += len(placed)
        self._log({"event": "harmonize", "t": t, "pitch": melody.pitch, "step": round(melody.step, 4),
                   "guessed_duration": round(melody.duration, 4), "voices": [p for _, p in placed],
                   "sampled_ms": round((self.clock() - started) * 1000.0, 3), "sent": len(sent),
                   "waited_ms": round((started - t) * 1000.0, 3), "voiced_ms": round((voiced - started) * 1000.0, 3),
                   "first_voice_ms": round((first[0] - started) * 1000.0, 3) if first else None})
