"""The stress client: floods the daemon's input with harmless messages until SIGTERM.

    python -m livegen.bench.flood [--rate 5000] [--client-prefix livegen]

Active sensing, polyphonic and channel aftertouch, and modulation-wheel CC, round robin, paced
against the clock (a catch-up count every millisecond, so the average rate holds on a busy
machine).  Prints ``ready`` once connected; on exit prints ``sent N`` with the achieved rate.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from livegen.bench.player import open_output, port_matcher
from livegen.midi_bytes import ACTIVE_SENSING, CC_MODULATION, CHANNEL_AFTERTOUCH, CONTROL_CHANGE, POLY_AFTERTOUCH

HARMLESS = (
    [ACTIVE_SENSING],
    [POLY_AFTERTOUCH, 60, 40],
    [CHANNEL_AFTERTOUCH, 50],
    [CONTROL_CHANGE, CC_MODULATION, 30],
)


def main(argv: list[str] | None = None) -> int:
    import rtmidi

    parser = argparse.ArgumentParser(prog="python -m livegen.bench.flood")
    parser.add_argument("--rate", type=float, default=5000.0, help="messages per second")
    parser.add_argument("--client-prefix", default="livegen")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    out, _ = open_output(rtmidi, "bench-flood", port_matcher(args.client_prefix, "in"))
    sent = 0
    try:
        print("ready", flush=True)
        started = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - started) * args.rate)
            while sent < due:
                out.send_message(HARMLESS[sent % len(HARMLESS)])
                sent += 1
            time.sleep(0.001)
        elapsed = time.monotonic() - started
    finally:
        try:
            out.close_port()
        finally:
            out.delete()
    print(f"sent {sent} in {elapsed:.2f} s ({sent / max(elapsed, 1e-9):.0f}/s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
