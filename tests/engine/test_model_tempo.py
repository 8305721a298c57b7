"""A running MIDI clock is the model's best tempo estimate: the session passes its beat on."""

import time

import numpy as np
import pytest

from factories import tiny_model
from livegen import midi_bytes as mb
from livegen.engine.session import Session, SessionConfig
from livegen.engine.source import QueueSource
from livegen.io.sinks import MemorySink
from livegen.model.stream import NoteStream


class BeatRecorder:
    """A predictor that remembers the beats it is told (answers a fixed note)."""

    def __init__(self):
        self.beats: list[float | None] = []

    def feed(self, rows):
        pass

    def fork(self):
        return self

    def sample(self, params, *, chord=()):
        return np.array([60.0, 0.1, 0.08, 90.0])

    def set_beat(self, seconds):
        self.beats.append(seconds)


def send_clock(source, bpm: float, seconds: float) -> None:
    """Ticks stamped at exact times (the queue carries its own time stamps), as a clock's would be."""
    tick = 60.0 / bpm / 24
    start = time.monotonic()
    source.put([mb.START], start)
    for i in range(int(seconds / tick)):
        due = start + i * tick
        time.sleep(max(0.0, due - time.monotonic()))
        source.put([mb.TIMING_CLOCK], due)


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_the_clock_beat_reaches_the_model_and_leaves_when_the_clock_stops():
    source, predictor = QueueSource(), BeatRecorder()
    with Session(source, predictor, MemorySink(), SessionConfig(gap_s=0.2, length=2)):
        send_clock(source, 100.0, 1.0)
        assert wait_until(lambda: predictor.beats and predictor.beats[-1] is not None)
        assert predictor.beats[-1] == pytest.approx(0.6, rel=0.03)
        source.put([mb.STOP])
        assert wait_until(lambda: predictor.beats[-1] is None, timeout=10)


def test_a_real_stream_snaps_its_unit_to_the_clock():
    source, stream = QueueSource(), NoteStream(tiny_model(), seed=1)
    with Session(source, stream, MemorySink(), SessionConfig(gap_s=0.5, length=2)):
        send_clock(source, 120.0, 0.8)
        assert wait_until(lambda: stream.tempo.beat is not None)
        assert stream.tempo.beat == pytest.approx(0.5, rel=0.03)
