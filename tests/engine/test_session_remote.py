"""The session's two doors for OSC and the view, in-process: ``command`` (a change applied by
the engine thread as a knob's) and ``observers`` (every record, player notes and state changes)."""

from __future__ import annotations

import time

import numpy as np

from livegen import midi_bytes as mb
from livegen.engine.session import Session, SessionConfig
from livegen.engine.source import QueueSource
from livegen.io.sinks import MemorySink
from livegen.remote import Remote


class Line:
    """Answers with a rising line, 0.1 s apart."""

    def __init__(self):
        self.count = 0

    def feed(self, rows):
        pass

    def fork(self):
        return self

    def sample(self, params, *, chord=()):
        self.count += 1
        return np.array([60 + self.count % 12, 0.1, 0.08, 90.0])


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def play(source, pitches):
    for pitch in pitches:
        source.put(mb.note_on(0, pitch, 90))
        time.sleep(0.03)
        source.put(mb.note_off(0, pitch))
        time.sleep(0.01)


def test_commands_take_the_knob_path_and_observers_see_every_note_and_state():
    source, sink, log, seen = QueueSource(), MemorySink(), [], []
    session = Session(source, Line(), sink, SessionConfig(gap_s=0.1, length=3), log=log.append)
    session.observers.append(seen.append)
    session.enable_commands()
    with session:
        session.command("temperature", 1.7)
        session.command("top_p", 0.5)
        assert wait_until(lambda: len([r for r in log if r["event"] == "control"]) == 2)
        play(source, [60, 62])
        assert wait_until(lambda: len([r for r in seen if r["event"] == "note_off" and "who" not in r]) == 3)
        assert wait_until(lambda: [r["state"] for r in seen if r["event"] == "state"][-1:] == ["idle"])
    respond = next(r for r in log if r["event"] == "respond")
    assert (respond["temperature"], respond["top_p"]) == (1.7, 0.5)
    player = [(r["event"], r["pitch"]) for r in seen if r.get("who") == "player"]
    assert player == [("note_on", 60), ("note_off", 60), ("note_on", 62), ("note_off", 62)]
    assert [r for r in seen if r["event"] == "respond"] == [respond]  # log records reach observers too
    states = [r["state"] for r in seen if r["event"] == "state"]
    assert states[:2] == ["idle", "listening"] and "playing" in states and states[-1] == "idle"
    assert not [r for r in log if r["event"] == "state" or r.get("who")]  # the log keeps its own events only


def test_a_panic_command_silences_at_once_and_end_call_ends_a_held_phrase():
    source, sink, log = QueueSource(), MemorySink(), []
    session = Session(source, Line(), sink, SessionConfig(gap_s=0.1, length=500, max_seconds=60.0), log=log.append)
    session.enable_commands()
    with session:
        play(source, [60])
        assert wait_until(lambda: len([e for e in sink.events if e[0] == "note_on"]) >= 2)
        pressed = time.monotonic()
        session.command("panic")
        assert wait_until(lambda: mb.control_change(0, mb.CC_ALL_NOTES_OFF, 0) in sink.messages, timeout=1)
        took = time.monotonic() - pressed
        assert not session.scheduler.busy
        source.put(mb.note_on(0, 64, 90))  # held: no gap can end this phrase
        time.sleep(0.3)
        assert len([r for r in log if r["event"] == "trigger"]) == 1
        session.command("end_call")
        assert wait_until(lambda: len([r for r in log if r["event"] == "trigger"]) == 2)
        source.put(mb.note_off(0, 64))
    assert took < 0.5  # COMMAND_POLL_S is 5 ms; bound wide for a loaded machine (the JACK test holds 20 ms)
    assert [r for r in log if r["event"] == "trigger"][-1]["reason"] == "end_call"


def test_remote_loads_presets_by_name_only_and_checks_the_views_keys():
    source, sink = QueueSource(), MemorySink()
    session = Session(source, Line(), sink, SessionConfig())
    loaded = []
    remote = Remote(session, lambda name: loaded.append(name) or SessionConfig(name=name), lambda r: None, lambda t: None)
    remote.apply_args("preset", ["ballad"])
    for bad in (["../x.toml"], ["/etc/passwd"], [3]):
        try:
            remote.apply_args("preset", bad)
        except ValueError:
            continue
        raise AssertionError(f"preset {bad} accepted")
    for name, args in (("temperature", [99]), ("nothing", [])):
        try:
            remote.apply_args(name, args)
        except ValueError:
            continue
        raise AssertionError(f"{name} {args} accepted")
    remote.apply_args("panic", [0])  # a release: nothing
    assert loaded == ["ballad"]
    commands = []
    while (item := session._commands.get_nowait() if not session._commands.empty() else None) is not None:
        commands.append(item[:2])
    assert [(name, getattr(value, "name", value)) for name, value in commands] == [("preset", "ballad")]
