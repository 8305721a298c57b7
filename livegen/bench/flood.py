"""The stress client: floods the daemon's input until SIGTERM (or ``--seconds``).

    python -m livegen.bench.flood [--rate 5000] [--seconds 0] [--mix KIND,...] [--client-prefix livegen]

Messages go round robin over the kinds in ``--mix``, paced against the clock (a catch-up count
every millisecond, so the average rate holds on a busy machine).  The default mix is harmless
(active sensing, polyphonic and channel aftertouch, modulation-wheel CC: nothing a phrase
detector reacts to), for the latency benchmark.  ``--mix all`` adds MIDI clock, sysex
(``--sysex-bytes`` long, the non-commercial manufacturer ID) and notes, for the reliability
tests: notes alternate on/off (a velocity-0 note-on every other release), so at most one flood
note sounds at a time.  At that rate JACK drops what does not fit a period's MIDI buffer, note-offs
included, and the receiver would rightly hold those keys down; so at the end, once the flood is
over, every pitch the flood used gets a note-off again, paced one per millisecond.

Prints ``ready`` once connected; on exit prints ``sent N in S s (R/s) {JSON counts}``, counting
the messages rtmidi accepted (``failed`` counts those it refused).
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import threading
import time
from typing import Callable, Iterator

from livegen.bench.player import open_output, port_matcher
from livegen.midi_bytes import (
    ACTIVE_SENSING,
    CC_MODULATION,
    CHANNEL_AFTERTOUCH,
    CONTROL_CHANGE,
    NOTE_OFF,
    NOTE_ON,
    POLY_AFTERTOUCH,
    SYSEX_END,
    SYSEX_START,
    TIMING_CLOCK,
)

NON_COMMERCIAL_ID = 0x7D
"""The sysex manufacturer ID set aside for non-commercial use: no real device acts on it."""

HARMLESS_MIX = ("sensing", "poly-aftertouch", "aftertouch", "cc")
KINDS = (*HARMLESS_MIX, "clock", "sysex", "notes")


class FloodMix:
    """The flood's messages, kind after kind; tracks the one flood note that may be sounding."""

    def __init__(self, kinds: tuple[str, ...] = HARMLESS_MIX, sysex_bytes: int = 32, channel: int = 0,
                 pitches: range = range(36, 96)) -> None:
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"unknown flood kinds {unknown}; choose from {', '.join(KINDS)}")
        if sysex_bytes < 0:
            raise ValueError("sysex_bytes must be >= 0")
        if not 0 <= channel <= 15:
            raise ValueError(f"channel must be 1-16, got {channel + 1}")
        self.kinds = kinds
        self.channel = channel
        self.counts = {kind: 0 for kind in kinds}
        self.sounding: int | None = None  # pitch of the flood note now on
        self.used: set[int] = set()  # every pitch the flood played
        self._values = itertools.cycle(range(128))
        self._pitches = itertools.cycle(pitches)
        self._releases = 0
        self._sysex = [SYSEX_START, NON_COMMERCIAL_ID, *[i % 128 for i in range(sysex_bytes)], SYSEX_END]
        self._makers: dict[str, Callable[[], list[int]]] = {
            "sensing": lambda: [ACTIVE_SENSING],
            "poly-aftertouch": lambda: [POLY_AFTERTOUCH | channel, 60, next(self._values)],
            "aftertouch": lambda: [CHANNEL_AFTERTOUCH | channel, next(self._values)],
            "cc": lambda: [CONTROL_CHANGE | channel, CC_MODULATION, next(self._values)],
            "clock": lambda: [TIMING_CLOCK],
            "sysex": lambda: self._sysex,
            "notes": self._note,
        }

    def __iter__(self) -> Iterator[tuple[str, list[int]]]:
        for kind in itertools.cycle(self.kinds):
            yield kind, self._makers[kind]()

    def _note(self) -> list[int]:
        if self.sounding is None:
            self.sounding = next(self._pitches)
            self.used.add(self.sounding)
            return [NOTE_ON | self.channel, self.sounding, 1 + next(self._values) % 127]
        return self.release()

    def release_all(self) -> list[list[int]]:
        """A note-off for every pitch the flood used: the sender's cleanup, whatever got lost."""
        self.sounding = None
        return [[NOTE_OFF | self.channel, pitch, 0] for pitch in sorted(self.used)]

    def release(self) -> list[int]:
        """The note-off of the sounding flood note (call only while one sounds)."""
        pitch, self.sounding = self.sounding, None
        self._releases += 1
        return [NOTE_ON | self.channel, pitch, 0] if self._releases % 2 else [NOTE_OFF | self.channel, pitch, 0]


def parse_mix(text: str) -> tuple[str, ...]:
    if text == "all":
        return KINDS
    if text == "harmless":
        return HARMLESS_MIX
    return tuple(k.strip() for k in text.split(",") if k.strip())


def main(argv: list[str] | None = None) -> int:
    import rtmidi

    parser = argparse.ArgumentParser(prog="python -m livegen.bench.flood")
    parser.add_argument("--rate", type=float, default=5000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: at SIGTERM/SIGINT)")
    parser.add_argument("--mix", default="harmless",
                        help=f"comma-separated kinds from {', '.join(KINDS)}; 'all' or 'harmless' (default)")
    parser.add_argument("--sysex-bytes", type=int, default=32, help="sysex payload bytes (default 32)")
    parser.add_argument("--channel", type=int, default=1, help="MIDI channel 1-16 of channel messages (default 1)")
    parser.add_argument("--client-prefix", default="livegen")
    args = parser.parse_args(argv)
    try:
        mix = FloodMix(parse_mix(args.mix), args.sysex_bytes, args.channel - 1)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    out, _ = open_output(rtmidi, "bench-flood", port_matcher(args.client_prefix, "in"))
    sent = failed = 0
    refusals: list[str] = []  # RtMidi reports a full ring buffer as a warning, not an exception
    out.set_error_callback(lambda kind, text, data=None: refusals.append(text))

    def send(message: list[int]) -> None:
        nonlocal sent, failed
        before = len(refusals)
        try:
            out.send_message(message)
        except (rtmidi.RtMidiError, ValueError):
            failed += 1
            return
        if len(refusals) > before:
            failed += 1
            del refusals[:-1]  # keep the last reason only
        else:
            sent += 1

    try:
        print("ready", flush=True)
        started = time.monotonic()
        messages = iter(mix)
        attempted = 0
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if args.seconds and elapsed >= args.seconds:
                break
            due = int(elapsed * args.rate)
            while attempted < due:
                kind, message = next(messages)
                send(message)
                mix.counts[kind] += 1
                attempted += 1
            time.sleep(0.001)
        elapsed = time.monotonic() - started
        time.sleep(0.1)  # let the flood leave rtmidi's ring buffer before the cleanup
        releases = mix.release_all()
        for message in releases:  # never leave a flood note down
            send(message)
            time.sleep(0.001)
        mix.counts["releases"] = len(releases)
        time.sleep(0.05)  # let rtmidi's JACK ring buffer empty before the port goes
    finally:
        try:
            out.close_port()
        finally:
            out.delete()
    counts = {**mix.counts, "failed": failed, **({"refused": refusals[-1]} if refusals else {})}
    print(f"sent {sent} in {elapsed:.2f} s ({sent / max(elapsed, 1e-9):.0f}/s) {json.dumps(counts)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
