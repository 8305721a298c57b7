"""Soak: a long scripted session against a real `livegen run`, watching for slow failures.

Phrases every few seconds, the preset's knobs moving (temperature, length, gap, mode), barge-ins,
panics and a muted phrase now and then, while the daemon's resident memory and thread count are
sampled from /proc.  The first and the last minute are compared: memory, threads and the median
timing (answer note-on arrival - intended, and the scheduler's sent - intended, from --log-json)
must not drift, and the daemon must still be answering.  A JSON summary (p99s and unanswered
phrases included, which on a shared machine say more about the neighbours) is printed at the end.

The long run is not in the default run (pyproject's addopts deselect the ``soak`` marker):

    LIVEGEN_SOAK_SECONDS=600 .venv/bin/pytest -m soak -s tests/test_soak.py

A one-minute soak is in the default run, so CI goes through the same script and assertions
(memory and timing drift over a minute say little; answers, mutes, panics, barge-ins and closed
notes say as much as in ten).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from daemon_driver import wait
from livegen.bench.latency import match_note_ons, summary_ms
from midi_probe import note_ons, unmatched
from proc_stats import proc_status

SECONDS = float(os.environ.get("LIVEGEN_SOAK_SECONDS", "600"))
SHORT_SECONDS = 60.0
"""The default run's soak: about 25 phrases, with every kind of event at least once."""
MISSES_PER_PHRASE = 1 / 50
"""Unanswered phrases allowed (at least one): a note-off JACK loses on an overloaded machine holds
a phrase open until max_listen.  The README's 600 s run answered 326 of 326."""
SAMPLE_EVERY_S = 2.0
RSS_DRIFT_MB = 24.0
LATENESS_DRIFT_MS = 5.0
"""Median scheduler lateness (sent - intended, the daemon's own figure), last vs first window."""
TIMING_DRIFT_MS = 20.0
"""Median arrival - intended at the probe (JACK delivery and the probe's polling included)."""
ANSWER_TIMEOUT_S = 10.0

PRESET = """\
name = "soak"
description = "Short answers and a short gap, with the shipped knob layout, for the soak test."
[listen]
gap_ms = 250.0
max_listen = 20.0
[response]
length = 6
max_seconds = 3.0
[controls]
temperature = 21
length = 22
gap = 23
mode = 24
panic = 25
mute = 26
end_call = 27
temperature_min = 0.5
temperature_max = 1.5
length_min = 2
length_max = 10
gap_min_ms = 150.0
gap_max_ms = 400.0
"""


@dataclass
class Tally:
    phrases: int = 0
    answered: int = 0
    missed: list[float] = field(default_factory=list)  # release times of unanswered phrases
    muted: int = 0
    muted_quiet: int = 0  # muted phrases that rightly got no answer
    barge_ins: int = 0
    panics: int = 0
    panics_silenced: int = 0  # panics followed by CC 123 at the probe within a second
    knob_moves: int = 0


class Sampler:
    """Reads the daemon's VmRSS and Threads every few seconds on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = proc_status(self.pid)
            except AssertionError:
                return
            self.samples.append((time.monotonic(), status.rss_mb, status.threads))
            self._stop.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def window(items, start: float, end: float, t=lambda item: item[0]):
    return [item for item in items if start <= t(item) < end]


def play_phrase(probe, rng: random.Random) -> float:
    base = rng.choice([55, 60, 64, 67])
    pitches = [base + rng.choice([0, 2, 4, 5, 7, 9, 12]) for _ in range(rng.randint(3, 6))]
    return probe.play(pitches, hold=rng.uniform(0.05, 0.12), rest=rng.uniform(0.01, 0.05))


def first_answer(probe, after: float, timeout: float) -> float | None:
    """Arrival time of the first answer note-on after ``after``, or None."""
    found: list[float] = []

    def check():
        found[:] = [t for t, _ in note_ons(probe.messages) if t > after][:1]
        return found

    return found[0] if wait(check, timeout) else None


def move_knobs(probe, rng: random.Random, tally: Tally) -> None:
    for cc in (21, 22, 23):
        probe.send([0xB0, cc, rng.randrange(128)])
    probe.send([0xB0, 24, rng.randrange(85)])  # call-response or overlap, never mirror
    tally.knob_moves += 4


def run_script(probe, seconds: float, rng: random.Random) -> Tally:
    tally = Tally()
    end = time.monotonic() + seconds
    cycle = 0
    while time.monotonic() < end:
        cycle += 1
        move_knobs(probe, rng, tally)
        if cycle % 15 == 7:  # a muted phrase: no answer, then unmute
            probe.send([0xB0, 26, 127])
            tally.muted += 1
            released = play_phrase(probe, rng)
            if first_answer(probe, released, 1.0) is None:
                tally.muted_quiet += 1
            probe.send([0xB0, 26, 0])
            continue
        released = play_phrase(probe, rng)
        tally.phrases += 1
        arrival = first_answer(probe, released, ANSWER_TIMEOUT_S)
        if arrival is None:
            tally.missed.append(released)
            probe.send([0xB0, 123, 0])  # a note-off lost in transit holds the phrase open: let go
            continue
        tally.answered += 1
        if cycle % 4 == 0:  # barge in on the answer: it stops, the new phrase is answered in turn
            released = probe.play([rng.choice([48, 50, 52])], hold=0.05, rest=0.0)
            tally.phrases += 1
            tally.barge_ins += 1
            if first_answer(probe, released, ANSWER_TIMEOUT_S) is None:
                tally.missed.append(released)
                probe.send([0xB0, 123, 0])
            else:
                tally.answered += 1
        elif cycle % 10 == 5:  # panic while it plays
            pressed = probe.send([0xB0, 25, 127])
            probe.send([0xB0, 25, 0])
            tally.panics += 1
            if wait(lambda: [t for t, m in probe.messages if m == [0xB0, 123, 0] and t >= pressed], timeout=1.0):
                tally.panics_silenced += 1
        time.sleep(rng.uniform(0.8, 2.0))  # let the answer finish (or not, sometimes)
    return tally


def medians(samples, index: int) -> dict:
    values = [s[index] for s in samples]
    return {"n": len(values), "median": float(np.median(values)), "max": max(values)} if values else {}


def missed_detail(events: list[dict], messages, released: float) -> dict:
    """What the daemon logged and the probe got around a phrase that went unanswered."""
    near = lambda t: released - 1.5 <= t <= released + ANSWER_TIMEOUT_S  # noqa: E731
    return {"released": released,
            "events": [e for e in events if e["event"] not in ("note_off",) and near(e.get("t", e.get("sent", 0)))][:20],
            "probe": [(round(t - released, 3), m) for t, m in messages if near(t)][:20]}


@pytest.mark.soak
def test_a_long_session_does_not_grow_or_drift(daemon, tmp_path):
    soak(daemon, tmp_path, SECONDS)


def test_a_one_minute_soak_in_the_default_run(daemon, tmp_path):
    soak(daemon, tmp_path, SHORT_SECONDS)


def soak(daemon, tmp_path, seconds: float) -> None:
    """The scripted session for ``seconds``, then every check (see the module docstring)."""
    window_s = min(60.0, seconds / 3)  # the first and last windows compared
    preset = tmp_path / "soak.toml"
    preset.write_text(PRESET)
    d = daemon("--preset", str(preset))
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(iter(d.process.stderr.readline, "")), daemon=True).start()
    sampler = Sampler(d.process.pid)
    started = time.monotonic()
    try:
        tally = run_script(d.probe, seconds, random.Random(1))
    finally:
        sampler.stop()
    finished = time.monotonic()
    assert wait(lambda: not unmatched(d.probe.messages), timeout=10)
    code, _ = d.stop()

    events = d.events()
    ons = [e for e in events if e["event"] == "note_on"]
    pairs = match_note_ons(ons, note_ons(d.probe.messages))
    first = (started, started + window_s)
    last = (finished - window_s, finished + 1)
    summary = {
        "seconds": round(finished - started, 1),
        "window_s": window_s,
        "tally": {**tally.__dict__, "missed": len(tally.missed)},
        "rss_mb": {"first": medians(window(sampler.samples, *first), 1), "last": medians(window(sampler.samples, *last), 1)},
        "threads": {"first": medians(window(sampler.samples, *first), 2), "last": medians(window(sampler.samples, *last), 2)},
        "timing_ms": {"first": summary_ms([t - e["intended"] for e, t in window(pairs, *first, t=lambda p: p[0]["intended"])]),
                      "last": summary_ms([t - e["intended"] for e, t in window(pairs, *last, t=lambda p: p[0]["intended"])])},
        "lateness_ms": {"first": summary_ms([e["sent"] - e["intended"] for e in window(ons, *first, t=lambda e: e["intended"])]),
                        "last": summary_ms([e["sent"] - e["intended"] for e in window(ons, *last, t=lambda e: e["intended"])])},
        "note_ons": {"logged": len(ons), "matched": len(pairs)},
        "daemon_events": {kind: sum(e["event"] == kind for e in events) for kind in ("trigger", "barge_in", "control")},
        "controls": {name: sum(e["event"] == "control" and e.get("name") == name for e in events)
                     for name in ("panic", "mute", "temperature", "length", "gap", "mode")},
        "errors": [e["message"] for e in events if e["event"] == "error"][:5],
        "dropped": sum(e.get("messages", 0) for e in events if e["event"] == "dropped"),
        "exit_code": code,
        "missed_detail": [missed_detail(events, d.probe.messages, released) for released in tally.missed[:3]],
    }
    print("soak:", json.dumps(summary))

    assert code == 0
    assert "Traceback" not in "".join(stderr), "".join(stderr)[-3000:]
    assert not summary["errors"]
    assert not unmatched(d.probe.messages)  # every note-on livegen sent got its note-off
    # Still answering to the end, every phrase but a rare one: on a starved machine JACK loses or
    # repeats events (a client that misses cycles), so a note-off may never arrive and that
    # phrase waits for max_listen; the script then sends All Notes Off and goes on.
    assert tally.phrases - tally.answered <= max(1, int(tally.phrases * MISSES_PER_PHRASE)), summary
    # Every kind of event happened, and did what it should.
    assert tally.muted >= 1 and tally.muted_quiet == tally.muted, summary  # muted: no answer
    assert summary["controls"]["mute"] == 2 * tally.muted, summary  # on and off, each logged
    assert tally.panics >= 1 and tally.panics_silenced == tally.panics, summary  # CC 123 at once
    assert summary["controls"]["panic"] == tally.panics, summary
    assert tally.barge_ins >= 1 and summary["daemon_events"]["barge_in"] >= 1, summary
    assert window([(e["t"],) for e in events if e["event"] == "trigger"], *last), summary
    rss, threads = summary["rss_mb"], summary["threads"]
    assert rss["last"]["median"] <= rss["first"]["median"] + RSS_DRIFT_MB, summary
    # +1: libjack may start one more thread the first time the graph runs late, at any moment.
    assert threads["last"]["max"] <= threads["first"]["max"] + 1, summary
    for key, tolerance in (("lateness_ms", LATENESS_DRIFT_MS), ("timing_ms", TIMING_DRIFT_MS)):
        a, b = summary[key]["first"], summary[key]["last"]
        assert a and b, summary
        assert b["median"] <= a["median"] + tolerance, (key, summary)  # p99 is reported, not held:
        # on a shared machine it measures the neighbours
