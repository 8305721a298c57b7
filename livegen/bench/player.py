"""The latency benchmark's player: a separate JACK client process that plays phrases into the
daemon's input and timestamps what its output sends back.

    python -m livegen.bench.player SPEC.json RESULT.json

SPEC: ``{"phrases": [[[pitch, velocity, hold_s, rest_s], ...], ...], "gap": s, "length": n,
"answer_timeout": s, "settle": s, "client_prefix": "livegen", "channel": 0, "barge_ins": n}``.
RESULT: ``{"phrases": [{"start", "release", "notes"}], "barges": [{"pressed", "channel"}],
"arrivals": [[t, [bytes]]], "ports": {...}}``,
all times ``time.monotonic()`` (the daemon's log uses the same clock).

Each phrase's answer is left to finish.  Then the first ``barge_ins`` phrases are played again,
and a key goes down the moment each answer's first note-on arrives: the barge-in latency is
read from those presses and the note-offs that follow (livegen/bench/latency.py).

Arrivals are read by a poll thread from rtmidi's own queue, never by an rtmidi callback: a
callback runs inside JACK's process cycle and waits for this process's GIL there, and on a loaded
machine (its holder preempted) the cycle overruns and the answer's MIDI is lost before the player
sees it (livegen/io/midi_in.py; seen at 32 frames).  Each arrival is stamped from rtmidi's native
delta times through livegen's ArrivalClock (livegen/io/arrival.py), so the poll interval does not
add to the measured latency.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Callable

from livegen.io.arrival import ArrivalClock
from livegen.midi_bytes import NOTE_OFF, NOTE_ON

CLIENT_NAME = "bench-player"
POLL_INTERVAL_S = 0.001


def is_note_on(message: list[int]) -> bool:
    return len(message) == 3 and message[0] & 0xF0 == NOTE_ON and message[2] > 0


def is_note_off(message: list[int]) -> bool:
    kind = message[0] & 0xF0
    return len(message) == 3 and (kind == NOTE_OFF or (kind == NOTE_ON and message[2] == 0))


def port_matcher(client_prefix: str, port: str) -> Callable[[str], bool]:
    """DESIGN.md's rule: ``client:port`` whose client name starts with the prefix."""

    def matches(name: str) -> bool:
        client, _, port_name = name.rpartition(":")
        return port_name == port and client.startswith(client_prefix)

    return matches


def wait_for_port(client, accept: Callable[[str], bool], timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        ports = client.get_ports()
        for index, name in enumerate(ports):
            if accept(name):
                return index
        if time.monotonic() > deadline:
            raise RuntimeError(f"no matching JACK port within {timeout:g} s; ports: {ports}")
        time.sleep(0.05)


def open_output(rtmidi, client_name: str, accept: Callable[[str], bool]):
    """A MidiOut connected to the first port ``accept`` takes; returns (client, port name)."""
    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=client_name)
    try:
        index = wait_for_port(out, accept)
        name = out.get_ports()[index]
        out.open_port(index, "out")
    except BaseException:
        out.delete()
        raise
    return out, name


def poll_arrivals(inp, arrivals: list, lock: threading.Lock, stop: threading.Event, clock: ArrivalClock) -> None:
    """A poll thread's body: drain rtmidi's queue every POLL_INTERVAL_S, stamp each message from
    its native delta time and append ``(time, message)`` to ``arrivals`` under ``lock``, then
    drain once more when ``stop`` is set (nothing that arrived before the stop is left out)."""
    while True:
        stopping = stop.wait(POLL_INTERVAL_S)
        taken = []
        while (item := inp.get_message()) is not None:
            taken.append(item)
        now = time.monotonic()
        with lock:
            arrivals.extend((clock.stamp(delta, now), message) for message, delta in taken)
        if stopping:
            return


def main(argv: list[str] | None = None) -> int:
    import rtmidi

    spec_path, result_path = (argv if argv is not None else sys.argv[1:])[:2]
    with open(spec_path) as f:
        spec = json.load(f)
    prefix = spec.get("client_prefix", "livegen")
    channel = int(spec.get("channel", 0))
    length = int(spec["length"])
    gap = float(spec["gap"])
    timeout = float(spec["answer_timeout"])
    settle = float(spec.get("settle", 0.1))

    arrivals: list[tuple[float, list[int]]] = []
    lock = threading.Lock()

    stop = threading.Event()
    clock = ArrivalClock()

    poller = None
    out, in_name = open_output(rtmidi, CLIENT_NAME, port_matcher(prefix, "in"))
    inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=CLIENT_NAME, queue_size_limit=65536)
    try:
        inp.ignore_types(sysex=False, timing=False, active_sense=False)
        index = wait_for_port(inp, port_matcher(prefix, "out"))
        out_name = inp.get_ports()[index]
        inp.open_port(index, "in")
        time.sleep(0.2)  # let JACK settle the connections
        while inp.get_message() is not None:  # nothing from before the first phrase
            pass
        poller = threading.Thread(target=poll_arrivals, args=(inp, arrivals, lock, stop, clock), name="player-poll")
        poller.start()
        time.sleep(0.1)

        def play_phrase(phrase) -> tuple[float, float]:
            started, released = None, 0.0
            for pitch, velocity, hold, rest in phrase:
                t = time.monotonic()
                out.send_message([NOTE_ON | channel, int(pitch), int(velocity)])
                started = t if started is None else started
                time.sleep(hold)
                released = time.monotonic()
                out.send_message([NOTE_OFF | channel, int(pitch), 0])
                if rest:
                    time.sleep(rest)
            return started, released

        def answer_notes(since: int) -> list[list[int]]:
            with lock:
                return [m for _, m in arrivals[since:]]

        def let_the_answer_finish(since: int, released: float) -> None:
            deadline = released + gap + timeout
            while time.monotonic() < deadline:  # never barge in here
                new = answer_notes(since)
                ons = sum(map(is_note_on, new))
                if ons >= length and sum(map(is_note_off, new)) >= ons:
                    break
                time.sleep(0.005)

        phrases = []
        for phrase in spec["phrases"]:
            with lock:
                first_arrival = len(arrivals)
            started, released = play_phrase(phrase)
            let_the_answer_finish(first_arrival, released)
            phrases.append({"start": started, "release": released, "notes": len(phrase)})
            time.sleep(settle)

        barges = []
        for phrase in spec["phrases"][: int(spec.get("barge_ins", 0))]:
            # Play, wait for the answer's first note-on, and press a key at once: the note that
            # just began has most of its length to sound, so only the barge-in ends it soon.
            with lock:
                first_arrival = len(arrivals)
            _, released = play_phrase(phrase)
            deadline = released + gap + timeout
            while time.monotonic() < deadline and not any(map(is_note_on, answer_notes(first_arrival))):
                time.sleep(0.0005)
            pressed = time.monotonic()
            out.send_message([NOTE_ON | channel, 72, 100])
            time.sleep(0.08)
            released = time.monotonic()
            out.send_message([NOTE_OFF | channel, 72, 0])
            barges.append({"pressed": pressed, "channel": channel})
            with lock:
                since = len(arrivals)
            let_the_answer_finish(since, released)  # the answer to the key that barged in
            time.sleep(settle)
        time.sleep(0.2)
    finally:
        stop.set()
        if poller is not None:
            poller.join()
        for client in (inp, out):  # input first
            try:
                client.close_port()
            finally:
                client.delete()
    with lock:
        recorded = [[t, list(m)] for t, m in arrivals]
    with open(result_path, "w") as f:
        json.dump({"phrases": phrases, "barges": barges, "arrivals": recorded, "ports": {"in": in_name, "out": out_name}}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
