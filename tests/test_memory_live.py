"""Session memory through the real daemon: JACK ports, `livegen run` processes, the memory file.

A player repeats a motif over several phrases; with ``--memory 0.7`` the answers reuse its
interval patterns measurably more than with ``--memory 0``.  The memory file written on exit
holds exactly the notes the player played (never an answer), grows across sessions, and is
cleared by ``--memory-reset`` and by the preset's reset CC; a bad file is refused in one line.
"""

import json
import subprocess
import sys
import time

import numpy as np

from daemon_driver import Daemon, wait
from livegen.model.memory import SessionMemory
from livegen.train.session_eval import PATTERN, _grams
from midi_probe import MidiProbe, note_ons, unmatched

MOTIF = [60, 64, 62, 67, 65, 60, 69]  # leaps an untrained model would rarely string together
PHRASES = 5
LENGTH = 14


def play_phrases(d: Daemon, phrases: int, pitches=MOTIF) -> list[list[int]]:
    """Play ``pitches`` ``phrases`` times, each after the previous answer ended; the answers' pitches
    as livegen sent them to its JACK port (its log: an overloaded dummy JACK may drop a cycle)."""
    answers = []
    for i in range(phrases):
        done, responded = len(events(d, "note_on")), len(events(d, "respond"))
        d.probe.play(pitches, hold=0.09, rest=0.03)  # steps of 0.12 s, the quick model's own
        assert wait(lambda: len(events(d, "respond")) == responded + 1, timeout=15), (i, events(d, "trigger"))
        assert wait(lambda: len(events(d, "note_on")) - done == LENGTH, timeout=20), (i, events(d, "error"))
        answers.append([e["pitch"] for e in events(d, "note_on")[done:]])
        wait(lambda: not unmatched(d.probe.messages), timeout=3)  # (closing notes is test_stuck_notes.py's job)
    assert note_ons(d.probe.messages)  # the answers came out of the port
    return answers


def events(d: Daemon, kind: str) -> list[dict]:
    """The daemon's log so far, without a last line it is still writing."""
    out = []
    for line in d.log_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            break
        if record["event"] == kind:
            out.append(record)
    return out


def reuse(answers: list[list[int]], pitches=MOTIF) -> float:
    """Share of the answers' 4-note interval patterns found in the motif played over and over."""
    played = np.diff(pitches * 3).tolist()
    seen = set(_grams(played, PATTERN))
    grams = [g for answer in answers for g in _grams(np.diff(answer).tolist(), PATTERN)]
    return sum(g in seen for g in grams) / len(grams)


def start(jack_server, model, tmp_path, name, *flags) -> Daemon:
    folder = tmp_path / name
    folder.mkdir()
    d = Daemon(jack_server, MidiProbe(f"probe-{name}"), model, folder, "--length", str(LENGTH),
               "--gap-ms", "250", "--temperature", "1.0", *flags)
    time.sleep(0.5)  # a loaded machine takes a while to settle a fresh client's connections
    return d


def test_answers_reuse_a_repeated_motif_with_memory_and_not_without(jack_server, quick_model, tmp_path):
    measured = {}
    for weight in ("0", "0.7"):
        d = start(jack_server, quick_model, tmp_path, f"w{weight}", "--memory", weight)
        try:
            answers = play_phrases(d, PHRASES)
            assert {r["memory"] for r in d.events("respond")} == {float(weight)}
        finally:
            d.close()
        # the first answer comes after one hearing; the later ones after the motif was repeated
        measured[weight] = reuse(answers[1:])
    assert measured["0.7"] >= measured["0"] + 0.3, measured
    assert measured["0.7"] >= 0.5, measured


def test_the_file_holds_only_the_players_notes_grows_and_resets(jack_server, quick_model, tmp_path):
    path = tmp_path / "me.mem"
    for run, (flags, phrases, expected) in enumerate([((), 2, 14), ((), 1, 21), (("--memory-reset",), 1, 7)]):
        d = start(jack_server, quick_model, tmp_path, f"run{run}", "--memory", "0.7", "--memory-file", str(path), *flags)
        try:
            play_phrases(d, phrases)  # each phrase: 7 player notes and a 14-note answer
            code, _ = d.stop()
            assert code == 0
        finally:
            d.close()
        memory = SessionMemory.load(path)
        assert memory.notes_seen == expected, (run, memory.notes_seen)


def test_the_reset_cc_clears_the_memory(jack_server, quick_model, tmp_path):
    path = tmp_path / "me.mem"
    d = start(jack_server, quick_model, tmp_path, "cc", "--preset", "recall", "--memory-file", str(path))
    try:
        play_phrases(d, 2)
        d.probe.send([0xB0, 30, 127])  # recall's memory_reset CC
        assert wait(lambda: d.events("memory_reset"), timeout=5)
        play_phrases(d, 1, MOTIF[:4])
        d.probe.send([0xB0, 29, 0])  # recall's memory knob: to 0
        assert wait(lambda: any(e["name"] == "memory" for e in d.events("control")), timeout=5)
        assert d.stop()[0] == 0
    finally:
        d.close()
    assert SessionMemory.load(path).notes_seen == 4
    assert [e["value"] for e in d.events("control") if e["name"] == "memory"] == [0.0]
    assert d.events("respond")[0]["memory"] == 0.6  # recall's weight


def test_a_bad_memory_file_is_refused_in_one_line(quick_model, tmp_path):
    for content in (b"", b"\x1f\x8b\x08\x00broken", b"MThd\x00\x00\x00\x06\x00\x00"):
        path = tmp_path / "bad.mem"
        path.write_bytes(content)
        result = subprocess.run([sys.executable, "-m", "livegen", "run", "--model", str(quick_model), "--no-synth",
                                 "--memory-file", str(path)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and "memory" in lines[0], lines
        assert path.read_bytes() == content  # never overwritten
