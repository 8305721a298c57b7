"""A stand-in for `livegen run` that answers every phrase exactly DELAY late (default 50 ms).

It speaks the daemon's contract (DESIGN.md): virtual JACK ports ``livegen:in`` and
``livegen-01:out``, one ``ready`` line on stdout, ``--log-json`` events (ready, trigger, note_on,
note_off with ``intended``/``sent``), exit 0 on SIGTERM.  A phrase ends ``--gap-ms`` after the
last note-off with no key held; the answer's first note is due ``--delay-ms`` after that, the
rest every 40 ms, each 30 ms long.  A key pressed during an answer stops it: the sounding note
ends ``--barge-ms`` after the press.  The latency harness must measure both delays (plus JACK
delivery, ~1-3 ms).

Input is stamped in an rtmidi callback armed after both ports are open; the main thread sleeps
until each deadline and then spins the last half millisecond.
"""

import argparse
import json
import signal
import sys
import threading
import time

import rtmidi


def sleep_until(deadline: float, stop: threading.Event, interrupted=lambda: None) -> None:
    while not stop.is_set() and interrupted() is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left - 0.0005, 0.001) if left > 0.001 else 0)  # checks for a barge-in every ms


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gap-ms", type=float, default=500.0)
    parser.add_argument("--length", type=int, default=4)
    parser.add_argument("--log-json")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--barge-ms", type=float, default=10.0)
    parser.add_argument("--client-name", default="livegen")
    args, _ = parser.parse_known_args()  # --midi-api, --no-synth, --model, --seed...: accepted, unused
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log_file = open(args.log_json, "a") if args.log_json else None

    def log(record):
        if log_file:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    lock = threading.Lock()
    state = {"held": set(), "released": None, "notes": 0, "answering": False, "barged": None}

    def on_message(event, _data=None):
        t = time.monotonic()
        m = event[0]
        if len(m) != 3 or m[0] & 0xF0 not in (0x80, 0x90):
            return
        with lock:
            if m[0] & 0xF0 == 0x90 and m[2] > 0:
                if state["answering"] and state["barged"] is None:
                    state["barged"] = t
                state["held"].add(m[1])
                state["released"] = None
                state["notes"] += 1
            else:
                state["held"].discard(m[1])
                if not state["held"]:
                    state["released"] = t

    inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=args.client_name)
    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=args.client_name)
    inp.open_virtual_port("in")
    out.open_virtual_port("out")
    inp.set_callback(on_message)  # armed after every port is open
    log({"event": "ready", "t": time.monotonic()})
    print("ready: fake daemon", flush=True)
    gap, delay = args.gap_ms / 1000.0, args.delay_ms / 1000.0
    try:
        while not stop.is_set():
            with lock:
                released, notes = state["released"], state["notes"]
            if released is None or time.monotonic() < released + gap:
                time.sleep(0.001)
                continue
            trigger = released + gap
            with lock:
                if state["released"] != released:  # a key came down meanwhile
                    continue
                state["released"] = None
                state["notes"] = 0
            log({"event": "trigger", "t": time.monotonic(), "notes": notes})
            with lock:
                state["answering"], state["barged"] = True, None

            def barged():
                with lock:
                    return state["barged"]

            for i in range(args.length):
                pitch = 60 + i
                on_at = trigger + delay + 0.04 * i
                sleep_until(on_at, stop, barged)
                if barged() is not None:
                    break
                sent = time.monotonic()
                out.send_message([0x90, pitch, 80])
                log({"event": "note_on", "pitch": pitch, "velocity": 80, "channel": 0, "intended": on_at, "sent": sent})
                off_at = on_at + 0.03
                sleep_until(off_at, stop, barged)
                if barged() is not None:
                    off_at = barged() + args.barge_ms / 1000.0
                    sleep_until(off_at, stop)
                sent = time.monotonic()
                out.send_message([0x80, pitch, 0])
                log({"event": "note_off", "pitch": pitch, "channel": 0, "intended": off_at, "sent": sent})
                if barged() is not None:
                    log({"event": "barge_in", "t": barged()})
                    break
            with lock:
                state["answering"] = False
    finally:
        inp.cancel_callback()
        time.sleep(0.1)
        for client in (inp, out):
            client.close_port()
            client.delete()
        if log_file:
            log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
