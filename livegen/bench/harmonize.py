"""`livegen bench harmonize`: harmonize mode's latency through real JACK.

The real daemon (``livegen run --mode harmonize --voices N``) runs on a private JACK server
(dummy driver); this process plays a melody into its input, as a keyboard would, and reads what
its output sends by polling rtmidi's queue, stamped from rtmidi's native arrival times
(livegen/io/arrival.py), as the latency player does: an rtmidi callback would run Python on
JACK's thread, and a cycle that waits there for this process's GIL loses its MIDI (a lost
note-off read as a voice held for seconds).  One clock, ``time.monotonic()``, on both sides.
Measured per melody note:

- ``voice_on_ms``: the player's note-on sent -> the first voice's note-on at the listener;
- ``voice_off_ms``: the player's note-off sent (or the pedal's release, for the notes played
  under the pedal) -> the last of that note's voices off at the listener;
- ``stuck``: voice notes still on once the daemon has stopped (must be 0), ``missed``: melody
  notes that got no voice;
- ``in_key`` and ``consonant``: the share of voices in the melody's key (Krumhansl-Kessler on
  the melody played) and consonant with their melody note (livegen/train/harmony.py's rules).

The melody is the demo phrase's soprano (Bach, BWV 66.6), repeated; its holds are clamped to
``HOLD_S`` so a run is short.  The last ``PEDAL_NOTES`` notes are played with the pedal down:
their note-offs come while the pedal holds them, so their voices must wait for the pedal-up.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from livegen import midi_bytes as mb
from livegen.bench.jack import JackServer, jack_server
from livegen.bench.latency import DEMO_PHRASE, DaemonProcess, summary_ms
from livegen.bench.player import is_note_off, is_note_on, open_output, poll_arrivals, port_matcher, wait_for_port
from livegen.io.arrival import ArrivalClock

CLIENT_NAME = "bench-harmonize"
HOLD_S = (0.08, 0.3)
REST_S = 0.04
PEDAL_NOTES = 4
PEDAL_HOLD_S = 0.15  # pedal held this long after the note's key-up


@dataclass(frozen=True)
class HarmonizeBenchConfig:
    notes: int = 80
    voices: int = 3
    placement: str = "below"
    seed: int = 1
    client_prefix: str = "livegen"
    ready_timeout: float = 120.0

    def to_dict(self) -> dict:
        return asdict(self)


def melody(count: int) -> list[tuple[int, int, float]]:
    """(pitch, velocity, hold seconds) of the demo phrase's soprano line, repeated to ``count``."""
    from livegen.notes import read_midi
    from livegen.train.harmony import soprano_onsets

    line = [o.melody for o in soprano_onsets(read_midi(DEMO_PHRASE))]
    notes = []
    while len(notes) < count:
        for n in line[: count - len(notes)]:
            notes.append((n.pitch, max(40, min(n.velocity, 127)), min(max(n.end - n.start, HOLD_S[0]), HOLD_S[1])))
    return notes


def play(notes: Sequence[tuple[int, int, float]], prefix: str = "livegen", channel: int = 0,
         then: Callable[[], None] | None = None) -> dict:
    """Play ``notes`` into the daemon and record what it sends back (module doc); ``then`` runs
    while this still listens (stopping the daemon: its closing messages count for ``stuck``)."""
    import rtmidi

    arrivals: list[tuple[float, list[int]]] = []
    lock = threading.Lock()
    stop = threading.Event()
    clock = ArrivalClock()

    out, _ = open_output(rtmidi, CLIENT_NAME, port_matcher(prefix, "in"))
    inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=CLIENT_NAME, queue_size_limit=65536)
    poller = threading.Thread(target=poll_arrivals, args=(inp, arrivals, lock, stop, clock), name="harmonize-listener")
    played = []
    try:
        inp.ignore_types(sysex=False, timing=False, active_sense=False)
        inp.open_port(wait_for_port(inp, port_matcher(prefix, "out")), "in")
        time.sleep(0.2)  # let JACK settle the connections
        while inp.get_message() is not None:  # nothing from before the first note
            pass
        poller.start()
        time.sleep(0.1)
        pedal_from = max(len(notes) - PEDAL_NOTES, 0)
        for i, (pitch, velocity, hold) in enumerate(notes):
            pedal = i >= pedal_from
            if pedal:
                out.send_message(mb.control_change(channel, mb.CC_SUSTAIN, 127))
            on = time.monotonic()
            out.send_message(mb.note_on(channel, pitch, velocity))
            time.sleep(hold)
            off = time.monotonic()
            out.send_message(mb.note_off(channel, pitch))
            released = off
            if pedal:
                time.sleep(PEDAL_HOLD_S)
                released = time.monotonic()
                out.send_message(mb.control_change(channel, mb.CC_SUSTAIN, 0))
            played.append({"pitch": pitch, "on": on, "off": off, "released": released, "pedal": pedal})
            time.sleep(REST_S)
        time.sleep(0.3)
        with lock:
            played_until = len(arrivals)
        if then is not None:
            then()
            time.sleep(0.3)
    finally:
        stop.set()
        if poller.is_alive():
            poller.join()
        for client in (inp, out):
            try:
                client.close_port()
            finally:
                client.delete()
    with lock:
        return {"played": played, "arrivals": [(t, list(m)) for t, m in arrivals[:played_until]],
                "after": [(t, list(m)) for t, m in arrivals[played_until:]]}


def analyze(result: dict) -> dict:
    """Per-note voice latencies, closing, stuck notes, key and consonance (module doc).

    ``stuck`` counts what is still on after the daemon stopped (its shutdown note-offs and CC 123
    included); ``left_to_shutdown``, what only the shutdown closed."""
    from livegen.notes import Note
    from livegen.train.harmony import CONSONANT, estimate_key

    played, arrivals = result["played"], result["arrivals"]
    on_ms, all_on_ms, off_ms, missed, voices, consonant, pedal_held = [], [], [], 0, [], 0, 0
    for i, note in enumerate(played):
        until = played[i + 1]["on"] if i + 1 < len(played) else float("inf")
        ons = [(t, m) for t, m in arrivals if is_note_on(m) and note["on"] <= t < until]
        if not ons:
            missed += 1
            continue
        on_ms.append(ons[0][0] - note["on"])
        all_on_ms.append(ons[-1][0] - note["on"])  # the chord complete (its last voice)
        pitches = {m[1] for _, m in ons}
        voices += [(note["pitch"], p) for p in pitches]
        per_voice = [min((t for t, m in arrivals if is_note_off(m) and m[1] == p and t >= ons[0][0]), default=None)
                     for p in pitches]  # each voice's first note-off after it started
        if any(t is None for t in per_voice):
            continue  # never closed: counted in "stuck"
        off_ms.append(max(per_voice) - note["released"])
        if note["pedal"]:
            pedal_held += all(t >= note["released"] - 0.001 for t in per_voice)  # none ended at the key-up
    left_to_shutdown = _sounding(arrivals)
    stuck = _sounding(arrivals + result.get("after", []))
    key = estimate_key([Note(n["pitch"], n["on"], n["off"], 80) for n in played])
    for melody_pitch, pitch in voices:
        consonant += abs(melody_pitch - pitch) % 12 in CONSONANT or abs(melody_pitch - pitch) % 12 == 5
    pedal_notes = sum(n["pedal"] for n in played)
    return {
        "notes": len(played),
        "missed": missed,
        "voice_on_ms": summary_ms(on_ms),
        "last_voice_on_ms": summary_ms(all_on_ms),
        "voice_off_ms": summary_ms(off_ms),
        "voices_per_note": round(len(voices) / max(len(played) - missed, 1), 3),
        "pedal": {"notes": pedal_notes, "held_until_pedal_up": pedal_held},
        "stuck": stuck,
        "left_to_shutdown": left_to_shutdown,
        "key": str(key),
        "in_key": round(sum(p % 12 in key.pitch_classes for _, p in voices) / len(voices), 4) if voices else None,
        "consonant": round(consonant / len(voices), 4) if voices else None,
    }


def _sounding(arrivals: Sequence[tuple[float, list[int]]]) -> int:
    """Notes on at the end of ``arrivals`` (a CC 123 ends every note)."""
    on: dict[int, int] = {}
    for _, m in sorted(arrivals, key=lambda a: a[0]):
        if is_note_on(m):
            on[m[1]] = on.get(m[1], 0) + 1
        elif is_note_off(m) and on.get(m[1]):
            on[m[1]] -= 1
        elif len(m) == 3 and m[0] & 0xF0 == mb.CONTROL_CHANGE and m[1] == mb.CC_ALL_NOTES_OFF:
            on.clear()
    return sum(on.values())


def run_harmonize(server: JackServer, daemon_command: Sequence[str], config: HarmonizeBenchConfig,
                  workdir: Path) -> dict:
    """One daemon in harmonize mode, one melody -> figures."""
    daemon = DaemonProcess(daemon_command, server.env, workdir, [
        "--mode", "harmonize", "--voices", str(config.voices), "--harmonize", config.placement,
        "--seed", str(config.seed)])
    try:
        daemon.start(config.ready_timeout)
        saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
        os.environ.update({"JACK_DEFAULT_SERVER": server.name, "JACK_NO_START_SERVER": "1"})  # this process plays
        try:
            result = play(melody(config.notes), config.client_prefix, then=daemon.stop)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        daemon.stop()
    figures = analyze(result)
    events = daemon.events()
    sampled = [e["sampled_ms"] / 1000.0 for e in events if e.get("event") == "harmonize"]
    figures["sampled_in_daemon_ms"] = summary_ms(sampled)
    for key in ("waited_ms", "first_voice_ms", "voiced_ms"):
        values = [e[key] / 1000.0 for e in events if e.get("event") == "harmonize" and e.get(key) is not None]
        figures[f"{key[:-3]}_in_daemon_ms"] = summary_ms(values) if values else None
    figures["errors"] = [e.get("message") for e in events if e.get("event") == "error"][:10]
    figures["daemon"] = {"startup_s": round(daemon.startup_s or 0.0, 3), "exit_code": daemon.exit_code}
    figures["config"] = config.to_dict()
    return figures


def measure_harmonize(daemon_command: Sequence[str], config: HarmonizeBenchConfig = HarmonizeBenchConfig(),
                      server: JackServer | None = None, rate: int = 48000, period: int = 64, sync: bool = False) -> dict:
    """Run the harmonize benchmark (own JACK server unless one is given; ``sync``: jackd -S)."""
    with tempfile.TemporaryDirectory(prefix="livegen-bench-") as tmp:
        if server is not None:
            return run_harmonize(server, daemon_command, config, Path(tmp))
        with jack_server(rate, period, sync=sync) as own:
            return run_harmonize(own, daemon_command, config, Path(tmp))


def format_lines(h: dict) -> list[str]:
    """The table lines of ``livegen bench`` for the harmonize figures."""
    on, off = h.get("voice_on_ms") or {}, h.get("voice_off_ms") or {}
    last = h.get("last_voice_on_ms") or {}
    return [f"harmonize: {h['notes']} notes, {h['voices_per_note']} voices per note, {h['missed']} missed, "
            f"{h['stuck']} stuck, in key {h['in_key']}, consonant {h['consonant']} ({h['key']})",
            f"  note-on -> first voice ms  median {on.get('median')}  p99 {on.get('p99')}  max {on.get('max')}",
            f"  note-on -> last voice ms   median {last.get('median')}  p99 {last.get('p99')}  max {last.get('max')}",
            f"  note-off -> last voice off ms  median {off.get('median')}  p99 {off.get('p99')}  max {off.get('max')}"]


TARGETS = (
    ("harmonize note-on to first voice p99", ("harmonize", "voice_on_ms", "p99"), 5.0, "max", "ms"),
    ("harmonize voices off after note-off max", ("harmonize", "voice_off_ms", "max"), 5.0, "max", "ms"),
    ("harmonize voices in the melody's key", ("harmonize", "in_key"), 0.9, "min", "share"),
    ("harmonize stuck notes", ("harmonize", "stuck"), 0, "max", "notes"),
)


def bench(args, results: dict, skipped: dict, say) -> None:
    """The ``livegen bench`` hook: ``results["harmonize"]``, or a reason in ``skipped``."""
    from livegen.bench.jack import BenchError
    from livegen.bench.latency import default_daemon_command
    import shlex

    command = shlex.split(args.daemon_command) if args.daemon_command else default_daemon_command(args.model)
    config = HarmonizeBenchConfig(notes=getattr(args, "harmonize_notes", 80))
    say(f"harmonize: {config.notes} melody notes, {config.voices} voices {config.placement}")
    try:
        results["harmonize"] = measure_harmonize(command, config, rate=args.jack_rate, period=args.jack_period,
                                                 sync=getattr(args, "jack_sync", False))
    except BenchError as exc:
        if "jackd is not installed" not in str(exc):
            raise
        skipped["harmonize"] = str(exc)
