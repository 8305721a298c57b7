"""`livegen run` and `livegen demo`: build a Session from flags, run it, shut it down cleanly.

Both share everything but the input: `run` listens to a MIDI port, `demo` plays a built-in
phrase into the engine in-process.  Shutdown (SIGINT/SIGTERM or the demo's end) always goes
through Session.stop(): note-offs for every note started, CC 123 on each channel used, then the
recording is written.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from livegen import midi_bytes as mb
from livegen.engine.log import EventLog
from livegen.engine.session import MODES, Session, SessionConfig
from livegen.engine.source import QueueSource
from livegen.errors import LivegenError
from livegen.io.sinks import MessageSink, MultiSink, RecordingSink, Sink
from livegen.model.params import SamplingParams
from livegen.notes import Note, Track, read_midi, write_midi

DEMO_PHRASE = "demo_phrase.mid"


# --- shared flags ----------------------------------------------------------------------------


def add_session_arguments(parser: argparse.ArgumentParser, number: Callable, pitch_range: Callable) -> None:
    """Flags shared by run and demo (DESIGN.md's contract names)."""
    parser.add_argument("--model", metavar="PATH", help="model folder (default: models/default)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N, mps")
    parser.add_argument("--temperature", type=number(float, 0.0, 10.0), default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--top-p", type=number(float, 0.01, 1.0), default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    parser.add_argument("--length", type=number(int, 1, 4096), default=32, help="notes in a response (default 32)")
    parser.add_argument("--max-seconds", type=number(float, 0.5, 600.0), default=20.0, help="longest response in seconds (default 20)")
    parser.add_argument("--gap-ms", type=number(float, 20.0, 10_000.0), default=500.0, help="silence that ends a phrase (default 500)")
    parser.add_argument("--pitch-range", type=pitch_range, default=(21, 108), metavar="LOW-HIGH", help="pitches the answer may use (default 21-108)")
    parser.add_argument("--mode", choices=MODES, default="call-response",
                        help="call-response (stop when the player comes back in), overlap (keep playing), "
                             "mirror (answer with a Markov model learned from this session's playing)")
    parser.add_argument("--min-notes", type=number(int, 1, 1000), default=1, help="notes a phrase needs before it is answered (default 1)")
    parser.add_argument("--max-listen", type=number(float, 0.0, 3600.0), default=30.0, metavar="SECONDS",
                        help="answer after this long even if the player keeps going; 0 = never (default 30)")
    parser.add_argument("--end-call-cc", type=_end_call_controller(number(int, 0, 127)), metavar="CC",
                        help="a controller (e.g. a footswitch) whose press ends the phrase at once")
    parser.add_argument("--adaptive-gap", action="store_true",
                        help="scale the gap to the player's own inter-onset intervals (between gap/2 and 2*gap)")
    parser.add_argument("--listen-channel", type=number(int, 1, 16), action="append", metavar="N",
                        help="only listen to this MIDI channel (repeat for several; default all)")
    parser.add_argument("--channel", type=number(int, 1, 16), default=1, help="MIDI channel of the answer, 1-16 (default 1)")
    parser.add_argument("--program", type=number(int, 0, 127), default=0, help="GM program of the answer (default 0, piano)")
    parser.add_argument("--seed", type=int, help="random seed for reproducible answers")
    parser.add_argument("--synth", action=argparse.BooleanOptionalAction, default=True, help="play through the built-in FluidSynth synth")
    parser.add_argument("--soundfont", help="SoundFont for the synth (default: $LIVEGEN_SOUNDFONT, then system GM fonts)")
    parser.add_argument("--audio-driver", default="auto", help="FluidSynth audio driver: auto, jack, pipewire, pulseaudio, alsa, coreaudio...")
    parser.add_argument("--log-json", metavar="FILE", help="write JSON-lines events (ready, trigger, note_on, note_off, error)")


def _end_call_controller(parse: Callable[[str], int]) -> Callable[[str], int]:
    def check(text: str) -> int:
        value = parse(text)
        if value == mb.CC_SUSTAIN:
            raise argparse.ArgumentTypeError("64 is the sustain pedal, which holds phrases open; pick another controller")
        return value

    return check


def session_config(args: argparse.Namespace, passthrough_channel: int = 1) -> SessionConfig:
    low, high = args.pitch_range
    return SessionConfig(
        gap_s=args.gap_ms / 1000.0,
        length=args.length,
        max_seconds=args.max_seconds,
        sampling=SamplingParams(args.temperature, args.top_p, low, high),
        mode=args.mode,
        channel=args.channel - 1,
        program=args.program,
        human_channel=passthrough_channel,
        input_channels=frozenset(c - 1 for c in args.listen_channel) if args.listen_channel else None,
        min_notes=args.min_notes,
        max_listen_s=args.max_listen or None,
        end_call_cc=args.end_call_cc,
        adaptive_gap=args.adaptive_gap,
    )


def load_predictor(args: argparse.Namespace):
    """The model's streaming predictor (torch is imported here, not at CLI start).

    Mirror mode needs no model file: it learns from the player as the session goes.
    """
    if args.mode == "mirror":
        from livegen.model.mirror import MirrorPredictor

        return MirrorPredictor(seed=args.seed)
    from livegen.model.checkpoint import load_model
    from livegen.model.stream import NoteStream

    model = load_model(args.model, device=args.device)
    predictor = NoteStream(model, seed=args.seed)
    predictor.warm_up()
    return predictor


def open_synth(args: argparse.Namespace, client_name: str, log: EventLog, say: Callable[[str], None]):
    """The built-in synth with live audio, or None (with a warning) where no audio device works."""
    from livegen.io.synth import FluidSynth, SynthSink

    synth = FluidSynth(args.soundfont)
    try:
        driver = synth.start_audio(args.audio_driver, client_name=f"{client_name}-synth")
    except LivegenError as exc:
        synth.close()
        say(f"synth off: {exc}")
        log({"event": "error", "t": time.monotonic(), "message": f"synth: {exc}"})
        return None
    say(f"synth on ({driver}, {synth.soundfont.name})")
    return SynthSink(synth)


# --- demo ------------------------------------------------------------------------------------


def demo_phrase() -> list[Note]:
    with resources.as_file(resources.files("livegen") / "data" / DEMO_PHRASE) as path:
        return read_midi(path)


def play_into(source: QueueSource, notes: Sequence[Note], channel: int = 0, stop: threading.Event | None = None) -> float:
    """Play notes into a source in real time, as a keyboard would; returns the last release time."""
    events = sorted(
        [(n.start, 1, n.pitch, n.velocity) for n in notes] + [(n.end, 0, n.pitch, 0) for n in notes]
    )
    origin = time.monotonic() + 0.05
    for at, is_on, pitch, velocity in events:
        delay = origin + at - time.monotonic()
        if delay > 0 and (stop.wait(delay) if stop else time.sleep(delay)):
            break
        source.put(mb.note_on(channel, pitch, velocity) if is_on else mb.note_off(channel, pitch))
    return origin + events[-1][0]


def run_demo(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    say = lambda text: print(text, flush=True)  # noqa: E731 - tiny local printer
    phrase = read_midi(args.phrase) if args.phrase else demo_phrase()
    with ExitStack() as stack:
        log = EventLog(args.log_json)
        stack.callback(log.close)
        predictor = load_predictor(args)
        recorder = RecordingSink()
        sinks: list[Sink] = [recorder]
        synth = open_synth(args, "livegen-demo", log, say) if args.synth else None
        if synth is not None:
            sinks.append(synth)
            stack.callback(synth.close)
        source = QueueSource()
        session = Session(source, predictor, MultiSink(sinks), session_config(args), passthrough=[synth] if synth else [],
                          recorder=recorder, log=log)
        session.start()
        log({"event": "ready", "t": time.monotonic()})
        say(f"ready: playing the demo phrase ({len(phrase)} notes), then livegen answers")
        try:
            last_release = play_into(source, phrase)
            wait_for_answer(session, last_release + args.gap_ms / 1000.0 + args.max_seconds + 5.0)
        finally:
            session.stop()
            recorder.close()
        tracks = recorder.tracks()
    answered = sum(len(t.notes) for t in tracks if t.name == "livegen")
    midi_path = out_dir / "demo.mid"
    write_midi(midi_path, tracks)
    say(f"wrote {midi_path}: {len(phrase)} player notes, {answered} livegen notes")
    if args.render:
        from livegen.io.synth import render_tracks

        result = render_tracks(tracks, out_dir / "demo.wav", soundfont=args.soundfont)
        say(f"wrote {result.path}: {result.seconds:.1f} s of audio")
    return 0 if answered else 1


def wait_for_answer(session: Session, deadline: float) -> None:
    """Until the answer to the first phrase has been played (or the deadline passes)."""
    while time.monotonic() < deadline:
        if session.phrases and session.worker.idle() and not session.scheduler.busy:
            return
        time.sleep(0.05)


# --- run -------------------------------------------------------------------------------------


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from livegen.io.ports import API_CHOICES, DEFAULT_CLIENT_NAME

    parser.add_argument("--midi-api", choices=API_CHOICES, default="auto", help="MIDI backend (default auto: ALSA if present, else JACK)")
    parser.add_argument("--client-name", default=DEFAULT_CLIENT_NAME, help="MIDI client name (default livegen)")
    parser.add_argument("--input", metavar="PATTERN", help="listen to this existing port (exact name or substring) instead of a virtual port")
    parser.add_argument("--output", metavar="PATTERN", help="play to this existing port (exact name or substring) instead of a virtual port")
    parser.add_argument("--passthrough", action=argparse.BooleanOptionalAction, default=False,
                        help="echo the player's notes to the MIDI output (default off: a DAW hears the keyboard itself)")
    parser.add_argument("--synth-passthrough", action=argparse.BooleanOptionalAction, default=True,
                        help="play the player's notes on the built-in synth too (default on)")
    parser.add_argument("--record", metavar="FILE.mid", help="on exit, write the player and livegen to separate tracks of this file")
    parser.add_argument("--status", action=argparse.BooleanOptionalAction, default=None,
                        help="status line on stderr (default: when stderr is a terminal)")


def run_daemon(args: argparse.Namespace) -> int:
    """The daemon: open ports and synth, answer phrases until SIGINT/SIGTERM, then clean up."""
    from livegen.io.ports import open_ports

    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = sys.stderr.isatty() if args.status is None else args.status
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731 - tiny local printer
    try:
        with ExitStack() as stack:
            log = EventLog(args.log_json)
            stack.callback(log.close)
            predictor = load_predictor(args)
            ports = open_ports(args.midi_api, args.client_name, args.input, args.output)
            stack.callback(ports.close)
            port_sink = MessageSink(ports.output.send)
            outputs: list[Sink] = [port_sink]
            passthrough: list[Sink] = [port_sink] if args.passthrough else []
            synth = open_synth(args, args.client_name, log, say) if args.synth else None
            if synth is not None:
                stack.callback(synth.close)
                outputs.append(synth)
                if args.synth_passthrough:
                    passthrough.append(synth)
            recorder = RecordingSink() if args.record else None
            sink = MultiSink(outputs + ([recorder] if recorder else []))
            session = Session(ports.input, predictor, sink, session_config(args), passthrough=passthrough,
                              recorder=recorder, log=log)
            session.start()
            try:
                log({"event": "ready", "t": time.monotonic()})
                print(f"ready: listening on {ports.input.name}, playing to {ports.output.name}"
                      f"{' and the synth' if synth else ''}", flush=True)
                watch(session, ports.input, log, stop, status)
            finally:
                session.stop()
                for each in outputs:
                    each.close()
                if recorder is not None:
                    recorder.close()
                    write_midi(args.record, recorder.tracks())
                    say(f"wrote {args.record}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def watch(session: Session, port, log: EventLog, stop: threading.Event, status: bool) -> None:
    """Until stop: keep the status line fresh and log input drops."""
    dropped = 0
    while not stop.wait(0.25):
        if port.dropped != dropped:
            log({"event": "dropped", "t": time.monotonic(), "messages": port.dropped - dropped})
            dropped = port.dropped
        if status:
            lateness = session.scheduler.stats("note_on")
            late = f"{lateness.median * 1000:.1f} ms median lateness" if lateness else "no notes yet"
            line = f"[{session.state:9}] phrases {session.phrases} | notes {session.worker.notes_scheduled} | {late}"
            print("\r" + line.ljust(72), end="", file=sys.stderr, flush=True)
    if status:
        print(file=sys.stderr)


def run_ports(args: argparse.Namespace) -> int:
    import json

    from livegen.io.ports import compiled_apis, list_all_ports

    errors: dict[str, str] = {}
    found = list_all_ports(errors)
    if args.json:
        print(json.dumps({"apis": compiled_apis(), "ports": found, "unavailable": errors}, indent=2))
        return 0
    for api in compiled_apis():
        if api in found:
            print(f"{api}:")
            for kind in ("inputs", "outputs"):
                names = found[api][kind]
                print(f"  {kind}: {', '.join(repr(n) for n in names) if names else '(none)'}")
        else:
            print(f"{api}: unavailable ({errors.get(api, 'unknown reason')})")
    return 0
