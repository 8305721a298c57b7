"""Input flood: 20,000 messages/s of everything into a real `livegen run` through JACK.

A broken controller or a DAW echo loop can pour thousands of messages a second into the input.
The daemon may drop some (its input queue is bounded and says so with ``dropped`` events), but
it must stay up, keep its memory bounded, raise nothing, and answer the next phrase.  The flood
client (livegen/bench/flood.py) runs as its own process, as a second keyboard would; on a busy
2-core machine it may reach less than the asked rate, so the figures it reports are what count.

At this rate JACK itself drops what does not fit a period's MIDI buffer (a few percent with the
test server's 64-frame periods) before the daemon sees it, note-offs included; the flood client
therefore releases every pitch it used once the flood is over, as a player lifting their hands
would.  What does arrive, the engine keeps up with (hundreds of thousands of messages a second
in-process), so the daemon's own queue rarely has to drop: ``dropped`` events are checked when
they come, and the total is reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from daemon_driver import Daemon, wait
from livegen.bench.jack import die_with_parent, stop_process
from midi_probe import note_ons, unmatched
from proc_stats import proc_status

RATE = 20_000
SECONDS = 10.0
GAP = 0.25
MIN_RATE = 0.5 * RATE
"""The flood client must reach at least half the asked rate here (a loaded 2-core machine shares
its CPU with the daemon and JACK); less would test a trickle.  It prints what it reached."""
RSS_GROWTH_LIMIT_MB = 16.0
"""What the flood may leave behind.  Queued messages are (time, list of ints) tuples, about 200
bytes each for 3-byte messages and 700 for the 64-byte sysex used here: the 10,000-message cap
is 2-7 MB.  The other 9 MB are allocator slack (arenas kept after the queue drains); measured
growth here was well under that (see the printed figures), a leak of one object per message
(200,000 messages) would pass it."""


def drain(stream, into: list[str]) -> threading.Thread:
    """Read a child's pipe on a thread, so a chatty child never blocks on a full pipe."""
    thread = threading.Thread(target=lambda: into.extend(iter(stream.readline, "")), daemon=True)
    thread.start()
    return thread


def start_flood(env: dict, *flags: str) -> tuple[subprocess.Popen, list[str]]:
    flood = subprocess.Popen([sys.executable, "-m", "livegen.bench.flood", *flags], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=die_with_parent)
    lines: list[str] = []
    drain(flood.stdout, lines)
    if not wait(lambda: any(line.startswith("ready") for line in lines), timeout=30):
        stop_process(flood)
        raise AssertionError(f"the flood client never connected: {lines}")
    return flood, lines


def flood_report(lines: list[str]) -> tuple[int, dict]:
    """``sent N ... {counts}`` -> (N, counts)."""
    line = next(line for line in lines if line.startswith("sent "))
    return int(line.split()[1]), json.loads(line[line.index("{"):])


def test_a_flood_of_everything_leaves_the_daemon_answering_with_bounded_memory(daemon, jack_server):
    # --max-listen 0: a key left down by the flood would block every later answer, not be rescued.
    d = daemon("--gap-ms", str(GAP * 1000), "--length", "4", "--max-seconds", "5", "--max-listen", "0")
    stderr: list[str] = []
    drain(d.process.stderr, stderr)
    pid = d.process.pid
    # An answer and a one-second flood first, so "before" already counts the working memory and
    # a native (non-Python) thread that the daemon starts once, the first time notes flood in.
    d.probe.play([60, 62, 64])
    assert wait(lambda: len(note_ons(d.probe.messages)) == 4 and not unmatched(d.probe.messages), timeout=30)
    warm_up, _ = start_flood(jack_server.env, "--rate", str(RATE), "--seconds", "1", "--mix", "all")
    warm_up.wait(60)
    time.sleep(GAP * 4)
    before = proc_status(pid)

    flood, lines = start_flood(jack_server.env, "--rate", str(RATE), "--seconds", str(SECONDS), "--mix", "all",
                               "--sysex-bytes", "64")
    peak_rss = before.rss_mb
    deadline = time.monotonic() + SECONDS + 60
    try:
        while flood.poll() is None:
            peak_rss = max(peak_rss, proc_status(pid).rss_mb)
            time.sleep(0.25)
            assert time.monotonic() < deadline, "the flood client did not stop"
    finally:
        stop_process(flood)
    sent, counts = flood_report(lines)
    assert d.process.poll() is None, f"the daemon died under the flood: {''.join(stderr)[-3000:]}"
    assert sent >= MIN_RATE * SECONDS, f"the flood reached only {sent / SECONDS:.0f} messages/s: {lines}"
    assert counts["releases"] > 0  # the flood client released every pitch it played

    # Responsive: the next phrase is answered (after whatever backlog the flood left).
    time.sleep(GAP * 4)
    d.probe.clear()
    released = d.probe.play([67, 65, 64])
    assert wait(lambda: note_ons(d.probe.messages), timeout=60), f"no answer after the flood: {describe(d, lines, stderr)}"
    first = note_ons(d.probe.messages)[0][0]
    assert first >= released
    assert wait(lambda: len(note_ons(d.probe.messages)) >= 4 and not unmatched(d.probe.messages), timeout=30)
    after = proc_status(pid)

    code, _ = d.stop()
    assert code == 0
    assert not unmatched(d.probe.messages)  # every answer note-on livegen sent got its note-off
    text = "".join(stderr)
    assert "Traceback" not in text, text[-3000:]
    errors = d.events("error")
    assert not errors, errors[:5]
    dropped_events = d.events("dropped")
    dropped = sum(e["messages"] for e in dropped_events)
    assert all(e["messages"] > 0 for e in dropped_events)
    assert dropped <= sent
    heard = max(e["notes"] for e in d.events("trigger"))  # the flood was one long phrase
    figures = {"sent": sent, "rate_per_s": round(sent / SECONDS), "counts": counts, "dropped": dropped,
               "flood_note_ons": {"sent": (counts["notes"] + 1) // 2, "heard": heard},
               "dropped_events": len(dropped_events), "rss_mb": {"before": before.rss_mb, "peak": peak_rss,
                                                                  "after": after.rss_mb},
               "threads": {"before": before.threads, "after": after.threads},
               "answer_after_flood_s": round(first - released, 3)}
    print("flood:", json.dumps(figures))
    assert after.rss_mb - before.rss_mb < RSS_GROWTH_LIMIT_MB, figures
    assert peak_rss - before.rss_mb < 2 * RSS_GROWTH_LIMIT_MB, figures
    # A worker pool (torch's or the BLAS library's) may still start once on its first parallel
    # op; a leak would add threads per message burst, far more than one.
    assert after.threads <= before.threads + 1, figures


class SmallQueueDaemon(Daemon):
    """`livegen run` with an input queue of QUEUE messages, set by its launcher (the daemon
    has no such option): the flood must then overflow it, and the overflow must be logged."""

    QUEUE = 8
    command = ("-c", "import sys; from livegen.io import ports; "
                     f"ports.open_ports.__kwdefaults__['capacity'] = {QUEUE}; "
                     "from livegen.cli import main; sys.exit(main(sys.argv[1:]))")


def test_an_overflowing_input_queue_drops_and_logs_it_and_the_daemon_still_answers(jack_server, midi_probe,
                                                                                      quick_model, tmp_path):
    d = SmallQueueDaemon(jack_server, midi_probe, quick_model, tmp_path, "--gap-ms", str(GAP * 1000), "--length", "3",
                         "--max-listen", "0")
    try:
        stderr: list[str] = []
        drain(d.process.stderr, stderr)
        flood, lines = start_flood(jack_server.env, "--rate", str(RATE), "--seconds", "1", "--mix", "all")
        flood.wait(60)
        sent, _ = flood_report(lines)
        # JACK hands a period's MIDI (about 27 messages at this rate) to the callback in one burst,
        # faster than the engine thread takes them out of an 8-message queue.
        assert wait(lambda: d.events("dropped"), timeout=5), describe(d, lines, stderr)
        time.sleep(0.5)  # the watcher logs drops every 0.2 s: let the last ones in
        dropped_events = d.events("dropped")
        assert all(e["messages"] > 0 and e["t"] > 0 for e in dropped_events)
        assert 0 < sum(e["messages"] for e in dropped_events) <= sent
        time.sleep(GAP * 4)
        d.probe.clear()
        d.probe.play([67, 65, 64])
        assert wait(lambda: len(note_ons(d.probe.messages)) >= 3 and not unmatched(d.probe.messages), timeout=30), \
            describe(d, lines, stderr)
        assert d.stop()[0] == 0
        assert not d.events("error") and "Traceback" not in "".join(stderr)
    finally:
        d.close()


def describe(d, flood_lines: list[str], stderr: list[str]) -> str:
    """What the flood and the daemon said, for a failure message."""
    events = d.events()
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e["event"]] = kinds.get(e["event"], 0) + 1
    return (f"flood: {flood_lines}; dropped: {sum(e.get('messages', 0) for e in events if e['event'] == 'dropped')}; "
            f"events: {kinds}; last: {events[-5:]}; stderr: {''.join(stderr)[-2000:]}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-s"]))
