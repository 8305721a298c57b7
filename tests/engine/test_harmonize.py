"""Harmonize mode: voice placement (pure), the Harmonizer on a manual clock, the session in-process.

The JACK test (tests/test_harmonize_jack.py) plays through real ports; here the rules are held
one by one: windows per voice rank, no doubling, the model's chord order, closing with the
note, the next note, the pedal, panic, mute and mode switches.
"""

import random
import time

import numpy as np
import pytest

from factories import tiny_model
from livegen import midi_bytes as mb
from livegen.engine.control import ControlMap
from livegen.engine.harmonize import (
    FIRST_GUESS_S,
    Harmonizer,
    HarmonizeSettings,
    Melody,
    ModelVoicing,
    REACH,
    generation_order,
    guess_duration,
    parallels_with,
    voice_chord,
    voice_ranks,
    voice_window,
)
from livegen.engine.scheduler import Scheduler
from livegen.engine.session import Session, SessionConfig
from livegen.engine.source import QueueSource
from livegen.io.sinks import MemorySink
from livegen.model.params import SamplingParams
from livegen.model.stream import NoteStream
from livegen.model.voicing import chord_order_of
from livegen.train.harmony import voicing_for

PARAMS = SamplingParams(temperature=1.0, pitch_low=21, pitch_high=108)


class RandomPredictor:
    """Feeds are recorded; samples are uniform over the pitch range (any pitch the window allows)."""

    def __init__(self, seed=0):
        self.fed = []
        self.rng = random.Random(seed)
        self.primed = True

    def feed(self, rows):
        self.fed.extend(np.asarray(rows, dtype=float).reshape(-1, 4).tolist())

    def fork(self):
        return self

    def sample(self, params, *, chord=()):
        choices = [p for p in range(params.pitch_low, params.pitch_high + 1) if p not in chord] or [params.pitch_low]
        return np.array([self.rng.choice(choices), 0.0, 0.5, 80.0])


# --- placement ----------------------------------------------------------------------------------


def test_ranks_below_above_and_around():
    assert voice_ranks(3, "below") == [-1, -2, -3]
    assert voice_ranks(2, "above") == [1, 2]
    assert voice_ranks(3, "around") == [-1, 1, -2]
    assert voice_ranks(1, "around") == [-1]
    with pytest.raises(ValueError, match="voices"):
        voice_ranks(0, "below")
    with pytest.raises(ValueError, match="harmonize"):
        voice_ranks(2, "sideways")


def test_generation_order_follows_the_models_chord_order():
    assert generation_order([-1, -2, -3], "ascending") == [-3, -2, -1, 0]
    assert generation_order([-1, -2, -3], "descending") == [0, -1, -2, -3]
    assert generation_order([-1, 1], "descending") == [1, 0, -1]


def test_each_rank_has_its_window_and_stays_between_its_neighbours():
    assert voice_window(72, -1, {0: 72}) == (72 - REACH, 71)
    assert voice_window(72, -3, {0: 72}) == (72 - 3 * REACH, 65)  # a third of room for each voice above it
    assert voice_window(72, 2, {0: 72}) == (76, 72 + 2 * REACH)
    assert voice_window(72, -2, {0: 72, -1: 67, -3: 55}) == (56, 66)
    assert voice_window(72, -1, {0: 72}, low=40, high=70) == (60, 70)
    low, high = voice_window(2, -3, {0: 2})  # the bottom of the keyboard: no room
    assert low > high


@pytest.mark.parametrize("placement", ["below", "above", "around"])
@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_voices_never_double_the_melody_nor_each_other_and_keep_their_side(placement, order):
    predictor = RandomPredictor(seed=hash((placement, order)) % 1000)
    voicing = ModelVoicing(order)
    for melody in range(30, 100, 3):
        ranks = voice_ranks(3, placement)
        placed = voice_chord(predictor, voicing, Melody(melody, 0.4, 0.5, 90), ranks, PARAMS, 80)
        pitches = [p for _, p in placed]
        assert melody not in pitches and len(set(pitches)) == len(pitches)
        for rank, pitch in placed:
            assert (pitch < melody) if rank < 0 else (pitch > melody)
            assert abs(pitch - melody) <= REACH * abs(rank)
        by_rank = sorted(placed)  # rank order is pitch order
        assert [p for _, p in by_rank] == sorted(pitches)


def test_the_chord_is_fed_in_the_models_order_with_the_step_on_its_first_note():
    for order, first_is_melody in (("descending", True), ("ascending", False)):
        predictor = RandomPredictor()
        placed = voice_chord(predictor, ModelVoicing(order), Melody(72, 0.4, 0.3, 90), [-1, -2], PARAMS, 70)
        fed = predictor.fed
        assert len(fed) == 3 and [row[1] for row in fed] == [0.4, 0.0, 0.0]
        assert (fed[0][0] == 72) is first_is_melody
        assert [row[0] for row in fed] == ([72, *[p for _, p in placed]] if first_is_melody else [*[p for _, p in placed], 72])
        assert all(row[2] == 0.3 for row in fed)  # the guessed duration, voices too
        melody_row = next(row for row in fed if row[0] == 72)
        assert melody_row[3] == 90 and all(row[3] == 70 for row in fed if row[0] != 72)


def test_an_unprimed_model_reads_the_melody_first():
    predictor = RandomPredictor()
    voice_chord(predictor, ModelVoicing("ascending"), Melody(72, 0.0, 0.5, 90), [-1, -2], PARAMS, 80, primed=False)
    assert predictor.fed[0][0] == 72


def test_voices_picked_before_the_melody_is_heard_are_consonant_with_it_and_make_no_parallels():
    predictor = RandomPredictor(seed=3)
    for melody in range(50, 90):
        placed = voice_chord(predictor, ModelVoicing("ascending"), Melody(melody, 0.5, 0.5, 90), [-1, -2, -3], PARAMS, 80)
        lowest = min(p for _, p in placed)
        for _, pitch in placed:
            interval = (melody - pitch) % 12
            assert interval in {0, 3, 4, 7, 8, 9} or (interval == 5 and pitch != lowest)
    # parallels: melody 72 -> 74 over a voice a fifth below (65): 67 would be a parallel fifth
    assert parallels_with(-1, [66, 67, 68], {0: 74}, {0: 72, -1: 65}) == [67]
    assert parallels_with(-1, [62, 60], {0: 74}, {0: 72, -1: 60}) == [62]  # octaves
    assert parallels_with(-1, [67], {0: 74}, {0: 72, -1: 67}) == []  # contrary or oblique motion is fine


def test_guessed_duration_is_the_previous_notes_clamped():
    assert guess_duration(None) == FIRST_GUESS_S
    assert guess_duration(0.3) == 0.3
    assert guess_duration(0.001) == 0.05 and guess_duration(30.0) == 2.0


def test_chord_order_comes_from_the_model_config_and_defaults_to_ascending():
    model = tiny_model()
    assert chord_order_of(model) == "ascending"

    class Tokens:
        chord_order = "descending"

    class Config:
        tokens = Tokens()

    class Model:
        config = Config()

    assert chord_order_of(Model()) == "descending"
    Tokens.chord_order = "sideways"
    with pytest.raises(ValueError, match="chord_order"):
        chord_order_of(Model())


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_a_real_model_voices_chords_within_the_windows(order):
    stream = NoteStream(tiny_model(), seed=1)
    voicing = ModelVoicing(order, voicing_for(stream).sample)
    primed = False
    for i, melody in enumerate([67, 69, 71, 72, 74, 72, 71, 69, 67]):
        placed = voice_chord(stream, voicing, Melody(melody, 0.0 if i == 0 else 0.4, 0.4, 80), [-1, -2, -3],
                             PARAMS, 80, primed=primed)
        primed = True
        pitches = [p for _, p in placed]
        # a voice may be left out when no consonant pitch is left in its window (ascending order)
        assert 1 <= len(placed) <= 3 and len(set(pitches)) == len(pitches) and all(p < melody for p in pitches)


# --- the Harmonizer on a manual clock ----------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class InlineWorker:
    """Runs jobs when told to (``run``), so a test can close a chord before its job runs."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.jobs = []
        self.fed = []

    def call(self, job):
        self.jobs.append(job)

    def feed(self, rows):
        self.fed.append(rows)

    def run(self):
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job(self.predictor)


def harmonizer():
    clock = Clock()
    sink = MemorySink(clock)
    scheduler = Scheduler(sink, clock=clock)
    worker = InlineWorker(RandomPredictor())
    log = []
    return Harmonizer(scheduler, worker, ModelVoicing("descending"), clock=clock, log=log.append), sink, worker, clock, log


SETTINGS = HarmonizeSettings(voices=3, placement="below", params=PARAMS, channel=2, velocity_scale=0.5)


def test_voices_sound_at_the_note_on_and_end_with_the_note():
    h, sink, worker, clock, log = harmonizer()
    h.note_on(72, 100, 0, clock.now, SETTINGS)
    worker.run()
    ons = [e for e in sink.events if e[0] == "note_on"]
    assert len(ons) == 3 and all(e[1] == 2 and e[3] == 50 for e in ons)  # answer channel, scaled touch
    assert all(e[4] == clock.now for e in ons)  # sent by the job itself, no scheduler wake-up
    clock.now += 0.4
    h.note_off(0, 72, clock.now)
    offs = [e for e in sink.events if e[0] == "note_off"]
    assert sorted(e[2] for e in offs) == sorted(e[2] for e in ons) and all(e[3] == clock.now for e in offs)
    assert h.sounding == 0 and not h.scheduler.sounding
    assert log[-1]["event"] == "harmonize" and log[-1]["guessed_duration"] == FIRST_GUESS_S


def test_each_voice_leaves_before_the_model_is_fed_it_and_every_note_is_still_fed():
    """Each voice is sent as soon as it is chosen, before the model hears it and before the next
    voice is sampled (the first voice waits only for the melody's feed and one draw); the chord's
    last feed comes after every voice left, then the next note's feed is prepared; the notes fed
    are the same as without deferring."""
    h, sink, worker, clock, log = harmonizer()
    predictor = worker.predictor
    events = []
    predictor.feed = lambda rows: events.append(("feed", len(sink.events)))
    predictor.prepare_next = lambda: events.append(("prepare", len(sink.events)))
    h.note_on(72, 100, 0, clock.now, SETTINGS)
    worker.run()
    voices_sent = len([e for e in sink.events if e[0] == "note_on"])
    assert voices_sent == 3
    assert [kind for kind, _ in events] == ["feed"] * 4 + ["prepare"]  # the melody and three voices
    assert [sent for _, sent in events[:4]] == [0, 1, 2, 3]  # the melody, then each voice after it left
    assert events[4][1] == voices_sent
    assert log[-1]["first_voice_ms"] is not None and log[-1]["sent"] == 3

    deferred = []
    direct, later = RandomPredictor(seed=3), RandomPredictor(seed=3)
    melody = Melody(67, 0.5, 0.4, 80)
    placed = voice_chord(direct, ModelVoicing("descending"), melody, [-1, -2, -3], PARAMS, 70)
    placed_later = voice_chord(later, ModelVoicing("descending"), melody, [-1, -2, -3], PARAMS, 70, deferred=deferred)
    assert placed == placed_later and len(deferred) == 1
    assert later.fed == direct.fed[:-1]
    deferred[0]()
    assert later.fed == direct.fed


def test_the_next_melody_note_ends_the_previous_voices_and_its_length_is_the_next_guess():
    h, sink, worker, clock, log = harmonizer()
    h.note_on(72, 100, 0, clock.now, SETTINGS)
    worker.run()
    clock.now += 0.3
    h.note_off(0, 72, clock.now)
    clock.now += 0.1
    h.note_on(74, 100, 0, clock.now, SETTINGS)  # legato: 76 next starts before 74 ends
    worker.run()
    first_voices = {e[2] for e in sink.events if e[0] == "note_on"} - set()
    clock.now += 0.2
    h.note_on(76, 100, 0, clock.now, SETTINGS)
    assert not any(e[0] == "note_on" and e[4] == clock.now for e in sink.events)  # not yet voiced
    sounding = {pitch for _, pitch in h.scheduler.sounding}
    assert not sounding, "the 74's voices ended at the 76's note-on"
    worker.run()
    assert log[-1]["step"] == pytest.approx(0.2) and log[-2]["guessed_duration"] == pytest.approx(0.3)
    assert first_voices


def test_a_chord_closed_before_its_job_ran_is_never_heard():
    h, sink, worker, clock, _ = harmonizer()
    h.note_on(72, 100, 0, clock.now, SETTINGS)
    h.note_off(0, 72, clock.now + 0.001)  # a very short note: released before the worker got to it
    worker.run()
    assert not [e for e in sink.events if e[0] == "note_on"]
    assert len(worker.predictor.fed) == 4, "the model still heard the melody and its voices"


def test_panic_style_close_all_ends_every_voice_and_muted_notes_are_fed_without_voices():
    h, sink, worker, clock, _ = harmonizer()
    h.note_on(72, 100, 0, clock.now, SETTINGS)
    worker.run()
    h.close_all()
    assert not h.scheduler.sounding
    h.note_on(74, 100, 0, clock.now + 0.5, SETTINGS, muted=True)
    worker.run()
    assert len([e for e in sink.events if e[0] == "note_on"]) == 3
    assert worker.fed and worker.fed[-1][0][0] == 74


# --- the session, in-process with real threads ---------------------------------------------------


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def sounding(sink, channel):
    on = {}
    for e in sink.events:
        if e[0] == "note_on" and e[1] == channel:
            on[e[2]] = on.get(e[2], 0) + 1
        elif e[0] == "note_off" and e[1] == channel and on.get(e[2]):
            on[e[2]] -= 1
        elif e[0] == "control" and e[1] == channel and e[2] == mb.CC_ALL_NOTES_OFF:
            on.clear()
    return {p for p, n in on.items() if n}


def session(mode="harmonize", **config):
    source, sink, log = QueueSource(), MemorySink(), []
    controls = ControlMap(mode=24, panic=25, mute=26)
    cfg = SessionConfig(mode=mode, channel=2, gap_s=0.15, length=4, controls=controls, **config)
    stream = NoteStream(tiny_model(), seed=2)
    return Session(source, stream, sink, cfg, log=log.append, voicing=voicing_for(stream)), source, sink, log


def test_session_harmonizes_each_note_and_never_answers_a_phrase():
    s, source, sink, log = session()
    with s:
        for pitch in (67, 69, 71):
            source.put(mb.note_on(0, pitch, 90))
            assert wait_until(lambda: len(sounding(sink, 2)) == 3)
            assert all(p < pitch for p in sounding(sink, 2))
            time.sleep(0.05)
            source.put(mb.note_off(0, pitch))
            assert wait_until(lambda: not sounding(sink, 2))
        time.sleep(0.4)  # past the gap: harmonize mode answers no phrase
    assert not [r for r in log if r["event"] == "respond"]
    assert len([r for r in log if r["event"] == "harmonize"]) == 3


def test_the_sustain_pedal_holds_the_voices_until_it_is_released():
    s, source, sink, _ = session()
    with s:
        source.put(mb.control_change(0, mb.CC_SUSTAIN, 127))
        source.put(mb.note_on(0, 72, 90))
        assert wait_until(lambda: len(sounding(sink, 2)) == 3)
        source.put(mb.note_off(0, 72))
        time.sleep(0.2)
        assert len(sounding(sink, 2)) == 3, "the pedal holds the note, and so its voices"
        source.put(mb.control_change(0, mb.CC_SUSTAIN, 0))
        assert wait_until(lambda: not sounding(sink, 2))


@pytest.mark.parametrize("action", ["mode-away", "panic", "mute"])
def test_mode_switch_panic_and_mute_mid_note_leave_nothing_sounding(action):
    s, source, sink, _ = session()
    with s:
        source.put(mb.note_on(0, 72, 90))
        assert wait_until(lambda: len(sounding(sink, 2)) == 3)
        message = {"mode-away": mb.control_change(0, 24, 0), "panic": mb.control_change(0, 25, 127),
                   "mute": mb.control_change(0, 26, 127)}[action]
        source.put(message)
        assert wait_until(lambda: not sounding(sink, 2))
        assert s.harmonizer.sounding == 0
        source.put(mb.note_off(0, 72))
        if action == "mute":
            source.put(mb.note_on(0, 74, 90))
            time.sleep(0.2)
            assert not sounding(sink, 2), "muted: no voices"
            source.put(mb.note_off(0, 74))


def test_the_input_is_read_urgently_only_while_harmonizing():
    """A polled port is marked urgent in harmonize mode (each note-on is answered at once), and
    no longer once the mode knob leaves it."""
    s, source, sink, _ = session()
    assert not hasattr(source, "urgent")  # a source that does not poll is left alone
    source.urgent = False
    s._pace_input()
    assert source.urgent is True
    with s:
        source.put(mb.control_change(0, 24, 0))  # the mode knob's bottom: call-response
        assert wait_until(lambda: s.config.mode == "call-response" and source.urgent is False)
        source.put(mb.control_change(0, 24, 127))
        assert wait_until(lambda: s.config.mode == "harmonize" and source.urgent is True)


def test_switching_into_harmonize_stops_the_answer_playing():
    s, source, sink, _ = session(mode="call-response", max_seconds=20.0)
    with s:
        source.put(mb.note_on(0, 60, 90))
        time.sleep(0.03)
        source.put(mb.note_off(0, 60))
        assert wait_until(lambda: sounding(sink, 2), timeout=10)  # the answer plays
        source.put(mb.control_change(0, 24, 127))  # the mode knob's top quarter: harmonize
        assert wait_until(lambda: not sounding(sink, 2) and not s.scheduler.busy)
        assert s.config.mode == "harmonize"


def test_stop_closes_voices_still_held():
    s, source, sink, _ = session()
    s.start()
    source.put(mb.note_on(0, 72, 90))
    assert wait_until(lambda: len(sounding(sink, 2)) == 3)
    s.stop()
    assert not sounding(sink, 2)
