"""Garbage on the wire: whatever bytes arrive, the engine never raises and never sticks a note.

rtmidi hands over whole messages, but a broken driver, a bad cable or rtmidi's own JACK input
(which glues everything after an unterminated sysex into one "message") can deliver anything.
Here a byte stream is cut into arbitrary chunks, each delivered as one "message", so a message
may be split, several may come in one, with running status, realtime bytes inside them,
truncated messages, undefined status bytes, sysex without end, huge sysex.

- The assembler must read a meaningful performance hidden in such noise exactly as it reads the
  clean messages one by one (the MIDI 1.0 receiver rules, livegen.midi_bytes.StreamParser).
- The real Session (engine, worker and scheduler threads) fed pure garbage must raise nothing,
  and after a clean reset (sustain up, all notes off, controls to known values) answer the next
  phrase and have closed every note it opened, passthrough included.
- Through a real JACK port into `livegen run`: the daemon survives garbage and still answers,
  after the garbage, not in the middle of the next phrase (an unterminated sysex makes rtmidi's
  JACK input swallow messages and their time: the input's arrival stamps must not fall behind).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon_driver import wait
from livegen import midi_bytes as mb
from livegen.engine.assembler import ControlChanged, NoteAssembler, NoteCompleted, NoteStarted, PedalChanged, ProgramChanged
from livegen.engine.control import ControlMap
from livegen.engine.session import Session, SessionConfig
from livegen.engine.source import QueueSource
from livegen.io.sinks import MemorySink
from midi_probe import note_ons, unmatched

# --- a performance hidden in noise --------------------------------------------------------------

CHANNELS = (0, 1, 9)
PITCHES = (0, 60, 61, 64, 127)


@st.composite
def performances(draw) -> list[list[int]]:
    """Clean messages, balanced: every key pressed is released and every pedal lifted at the end."""
    held: set[tuple[int, int]] = set()
    pedals: set[int] = set()
    messages: list[list[int]] = []
    for _ in range(draw(st.integers(0, 30))):
        channel = draw(st.sampled_from(CHANNELS))
        action = draw(st.sampled_from(["press", "press", "release", "pedal", "cc", "other"]))
        if action == "press":
            pitch = draw(st.sampled_from(PITCHES))
            messages.append(mb.note_on(channel, pitch, draw(st.integers(1, 127))))
            held.add((channel, pitch))
        elif action == "release" and held:
            channel, pitch = draw(st.sampled_from(sorted(held)))
            held.discard((channel, pitch))
            velocity_zero = draw(st.booleans())  # a note-on with velocity 0 is a note-off
            messages.append(mb.note_on(channel, pitch, 0) if velocity_zero else mb.note_off(channel, pitch))
        elif action == "pedal":
            down = channel not in pedals
            (pedals.add if down else pedals.discard)(channel)
            messages.append(mb.control_change(channel, mb.CC_SUSTAIN, 127 if down else 0))
        elif action == "cc":
            messages.append(mb.control_change(channel, draw(st.sampled_from([1, 7, 21, 74])), draw(st.integers(0, 127))))
        else:
            messages.append(draw(st.sampled_from([
                [mb.PITCH_BEND | channel, 0, 64], [mb.CHANNEL_AFTERTOUCH | channel, 5],
                [mb.POLY_AFTERTOUCH | channel, 60, 9], mb.program_change(channel, 3)])))
    messages += [mb.note_off(c, p) for c, p in sorted(held)]
    messages += [mb.control_change(c, mb.CC_SUSTAIN, 0) for c in sorted(pedals)]
    return messages


REALTIME = [mb.TIMING_CLOCK, mb.ACTIVE_SENSING, 0xF9, 0xFD]  # F9/FD: undefined, to be ignored

# Noise that may come between messages.  Each clears the running status or leaves a message
# unfinished, so the next message is written with its status byte.
NOISE = st.one_of(
    st.sampled_from([[0xF4], [0xF5], [mb.SYSEX_END], [mb.TUNE_REQUEST], [mb.SONG_SELECT, 3]]),
    st.tuples(st.sampled_from([0xF4, 0xF5]), st.lists(st.integers(0, 127), max_size=4)).map(lambda x: [x[0], *x[1]]),
    st.lists(st.integers(0, 127), max_size=40).map(lambda body: [mb.SYSEX_START, *body, mb.SYSEX_END]),
    st.lists(st.integers(0, 127), max_size=40).map(lambda body: [mb.SYSEX_START, *body]),  # no end
    st.integers(1000, 20_000).map(lambda n: [mb.SYSEX_START, *([0x11] * n), mb.SYSEX_END]),  # huge
    st.sampled_from([[mb.NOTE_ON], [mb.NOTE_ON, 60], [mb.NOTE_OFF | 1, 61], [mb.CONTROL_CHANGE, 64],
                     [mb.PITCH_BEND, 3]]),  # truncated
)


@st.composite
def noisy_streams(draw) -> tuple[list[list[int]], list[list[int]]]:
    """(clean messages, the same performance as noisy bytes cut into arbitrary chunks)."""
    clean = draw(performances())
    stream: list[int] = []
    running: int | None = None
    for message in clean:
        explicit = True
        if draw(st.integers(0, 3)) == 0:
            stream += draw(NOISE)
            running = None
        elif running == message[0]:
            explicit = draw(st.booleans())
        body = message if explicit else message[1:]
        for byte in body:  # realtime bytes may come anywhere, even inside a message
            if draw(st.integers(0, 9)) == 0:
                stream.append(draw(st.sampled_from(REALTIME)))
            stream.append(byte)
        running = message[0]
    stream += draw(st.lists(st.sampled_from(REALTIME), max_size=3))
    cuts = sorted(draw(st.sets(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    return clean, chunks


def timeless(events) -> list[tuple]:
    """Events without their times, realtime ones left out (the noise adds clock ticks)."""
    out = []
    for e in events:
        if isinstance(e, NoteStarted):
            out.append(("on", e.channel, e.pitch, e.velocity))
        elif isinstance(e, NoteCompleted):
            out.append(("done", e.channel, e.note.pitch, e.note.velocity))
        elif isinstance(e, PedalChanged):
            out.append(("pedal", e.channel, e.down))
        elif isinstance(e, ControlChanged):
            out.append(("cc", e.channel, e.control, e.value))
        elif isinstance(e, ProgramChanged):
            out.append(("program", e.channel, e.program))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(noisy_streams())
def test_a_performance_in_noise_cut_anywhere_reads_as_the_clean_one(case):
    clean, chunks = case
    reference = NoteAssembler()
    expected = [e for i, m in enumerate(clean) for e in reference.feed(m, float(i))]
    assembler = NoteAssembler()
    got = [e for i, chunk in enumerate(chunks) for e in assembler.feed(chunk, float(i))]
    # Notes a pedal releases together complete by onset time, and a chunk's messages share one
    # time, so completions are compared as a multiset; everything else in order.
    assert [e for e in timeless(got) if e[0] != "done"] == [e for e in timeless(expected) if e[0] != "done"]
    assert Counter(e for e in timeless(got) if e[0] == "done") == Counter(e for e in timeless(expected) if e[0] == "done")
    assert not assembler.sounding and not assembler.pedal_down  # balanced in, nothing stuck


def test_the_parser_on_the_cases_a_driver_gets_wrong():
    parser = mb.StreamParser()
    assert parser.feed([0x90, 60]) == [] and parser.feed([100, 62, 100]) == [[0x90, 60, 100], [0x90, 62, 100]]
    assert parser.feed([0xF8, 64]) == [[0xF8]]  # realtime inside a running-status message
    assert parser.feed([0]) == [[0x90, 64, 0]]
    assert parser.feed([0xF0, 1, 2, 0x80, 60, 0]) == [[0x80, 60, 0]]  # a status ends a sysex without F7
    assert parser.feed([0xF0, *[5] * 100_000]) == [] and parser.feed([0x7F, 0xF7, 1, 2]) == []  # huge, then stray
    assert parser.feed([0xF5, 60, 0xF1, 3, 0xF6]) == [[0xF1, 3], [0xF6]]
    assert parser.feed(np.array([0xB0, 64, 127])) == [[0xB0, 64, 127]]
    for bad in ([0x90, 60.0, 100], [300], "x", None, 5, [-1]):
        assert parser.feed(bad) == []  # dropped whole, and resets the parser
    assert parser.feed([1, 2]) == []


def test_a_100_kb_sysex_is_skipped_without_buffering_its_body():
    """The body is skipped, not held: what the parser keeps between feeds stays a few bytes (the
    unfinished message), and memory traced while it reads 100 kB stays far below 100 kB."""
    import tracemalloc

    body = bytes([0xF0]) + bytes(i % 0x80 for i in range(100_000))
    for size in (3, 1000):  # small odd chunks, and the size a driver might hand over
        parser = mb.StreamParser()
        parser.feed([0x90, 60, 100])
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for at in range(0, len(body), size):
                assert parser.feed(body[at:at + size]) == []
                assert len(parser._partial) <= 3  # noqa: SLF001 - the only buffer the parser has
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held - baseline < 4_000, f"{held - baseline} bytes still held after a 100 kB sysex in {size}-byte chunks"
        assert peak - baseline < 16_000 + 2 * size, f"peak {peak - baseline} bytes reading a 100 kB sysex"
        assert parser.feed([0xF7, 0x80, 60, 0]) == [[0x80, 60, 0]]  # and it reads on after it


# --- the real engine fed pure garbage -----------------------------------------------------------


class ScriptedPredictor:
    """A rising line, step and duration 20 ms: fast, so each example's answer is quick."""

    def __init__(self) -> None:
        self.count = 0

    def feed(self, rows) -> None:
        pass

    def fork(self) -> "ScriptedPredictor":
        return self

    def sample(self, params, *, chord=()):
        self.count += 1
        return np.array([60 + self.count % 12, 0.02, 0.02, 90.0])


SHIPPED_CONTROLS = ControlMap(temperature=21, length=22, gap=23, mode=24, panic=25, mute=26, end_call=27)
RESET = [
    [mb.SYSEX_END],  # ends a sysex left open
    *[mb.control_change(c, cc, v) for c in range(16) for cc, v in ((mb.CC_SUSTAIN, 0), (mb.CC_ALL_NOTES_OFF, 0))],
    mb.control_change(0, 26, 0), mb.control_change(0, 24, 0), mb.control_change(0, 23, 0), mb.control_change(0, 22, 0),
]
"""Sustain up and all notes off everywhere, unmute, call-response, shortest gap, one-note answers."""

GARBAGE_BYTES = st.lists(
    st.one_of(st.integers(0, 255), st.sampled_from([0x80, 0x90, 0x91, 0xB0, 0xC0, 0xF0, 0xF7, 0xF4, 0xF5, 0xFD]),
              st.sampled_from([0, 60, 64, 21, 22, 23, 24, 25, 26, 27, 123, 127])),
    max_size=300)


@st.composite
def garbage_chunks(draw) -> list[list[int]]:
    stream = draw(GARBAGE_BYTES)
    if draw(st.booleans()):
        stream = [mb.SYSEX_START, *([0x22] * draw(st.integers(1000, 50_000))), *stream]
    cuts = sorted(draw(st.sets(st.integers(0, len(stream)), max_size=30)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(garbage_chunks())
def test_the_engine_survives_garbage_and_answers_the_next_phrase(chunks):
    source, output, echo, log = QueueSource(), MemorySink(), MemorySink(), []
    config = SessionConfig(gap_s=0.05, length=2, max_seconds=2.0, program=None, controls=SHIPPED_CONTROLS,
                           end_call_cc=27, max_listen_s=5.0)
    session = Session(source, ScriptedPredictor(), output, config, passthrough=[echo], log=log.append)
    session.start()
    try:
        for chunk in chunks:
            source.put(chunk)
        for message in RESET:
            source.put(message)
        assert wait_until(lambda: not session.assembler.sounding and not session.assembler.pedal_down)
        assert echo.sounding == frozenset()  # the player's echoed notes were all released
        source.put(mb.note_on(0, 72, 90))
        released = time.monotonic()
        source.put(mb.note_off(0, 72))
        assert wait_until(lambda: any(r["event"] == "trigger" and r["t"] >= released for r in log)), log[-10:]
        answer = [r for r in log if r["event"] == "trigger" and r["t"] >= released][0]
        assert wait_until(lambda: any(r["event"] == "note_on" and r["intended"] >= answer["t"] - 1e-6 for r in log))
        assert wait_until(lambda: not session.scheduler.busy and not output.sounding)
    finally:
        session.stop()
    errors = [r["message"] for r in log if r["event"] == "error" and not r["message"].startswith("program change")]
    assert errors == []  # a program change with no preset to switch to is reported, not an error
    assert not output.sounding and not echo.sounding


# --- through a real JACK port into `livegen run` -------------------------------------------------


def garbage_messages(rng: random.Random, count: int) -> list[list[int]]:
    """What python-rtmidi lets a client send: up to 3 arbitrary bytes, or anything after an F0."""
    out: list[list[int]] = []
    for _ in range(count):
        kind = rng.randrange(6)
        if kind == 0:
            out.append([rng.randrange(256) for _ in range(rng.randint(1, 3))])
        elif kind == 1:
            out.append([rng.choice([0xF4, 0xF5, 0xF9, 0xFD, 0xF7, 0xF1, 0xF6])])
        elif kind == 2:  # a sysex without end: rtmidi glues what follows onto it until an F7
            out.append([mb.SYSEX_START, *[rng.randrange(128) for _ in range(rng.randint(0, 8))]])
        elif kind == 3:  # raw bytes smuggled after an F0: running status, stray status bytes
            out.append([mb.SYSEX_START, *[rng.randrange(256) for _ in range(rng.randint(1, 30))], mb.SYSEX_END])
        elif kind == 4:
            out.append([mb.SYSEX_START, *([0x33] * rng.randint(500, 4000)), mb.SYSEX_END])  # large
        else:
            out.append([mb.NOTE_ON | rng.randrange(16), rng.randrange(128), 0])  # velocity 0
    return out


def test_garbage_through_a_jack_port_leaves_the_daemon_answering(daemon):
    d = daemon("--gap-ms", "200", "--length", "3", "--max-seconds", "5")
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(iter(d.process.stderr.readline, "")), daemon=True).start()
    for message in garbage_messages(random.Random(20240607), 3000):
        d.probe.send(message)
        time.sleep(0.0005)
    time.sleep(0.2)
    for message in RESET[:1] + RESET[1:33:2] + RESET[2:33:2]:  # F7, then sustain up and all notes off
        d.probe.send(message)
        time.sleep(0.002)
    time.sleep(1.0)  # whatever the garbage started is answered and over, or cancelled
    assert d.process.poll() is None, "".join(stderr)[-3000:]
    d.probe.clear()
    released = d.probe.play([60, 64, 67])
    assert wait(lambda: len(note_ons(d.probe.messages)) >= 3 and not unmatched(d.probe.messages), timeout=30), \
        f"no answer after the garbage: {[e for e in d.events() if e['event'] != 'note_off'][-8:]}"
    early = [(round(t - released, 3), m) for t, m in note_ons(d.probe.messages) if t < released]
    assert not early, f"answered in the middle of the phrase (input stamps in the past?): {early}; " \
                      f"{[e for e in d.events() if e['event'] in ('trigger', 'respond', 'barge_in')][-6:]}"
    code, _ = d.stop()
    assert code == 0
    assert not unmatched(d.probe.messages)
    assert "Traceback" not in "".join(stderr), "".join(stderr)[-3000:]
    errors = [e["message"] for e in d.events("error") if not e["message"].startswith("program change")]
    assert errors == []
    kinds = Counter(e["event"] for e in d.events())
    print("garbage through JACK:", dict(kinds))


def test_after_an_unterminated_sysex_phrases_are_still_timed_from_their_real_end(daemon):
    """rtmidi's JACK input swallows everything after an F0 until a message ends in F7, and
    its delta times then miss the swallowed time: stamps built from them must not fall behind."""
    d = daemon("--gap-ms", "200", "--length", "3", "--max-seconds", "5")
    d.probe.play([55])  # something heard before, so the stamps have an anchor
    assert wait(lambda: len(note_ons(d.probe.messages)) >= 3 and not unmatched(d.probe.messages), timeout=30)
    d.probe.clear()
    d.probe.send([mb.SYSEX_START, 0x7D, 1, 2])  # no F7
    d.probe.play([60, 62], hold=0.3, rest=0.3)  # swallowed: nothing is heard, nothing answered
    d.probe.send([mb.SYSEX_END])  # what was swallowed arrives now, glued to the sysex
    assert wait(lambda: len(note_ons(d.probe.messages)) >= 3 and not unmatched(d.probe.messages), timeout=30)
    time.sleep(0.5)
    d.probe.clear()
    released = d.probe.play([64, 65, 67, 69], hold=0.08, rest=0.03)
    assert wait(lambda: len(note_ons(d.probe.messages)) >= 3, timeout=30), "no answer"
    early = [(round(t - released, 3), m) for t, m in note_ons(d.probe.messages) if t < released]
    assert not early, f"answered in the middle of the phrase: {early}; " \
                      f"{[e for e in d.events() if e['event'] in ('trigger', 'respond', 'barge_in')][-6:]}"
    assert note_ons(d.probe.messages)[0][0] >= released + 0.2 - 0.01  # the gap counts from the real release
    assert d.stop()[0] == 0
    assert not unmatched(d.probe.messages)
