"""No lost MIDI with realtime jackd at stage settings (issue 15's reproducer).

A private ``jackd -R`` (dummy driver, 48 kHz) at 32 and at 64 frames; a real `livegen run` with
``--passthrough``; this process plays a Bach chorale into it, all four voices as chords, with a
unison doubling in every phrase (two players on one pitch), the sustain pedal over every fourth
phrase and active sensing throughout.  Several runs per period.  Every phrase must be answered
exactly once, each ``trigger`` must count exactly the notes played, and every note-on and note-off
must come back through the passthrough: nothing lost between the player and the engine.

Before the fix, livegen's input ran Python (the rtmidi callback, waiting for the GIL) inside
JACK's realtime process cycle; a cycle that overran lost its MIDI, and a lost note-off merged two
phrases into one trigger.  The test is skipped, saying so, where this user may not run realtime
threads (jackd -R needs SCHED_FIFO).

What the host does to JACK, measured on the 2-core VMs this project runs on: a SCHED_FIFO thread
that sleeps 1 ms wakes more than 1 ms late about 0.5 % of the time (up to 4 ms), so the dummy
driver misses 32- and 64-frame deadlines (0.67 and 1.33 ms) in clients that run no Python at
all, and jackd in its default asynchronous mode drops the MIDI of a cycle a client finished
late: 2 of 2,000 messages in some runs, a lost note-off now and then in the chorale runs, on a
quiet machine.  So the two tests split the question:

- the mechanism, against JACK's deadlines (asynchronous mode): an input fed 2,000 messages/s
  beside a thread that holds the GIL.  The callback design lost 87 % of them at 32 frames
  (55-62 % when first measured); polling loses nothing, or a few messages in cycles that jackd
  reports late (XRun), and the test bounds that at 1 % (with two more tries on fresh servers for
  the bursts a held-up machine causes);
- the whole instrument at stage periods, with ``jackd -S`` (synchronous: a cycle waits for
  every client, so a cycle the host holds up comes late instead of losing its MIDI): every
  phrase, note and release accounted for, exactly.  In this mode the callback design lost
  nothing either (it made jackd report 93-123 XRuns a run, polling 1-6), which is why the
  mechanism is tested on its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from daemon_driver import Daemon
from livegen.bench.jack import jack_server, realtime_allowed
from livegen.io.jack_realtime import jack_server_realtime
from livegen.io.ports import InputPort
from midi_probe import MidiProbe, note_offs, note_ons, wait_until

GAP_S = 0.25
ANSWER_NOTES = 2
PHRASES = 12
RUNS = 3
QUARTER_S = 0.16
PEDAL_EVERY = 4
SENSING_S = 0.3
PLAYER, ECHO = 0, 1  # the probe plays on channel 1; --passthrough echoes on channel 2
ANSWER = 0  # the answer's channel (the default preset's channel 1)

pytestmark = pytest.mark.skipif(shutil.which("jackd") is None, reason="jackd is not installed (apt install jackd2)")
needs_realtime = pytest.mark.skipif(not realtime_allowed(), reason="realtime scheduling (SCHED_FIFO) is not allowed "
                                    "here, so jackd -R cannot run: the stage setting is not tested")


def chorale_phrases(count: int) -> list[list[list[int]]]:
    """``count`` phrases of four chords (each a list of pitches, unisons kept) from the four
    voices of BWV 66.6, each phrase with at least one unison doubling."""
    music21 = pytest.importorskip("music21")
    score = music21.corpus.parse("bach/bwv66.6")
    onsets: dict[float, list[int]] = {}
    for part in score.parts:
        for note in part.flatten().notes:
            for pitch in note.pitches:
                onsets.setdefault(float(note.offset), []).append(int(pitch.midi))
    chords = [sorted(onsets[t]) for t in sorted(onsets)]
    phrases = []
    for i in range(count):
        start = (i * 4) % (len(chords) - 4)
        phrase = [list(chord) for chord in chords[start:start + 4]]
        if not any(len(set(chord)) < len(chord) for chord in phrase):
            phrase[0].append(phrase[0][-1])  # the top voice doubled at the unison
        phrases.append(phrase)
    return phrases


@contextmanager
def private_server(period: int = 64, realtime: bool = True, sync: bool = False):
    """A private jackd at ``period`` frames, named in os.environ while it runs (the probe is a
    client of this process)."""
    with jack_server(period=period, realtime=realtime, prefix="livegen-rt", sync=sync) as server:
        saved = {key: os.environ.get(key) for key in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
        os.environ.update({key: server.env[key] for key in saved})
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class Player:
    """Plays phrases into the probe, with active sensing every SENSING_S between messages.

    ``longest_silence``: the longest time inside a phrase with nothing held, as played.  This
    process runs on a busy machine too; when it was held up for most of a gap, the daemon was
    right to hear two phrases, and the run says nothing about livegen."""

    def __init__(self, probe: MidiProbe) -> None:
        self.probe = probe
        self.last_sensing = 0.0
        self.longest_silence = 0.0

    def send(self, message: list[int]) -> None:
        if time.monotonic() - self.last_sensing >= SENSING_S:
            self.last_sensing = self.probe.send([0xFE])
        self.probe.send(message)

    def phrase(self, chords: list[list[int]], pedal: bool) -> int:
        """Play the chords legato-ish; returns the note-ons sent."""
        if pedal:
            self.send([0xB0 | PLAYER, 64, 127])
        released = None
        for chord in chords:
            if released is not None and not pedal:
                self.longest_silence = max(self.longest_silence, time.monotonic() - released)
            for pitch in chord:  # a unison is two note-ons and, later, two note-offs
                self.send([0x90 | PLAYER, pitch, 80])
            time.sleep(QUARTER_S * 0.8)
            for pitch in chord:
                self.send([0x80 | PLAYER, pitch, 0])
            released = time.monotonic()
            time.sleep(QUARTER_S * 0.2)
        if pedal:
            time.sleep(QUARTER_S)
            self.send([0xB0 | PLAYER, 64, 0])
        return sum(map(len, chords))


def answer_done(probe: MidiProbe, answers: int) -> bool:
    messages = [(t, m) for t, m in probe.messages if m[0] & 0x0F == ANSWER]
    return len(note_ons(messages)) >= answers * ANSWER_NOTES and len(note_offs(messages)) >= answers * ANSWER_NOTES


def play_run(server, quick_model, workdir) -> dict:
    """One daemon, PHRASES phrases: what was played, the triggers and the passthrough echo."""
    with MidiProbe() as probe:
        daemon = Daemon(server, probe, quick_model, workdir, "--passthrough", "--gap-ms", f"{GAP_S * 1000:g}",
                        "--length", str(ANSWER_NOTES), "--max-seconds", "5")
        try:
            played = []
            player = Player(probe)
            for i, chords in enumerate(chorale_phrases(PHRASES)):
                played.append(player.phrase(chords, pedal=i % PEDAL_EVERY == PEDAL_EVERY - 1))
                wait_until(lambda: answer_done(probe, i + 1), 10,
                           message=f"the answer to phrase {i + 1} (a lost release merges two phrases)")
                time.sleep(0.05)
            assert daemon.stop()[0] == 0
            assert not daemon.events("jack_not_realtime")
            return {"played": played, "triggers": [e["notes"] for e in daemon.events("trigger")],
                    "echoed": [m for _, m in probe.messages if m[0] & 0x0F == ECHO],
                    "stalled": player.longest_silence > GAP_S * 0.6}
        finally:
            daemon.close()


@needs_realtime
@pytest.mark.parametrize("period", [32, 64])
def test_every_phrase_is_answered_once_with_every_note_at_stage_settings(period, quick_model, tmp_path):
    clean = 0
    for attempt in range(RUNS + 2):  # two spare runs for a player held up by the machine
        workdir = tmp_path / f"run{attempt}"
        workdir.mkdir()
        with private_server(period, sync=True) as server:
            assert server.realtime
            run = play_run(server, quick_model, workdir)
        where = f"run {attempt} at {period} frames"
        if run["stalled"]:
            print(f"{where}: the player was held up inside a phrase; not counted")
            continue
        played = run["played"]
        assert run["triggers"] == played, f"{where}: trigger note counts {run['triggers']}, played {played}"
        assert len(note_ons([(0, m) for m in run["echoed"]])) == sum(played), f"{where}: note-ons lost on the way in"
        assert len(note_offs([(0, m) for m in run["echoed"]])) == sum(played), f"{where}: note-offs lost on the way in"
        clean += 1
        if clean == RUNS:
            return
    pytest.fail(f"only {clean} of {RUNS} runs were played as written (the machine held the player up)")


SENDER = """
import sys, time, rtmidi
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="rt-sender")
out.open_port(out.get_ports().index(sys.argv[1]), "play")
time.sleep(0.2)
for i in range(int(sys.argv[2]) // 2):
    out.send_message([0x90, 36 + i % 48, 90])
    out.send_message([0x80, 36 + i % 48, 0])
    time.sleep(0.001)
time.sleep(0.2)
out.close_port()
out.delete()
"""


def xruns(server) -> int:
    """Cycles jackd reported late so far: its driver woke late, or a client had not finished."""
    return sum("XRun" in line for line in server.log().splitlines())


def flood_the_input(period: int, messages: int) -> tuple[int, int, int]:
    """One try on a fresh server: (messages lost, dropped by livegen's queue, late cycles jackd
    reported), with a thread keeping the GIL busy beside the input the whole time."""
    with private_server(period) as server:
        assert server.realtime
        stop = threading.Event()

        def burn() -> None:
            while not stop.is_set():
                sum(range(20_000))

        with InputPort("jack", "rt-input") as inp:
            hog = threading.Thread(target=burn)
            hog.start()
            try:
                sender = subprocess.run([sys.executable, "-c", SENDER, inp.name, str(messages)], env=server.env,
                                        capture_output=True, text=True, timeout=60)
            finally:
                stop.set()
                hog.join()
            assert sender.returncode == 0, sender.stderr
            deadline = time.monotonic() + 3.0
            while inp.pending < messages and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            return messages - inp.pending, inp.dropped, xruns(server)


@needs_realtime
@pytest.mark.parametrize("period", [32, 64])
def test_the_input_loses_nothing_of_its_own_while_other_threads_hold_the_gil(period):
    """The mechanism alone: a thread that keeps the GIL busy (as the engine and the model do)
    beside livegen's input, fed at 2,000 messages/s by another process, through jackd's default
    asynchronous mode.  With a Python callback in JACK's cycle this lost 87 % of the messages at
    32 frames, every time; polling rtmidi's queue loses none of its own.  What a host that misses
    JACK's deadlines loses (see the module's docstring) comes with XRuns in jackd's log: a few
    messages in most tries, now and then a burst (146 of 2,000 in one CI run, the machine held
    up for some 70 ms).  So a try that lost nothing, or under 1 % with XRuns reported, passes;
    up to two more tries on fresh servers are allowed for a burst; a loss with no XRun fails at
    once."""
    messages, tries = 2000, []
    for _ in range(3):
        lost, dropped, late_cycles = flood_the_input(period, messages)
        assert dropped == 0 and lost >= 0
        assert lost == 0 or late_cycles > 0, f"{lost} of {messages} lost while jackd reported no late cycle"
        tries.append((lost, late_cycles))
        if lost <= messages // 100:
            return
    pytest.fail(f"every try lost over 1 % of {messages} messages: (lost, late cycles reported) {tries}")


@needs_realtime
def test_the_server_mode_is_read_from_libjack():
    with private_server(realtime=True):
        assert jack_server_realtime() is True
    with private_server(realtime=False):
        assert jack_server_realtime() is False
    os.environ["JACK_DEFAULT_SERVER"], saved = "livegen-nobody-here", os.environ.get("JACK_DEFAULT_SERVER")
    try:
        assert jack_server_realtime() is None  # no server: no answer, and none is started
    finally:
        if saved is None:
            os.environ.pop("JACK_DEFAULT_SERVER")
        else:
            os.environ["JACK_DEFAULT_SERVER"] = saved


def test_livegen_warns_once_when_jack_does_not_run_in_realtime_mode(quick_model, tmp_path):
    with private_server(realtime=False) as server, MidiProbe() as probe:
        daemon = Daemon(server, probe, quick_model, tmp_path)
        try:
            probe.play([60, 62])  # playing says nothing more
            time.sleep(0.3)
            assert daemon.stop()[0] == 0
            stderr = daemon.process.stderr.read()
        finally:
            daemon.close()
    warnings = [line for line in stderr.splitlines() if "realtime" in line]
    assert len(warnings) == 1 and "jackd with -R" in warnings[0], stderr
    assert [e["server"] for e in daemon.events("jack_not_realtime")] == [server.name]
