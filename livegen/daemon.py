"""`livegen run` and `livegen demo`: build a Session from flags, run it, shut it down cleanly.

Both share everything but the input: `run` listens to a MIDI port, `demo` plays a built-in
phrase into the engine in-process.  Shutdown (SIGINT/SIGTERM or the demo's end) always goes
through Session.stop(): note-offs for every note started, CC 123 on each channel used, then the
recording is written.
"""

from __future__ import annotations

import argparse
import copy
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from livegen import midi_bytes as mb
from livegen.argtypes import add_prior_arguments, end_call_controller, host_port, number_in_range, pitch_range
from livegen import presets
from livegen.engine.control import LEARNABLE, ControlMap
from livegen.engine.log import EventLog
from livegen.engine.session import MODES, Session, SessionConfig
from livegen.engine.source import QueueSource
from livegen.errors import LivegenError
from livegen.io.sinks import MessageSink, MultiSink, RecordingSink, Sink
from livegen.model.params import SamplingParams
from livegen.notes import Note, Track, read_midi, write_midi
from livegen.presets import PLACEMENTS, QUANTIZE, Preset
from livegen.remote import open_remote
from livegen.watchdog import exit_later

DEMO_PHRASE = "demo_phrase.mid"


# --- shared flags ----------------------------------------------------------------------------


def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by run and demo (DESIGN.md's contract names).

    Settings flags default to None, meaning "the preset's value"; the built-in defaults live in
    livegen.presets (the same numbers as the help texts say).
    """
    parser.add_argument("--preset", metavar="NAME|PATH", help="preset by name (see `livegen presets`) or TOML file; flags override it")
    parser.add_argument("--model", metavar="PATH", help="model folder (default: the preset's, else models/default)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N, mps")
    parser.add_argument("--temperature", type=number_in_range(float, 0.0, 10.0), help="sampling temperature (default 1.0)")
    parser.add_argument("--top-p", type=number_in_range(float, 0.01, 1.0), help="nucleus sampling mass (default 1.0 = off)")
    parser.add_argument("--length", type=number_in_range(int, 1, 4096), help="notes in a response (default 32)")
    parser.add_argument("--max-seconds", type=number_in_range(float, 0.5, 600.0), help="longest response in seconds (default 20)")
    parser.add_argument("--gap-ms", type=number_in_range(float, 20.0, 10_000.0), help="silence that ends a phrase (default 500)")
    parser.add_argument("--gap-beats", type=number_in_range(float, 0.0, 64.0), metavar="BEATS",
                        help="phrase gap in beats whenever a tempo is known (MIDI clock or the phrase); 0 = use --gap-ms")
    parser.add_argument("--quantize", choices=QUANTIZE,
                        help="snap answer onsets to this grid of the MIDI clock (else of the phrase's tempo); default off")
    parser.add_argument("--pitch-range", type=pitch_range, metavar="LOW-HIGH", help="pitches the answer may use (default 21-108)")
    add_prior_arguments(parser, with_defaults=False)
    parser.add_argument("--mode", choices=MODES,
                        help="call-response (stop when the player comes back in; default), overlap (keep playing), "
                             "mirror (answer with a Markov model learned from this session's playing), "
                             "harmonize (voices added to every note as it is played)")
    parser.add_argument("--voices", type=number_in_range(int, 1, 8), help="harmonize mode: voices per melody note (default 3)")
    parser.add_argument("--harmonize", choices=PLACEMENTS,
                        help="harmonize mode: the voices go below (default), above or around the melody")
    parser.add_argument("--min-notes", type=number_in_range(int, 1, 1000), help="notes a phrase needs before it is answered (default 1)")
    parser.add_argument("--max-listen", type=number_in_range(float, 0.0, 3600.0), metavar="SECONDS",
                        help="answer after this long even if the player keeps going; 0 = never (default 30)")
    parser.add_argument("--end-call-cc", type=end_call_controller, metavar="CC",
                        help="a controller (e.g. a footswitch) whose press ends the phrase at once")
    parser.add_argument("--adaptive-gap", action=argparse.BooleanOptionalAction, default=None,
                        help="scale the gap to the player's own inter-onset intervals (between gap/2 and 2*gap)")
    parser.add_argument("--listen-channel", type=number_in_range(int, 1, 16), action="append", metavar="N",
                        help="only listen to this MIDI channel (repeat for several; default all)")
    parser.add_argument("--channel", type=number_in_range(int, 1, 16), help="MIDI channel of the answer, 1-16 (default 1)")
    parser.add_argument("--program", type=number_in_range(int, 0, 127), help="GM program of the answer (default 0, piano)")
    parser.add_argument("--seed", type=int, help="random seed for reproducible answers")
    parser.add_argument("--synth", action=argparse.BooleanOptionalAction, default=None, help="play through the built-in FluidSynth synth (default on)")
    parser.add_argument("--soundfont", help="SoundFont for the synth (default: $LIVEGEN_SOUNDFONT, then system GM fonts)")
    parser.add_argument("--audio-driver", default="auto", help="FluidSynth audio driver: auto, jack, pipewire, pulseaudio, alsa, coreaudio...")
    parser.add_argument("--memory", type=number_in_range(float, 0.0, 1.0), metavar="W",
                        help="blend the model with what you played this session: 0 = the model alone (default), "
                             "1 = the session alone")
    parser.add_argument("--memory-file", metavar="FILE",
                        help="load the session memory from FILE (if it exists) and save it there on exit")
    parser.add_argument("--memory-reset", action="store_true",
                        help="start with an empty session memory (FILE is overwritten on exit)")
    parser.add_argument("--log-json", metavar="FILE", help="write JSON-lines events (ready, trigger, respond, control, note_on, note_off, error)")


_OVERRIDES = {  # flag attribute -> (preset section or None, key)
    "model": (None, "model"), "mode": (None, "mode"), "voices": (None, "voices"), "harmonize": (None, "harmonize"),
    "temperature": ("sampling", "temperature"), "top_p": ("sampling", "top_p"), "key_prior": ("sampling", "key_prior"),
    "register_prior": ("sampling", "register_prior"), "rhythm_temperature": ("sampling", "rhythm_temperature"),
    "length": ("response", "length"), "max_seconds": ("response", "max_seconds"), "quantize": ("response", "quantize"),
    "gap_ms": ("listen", "gap_ms"), "gap_beats": ("listen", "gap_beats"), "min_notes": ("listen", "min_notes"),
    "max_listen": ("listen", "max_listen"), "adaptive_gap": ("listen", "adaptive_gap"),
    "channel": ("output", "channel"), "program": ("output", "program"), "synth": ("output", "synth"),
    "passthrough": ("output", "passthrough"), "synth_passthrough": ("output", "synth_passthrough"),
    "end_call_cc": ("controls", "end_call"), "memory": (None, "memory"),
}


def resolve_preset(args: argparse.Namespace) -> Preset:
    """The preset named by --preset (built-in defaults without it) with every given flag on top."""
    preset = presets.load(getattr(args, "preset", None))
    return apply_flags(preset, args)


def apply_flags(preset: Preset, args: argparse.Namespace) -> Preset:
    preset = copy.deepcopy(preset)
    for attr, (section, key) in _OVERRIDES.items():
        value = getattr(args, attr, None)
        if value is not None:
            setattr(getattr(preset, section) if section else preset, key, value)
    if getattr(args, "pitch_range", None) is not None:
        preset.sampling.pitch_low, preset.sampling.pitch_high = args.pitch_range
    if getattr(args, "listen_channel", None):
        preset.listen.channels = list(args.listen_channel)
    return preset


def control_map(preset: Preset) -> ControlMap:
    c = preset.controls
    return ControlMap(
        channel=c.channel - 1 if c.channel else None,
        temperature=preset.cc("temperature"), length=preset.cc("length"), gap=preset.cc("gap"),
        mode=preset.cc("mode"), panic=preset.cc("panic"), end_call=preset.cc("end_call"), mute=preset.cc("mute"),
        state_out=preset.cc("state_out"), memory=preset.cc("memory"), memory_reset=preset.cc("memory_reset"),
        memory_range=(c.memory_min, c.memory_max),
        temperature_range=(c.temperature_min, c.temperature_max), length_range=(c.length_min, c.length_max),
        gap_range_s=(c.gap_min_ms / 1000.0, c.gap_max_ms / 1000.0),
    )


def session_config(preset: Preset, passthrough_channel: int = 1) -> SessionConfig:
    s, r, li, o = preset.sampling, preset.response, preset.listen, preset.output
    return SessionConfig(
        gap_s=li.gap_ms / 1000.0,
        length=r.length,
        max_seconds=r.max_seconds,
        sampling=SamplingParams(s.temperature, s.top_p, s.pitch_low, s.pitch_high, memory=preset.memory,
                                key_prior=s.key_prior, register_prior=s.register_prior,
                                rhythm_temperature=s.rhythm_temperature),
        mode=preset.mode,
        channel=o.channel - 1,
        program=o.program,
        human_channel=passthrough_channel,
        input_channels=frozenset(c - 1 for c in li.channels) if li.channels else None,
        min_notes=li.min_notes,
        max_listen_s=li.max_listen or None,
        end_call_cc=preset.cc("end_call"),
        adaptive_gap=li.adaptive_gap,
        velocity_scale=r.velocity_scale,
        latency_s=r.latency_ms / 1000.0,
        quantize=r.quantize,
        gap_beats=li.gap_beats,
        controls=control_map(preset),
        name=preset.name,
        voices=preset.voices,
        harmonize=preset.harmonize,
        memory_reset=preset.memory_reset,
    )


def switch_configs(preset: Preset, args: argparse.Namespace, passthrough_channel: int = 1) -> list[SessionConfig]:
    """Program change 0, 1, 2...: the preset's switch list, each with the session's flags on top."""
    return [session_config(apply_flags(each, args), passthrough_channel) for each in presets.load_switch_list(preset)]


def load_predictor(args: argparse.Namespace, preset: Preset):
    """The model's streaming predictor (torch is imported here, not at CLI start).

    Mirror mode needs no model file: it learns from the player as the session goes.
    """
    if preset.mode == "mirror":
        from livegen.model.mirror import MirrorPredictor

        return MirrorPredictor(seed=args.seed)
    from livegen.model.blend import MemoryStream
    from livegen.model.checkpoint import load_model
    from livegen.model.stream import NoteStream

    model = load_model(preset.model or None, device=args.device)
    predictor = MemoryStream(NoteStream(model, seed=args.seed), open_memory(args, preset))
    predictor.warm_up()
    return predictor


def load_voicing(predictor):
    """How harmonize mode voices chords with this predictor (the model's chord order)."""
    from livegen.engine.harmonize import ModelVoicing

    if getattr(predictor, "tokenizer", None) is None or not hasattr(predictor, "next"):  # mirror: no LSTM
        return ModelVoicing()
    from livegen.model.voicing import chord_order_of, sample_pitch_at

    return ModelVoicing(chord_order=chord_order_of(predictor.model), sample=sample_pitch_at)


def open_memory(args: argparse.Namespace, preset: Preset):
    """The session memory: from --memory-file when it exists, empty with --memory-reset or a
    preset with ``memory_reset``; a bad file raises MemoryFileError (one line, exit 2)."""
    from livegen.model.memory import SessionMemory

    path = getattr(args, "memory_file", None)
    if path and Path(path).expanduser().exists() and not (getattr(args, "memory_reset", False) or preset.memory_reset):
        return SessionMemory.load(path)
    return SessionMemory()


def save_memory(args: argparse.Namespace, predictor, say: Callable[[str], None]) -> bool:
    """Write the session memory to --memory-file (atomically); False, said in one line, if it fails."""
    memory = getattr(predictor, "memory", None)
    if not getattr(args, "memory_file", None) or memory is None:
        return True
    try:
        say(f"wrote the session memory ({len(memory)} notes) to {memory.save(args.memory_file)}")
        return True
    except LivegenError as exc:
        say(f"livegen: error: {exc}")
        return False


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
        preset = resolve_preset(args)
        config = session_config(preset)
        log = EventLog(args.log_json)
        stack.callback(log.close)
        predictor = load_predictor(args, preset)
        recorder = RecordingSink()
        sinks: list[Sink] = [recorder]
        synth = open_synth(args, "livegen-demo", log, say) if preset.output.synth else None
        if synth is not None:
            sinks.append(synth)
            stack.callback(synth.close)
        source = QueueSource()
        session = Session(source, predictor, MultiSink(sinks), config, passthrough=[synth] if synth else [],
                          recorder=recorder, log=log, voicing=load_voicing(predictor),
                          memory=getattr(predictor, "memory", None))
        session.start()
        log({"event": "ready", "t": time.monotonic()})
        say(f"ready: playing the demo phrase ({len(phrase)} notes), then livegen answers")
        try:
            last_release = play_into(source, phrase)
            wait_for_answer(session, last_release + config.gap_s + config.max_seconds + 5.0)
        finally:
            session.stop()
            recorder.close()
        tracks = recorder.tracks()
        if not save_memory(args, predictor, say):
            return 2
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

    parser.epilog = ("A port given by --input/--output that disappears (a keyboard unplugged, a synth quit) "
                     "is reconnected by name when it comes back. Exit codes: 0 after SIGINT/SIGTERM; "
                     "2 for an error (a port not found, a bad preset or model...); "
                     "3 when the JACK server stops while livegen runs.")
    parser.add_argument("--midi-api", choices=API_CHOICES, default="auto", help="MIDI backend (default auto: ALSA if present, else JACK)")
    parser.add_argument("--client-name", default=DEFAULT_CLIENT_NAME, help="MIDI client name (default livegen)")
    parser.add_argument("--input", metavar="PATTERN", help="listen to this existing port (exact name or substring) instead of a virtual port")
    parser.add_argument("--output", metavar="PATTERN", help="play to this existing port (exact name or substring) instead of a virtual port")
    parser.add_argument("--passthrough", action=argparse.BooleanOptionalAction, default=None,
                        help="echo the player's notes to the MIDI output (default off: a DAW hears the keyboard itself)")
    parser.add_argument("--synth-passthrough", action=argparse.BooleanOptionalAction, default=None,
                        help="play the player's notes on the built-in synth too (default on)")
    parser.add_argument("--record", metavar="FILE.mid", help="on exit, write the player and livegen to separate tracks of this file")
    parser.add_argument("--status", action=argparse.BooleanOptionalAction, default=None,
                        help="status line on stderr (default: when stderr is a terminal)")
    parser.add_argument("--learn", action="store_true",
                        help="MIDI learn: move each control when asked, the bindings are written to the preset file "
                             "(a path given to --preset, else the user preset folder)")
    parser.add_argument("--osc-port", type=number_in_range(int, 0, 65535), metavar="PORT",
                        help="listen for OSC control (/livegen/temperature f, /livegen/panic...) on this UDP port "
                             "of 127.0.0.1 (0: any free port, logged as osc_listening)")
    parser.add_argument("--osc-host", default="127.0.0.1", metavar="HOST",
                        help="address --osc-port listens on (default 127.0.0.1; 0.0.0.0 opens it to the network, on purpose)")
    parser.add_argument("--osc-send", type=host_port, metavar="HOST:PORT",
                        help="send /livegen/state s, /livegen/note ssiii and /livegen/phrase i to this UDP address")
    parser.add_argument("--view", action="store_true",
                        help="live terminal view: piano roll, state, settings; keys for presets, panic, mute, temperature")
    parser.add_argument("--view-tty", metavar="DEVICE",
                        help="draw --view on this terminal device (e.g. another window's `tty`) instead of this one")
    parser.add_argument("--learn-timeout", type=number_in_range(float, 0.1, 600.0), default=10.0, metavar="SECONDS",
                        help="how long --learn waits for each control before keeping its old binding (default 10)")


def run_daemon(args: argparse.Namespace) -> int:
    """The daemon: open ports and synth, answer phrases until SIGINT/SIGTERM, then clean up."""
    from livegen.io.hotplug import PortWatcher
    from livegen.io.ports import open_ports

    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    report_stacks_on_request()
    status = sys.stderr.isatty() if args.status is None else args.status
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731 - tiny local printer
    try:
        with ExitStack() as stack:
            loaded = presets.load(args.preset)
            preset = apply_flags(loaded, args)
            switch = switch_configs(preset, args)
            log = EventLog(args.log_json)
            stack.callback(log.close)
            predictor = load_predictor(args, preset)
            ports = open_ports(args.midi_api, args.client_name, args.input, args.output)
            exit_code = {"code": 0}  # what the watchdog exits with if the ports' close hangs

            def close_ports(error_type, *_) -> None:
                """On an error, no watchdog: its message is still to be printed on the way out."""
                close_within(ports.close, PORT_CLOSE_LIMIT_S, "closing the MIDI ports", log, say,
                             force_exit_after=None if error_type else PORT_CLOSE_LIMIT_S + FORCED_EXIT_GRACE_S,
                             force_exit_code=exit_code["code"])

            stack.push(close_ports)
            if ports.input.api == "jack":
                warn_if_not_realtime(log, say)
            watcher = PortWatcher(ports)  # now: it must see the JACK server running to notice it stop
            if args.learn:
                learned = learn_controls(ports.input, loaded, args.learn_timeout, say, stop)
                target = Path(args.preset).expanduser() if args.preset and presets.is_path(args.preset) \
                    else presets.user_dir() / f"{loaded.name}.toml"
                say(f"learn: wrote the bindings to {presets.save(learned, target)}")
                preset.controls = copy.deepcopy(learned.controls)
            config = session_config(preset)
            port_sink = MessageSink(ports.output.send)
            outputs: list[Sink] = [port_sink]
            passthrough: list[Sink] = [port_sink] if preset.output.passthrough else []
            synth = open_synth(args, args.client_name, log, say) if preset.output.synth else None
            if synth is not None:
                stack.callback(synth.close)
                outputs.append(synth)
                if preset.output.synth_passthrough:
                    passthrough.append(synth)
            recorder = RecordingSink() if args.record else None
            sink = MultiSink(outputs + ([recorder] if recorder else []))
            session = Session(ports.input, predictor, sink, config, passthrough=passthrough,
                              recorder=recorder, log=log, switch=switch, voicing=load_voicing(predictor),
                              memory=getattr(predictor, "memory", None))
            remote = open_remote(args, session, lambda name: session_config(apply_flags(presets.load(name), args)),
                                 session.emit, say, {"input": ports.input.name, "output": ports.output.name}, stop)
            session.start()
            try:
                if remote is not None:
                    stack.callback(remote.stop)  # after shut_down: the last notes and states go out too
                    remote.start()
                log({"event": "ready", "t": time.monotonic()})
                print(f"ready: listening on {ports.input.name}, playing to {ports.output.name}"
                      f"{' and the synth' if synth else ''}", flush=True)
                if remote is not None:
                    remote.start_view()
                    status = status and remote.view is None
                watch(session, watcher, ports.input, session.emit, stop, status)
            finally:
                report_stacks_if_stalled()
                shut_down(session, outputs, log)
                if recorder is not None:
                    recorder.close()
                    write_midi(args.record, recorder.tracks())
                    say(f"wrote {args.record}")
                exit_code["code"] = 0 if save_memory(args, predictor, say) else 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    exit_now(exit_code["code"])


STALL_REPORT_S = 5.0
"""A shutdown still running this long after SIGINT/SIGTERM (the contract is 2 s) prints every
thread's stack to stderr, so that a stall says where it is."""


def report_stacks_on_request() -> None:
    """``kill -USR1 <pid>`` prints every thread's stack to stderr (where signals exist).

    faulthandler answers from C, so it works even when the main thread is stuck in a native call
    and no Python signal handler could run: what a hung process needs."""
    if hasattr(signal, "SIGUSR1"):
        try:
            faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
        except (OSError, ValueError, AttributeError):  # a stderr without a file descriptor: no report
            pass


def report_stacks_if_stalled() -> None:
    try:
        faulthandler.dump_traceback_later(STALL_REPORT_S, file=sys.stderr)
    except (OSError, ValueError, AttributeError):
        pass


PORT_CLOSE_LIMIT_S = 1.0
"""How long shutdown waits for the MIDI ports to close (60 ms as a rule) before it exits anyway."""

FORCED_EXIT_GRACE_S = 0.3
"""How long past PORT_CLOSE_LIMIT_S the watchdog in C gives the main thread to take the GIL back
before it ends the process itself (see close_within)."""


def close_within(close: Callable[[], object], seconds: float, what: str, log: Callable[[dict], None],
                 say: Callable[[str], None], force_exit_after: float | None = None, force_exit_code: int = 0) -> bool:
    """``close()`` on a thread of its own, waited for at most ``seconds``; False, said and logged,
    when it is still running then.

    Why: closing a JACK port is a round trip to the server, and a server too busy to answer held
    `livegen run` for over 10 s after SIGINT (seen twice on a 2-core machine under full load, the
    thread stuck in rtmidi's close_port).  Every note-off and CC 123 was handed to the port before
    this point, and the process exits right after (exit_now), taking a thread that is still stuck
    with it: the one thread here that is not joined, on purpose.

    python-rtmidi calls into RtMidi without releasing the GIL, so a close stuck in the server can
    keep this thread from ever waking from its join.  With ``force_exit_after``, a watchdog in C
    (livegen/watchdog.py, which needs no GIL) ends the process that many seconds from now unless
    this thread cancels it first: ``Timeout (...)!`` and every thread's stack on stderr, then exit
    status ``force_exit_code``, the one the process was about to exit with (1 where the platform
    has no POSIX timers).  Only for a process about to exit anyway: it ends this one.
    """
    failed: list[BaseException] = []

    def run() -> None:
        try:
            close()
        except BaseException as exc:  # raised again below, on the caller's thread
            failed.append(exc)

    closer = threading.Thread(target=run, name="livegen-close", daemon=True)
    cancel_exit = exit_later(force_exit_after, force_exit_code) if force_exit_after is not None else None
    closer.start()
    closer.join(seconds)
    if cancel_exit is not None:
        cancel_exit()
        report_stacks_if_stalled()  # the rest of the shutdown stays watched, as before
    if not closer.is_alive():
        if failed:
            raise failed[0]
        return True
    message = f"{what} took over {seconds:g} s (the MIDI server did not answer); exiting without waiting"
    say(f"livegen: warning: {message}")
    log({"event": "error", "t": time.monotonic(), "message": f"shutdown: {message}"})
    return False


SILENCE_AGAIN_AFTER_S = 0.05
"""Pause between the session's CC 123 and the outputs' second one at shutdown (see shut_down)."""


def warn_if_not_realtime(log: Callable[[dict], None], say: Callable[[str], None]) -> None:
    """Said once at start: a JACK server without realtime scheduling can drop MIDI under load
    (livegen/io/jack_realtime.py), and only whoever starts jackd can change that."""
    from livegen.io.jack_realtime import jack_server_realtime

    if jack_server_realtime() is False:
        server = os.environ.get("JACK_DEFAULT_SERVER", "default")
        say(f"warning: JACK server {server!r} does not run in realtime mode, so MIDI can be lost under load "
            f"(start jackd with -R; see Troubleshooting in the README)")
        log({"event": "jack_not_realtime", "t": time.monotonic(), "server": server})


def shut_down(session: Session, outputs: Sequence[Sink], log: Callable[[dict], None]) -> None:
    """Leave nothing sounding: every step runs, whatever failed before it.

    ``Session.stop`` ends every note livegen started and sends CC 123 on each channel used;
    closing each output sends CC 123 again on every channel it used.  The pause between the two
    puts them in different JACK process cycles: a receiver that misses the cycle holding the
    first burst (an xrun on a loaded machine loses that cycle's MIDI) still gets the second.
    """
    steps: list[tuple[str, Callable[[], object]]] = [("session", session.stop),
                                                     ("pause", lambda: time.sleep(SILENCE_AGAIN_AFTER_S))]
    steps += [(f"closing {type(each).__name__}", each.close) for each in outputs]
    for name, step in steps:
        try:
            step()
        except Exception as exc:
            log({"event": "error", "t": time.monotonic(), "message": f"shutdown, {name}: {type(exc).__name__}: {exc}"})


def exit_now(code: int) -> NoReturn:
    """End the process here, once everything is closed, flushed and written.

    The interpreter's own teardown (freeing torch's modules and objects) takes 1-4 s of CPU on
    a loaded 2-core machine, which alone would break the 2 s SIGINT/SIGTERM contract; nothing
    left at this point needs it.
    """
    faulthandler.cancel_dump_traceback_later()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say anyway
            pass
    os._exit(code)


def learn_controls(port, preset: Preset, timeout: float, say: Callable[[str], None], stop: threading.Event) -> Preset:
    """MIDI learn: for each control, prompt, bind the next CC moved (a CC already bound, or the
    sustain pedal, is skipped); after ``timeout`` seconds without one the old binding stays."""
    learned = copy.deepcopy(preset)
    taken: set[int] = set()
    while port.get(timeout=0) is not None:  # forget what came before the first prompt
        pass
    for name in LEARNABLE:
        old = getattr(learned.controls, name)
        say(f"learn: move the control for {name}... (now {'CC ' + str(old) if old >= 0 else 'unbound'}; "
            f"{timeout:g} s to keep it)")
        deadline = time.monotonic() + timeout
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            item = port.get(timeout=min(left, 0.1))
            if item is None:
                continue
            message = item[1]
            if len(message) == 3 and message[0] & 0xF0 == mb.CONTROL_CHANGE and message[1] not in taken \
                    and message[1] != mb.CC_SUSTAIN:
                setattr(learned.controls, name, message[1])
                say(f"learn: {name} = CC {message[1]}")
                break
        else:
            say(f"learn: {name} kept ({'CC ' + str(old) if old >= 0 else 'unbound'})")
        value = getattr(learned.controls, name)
        if value >= 0:
            taken.add(value)
        for other in LEARNABLE:  # a CC moved to this control leaves the one it had
            if other != name and getattr(learned.controls, other) == value and value >= 0:
                setattr(learned.controls, other, -1)
    return learned


def watch(session: Session, watcher, port, log: Callable[[dict], None], stop: threading.Event, status: bool) -> None:
    """Until stop: follow the ports given by pattern (``watcher``, a hotplug.PortWatcher: it
    reconnects them when they come back), keep the status line fresh, log drops of the input
    ``port``.  Raises MidiServerLostError (exit code 3) when the JACK server stops:
    run_daemon's cleanup still runs, and the CLI says why in one line.
    """
    from livegen.io.hotplug import POLL_INTERVAL_S, MidiServerLostError, describe

    dropped = 0

    def say(text: str) -> None:  # above the status line, which is redrawn next
        print(("\r" + text.ljust(72)) if status else text, file=sys.stderr, flush=True)

    failure = None
    while not stop.wait(POLL_INTERVAL_S):
        try:
            events = watcher.poll()
        except MidiServerLostError as exc:
            log(exc.event)
            raise
        except Exception as exc:  # a bug in following ports must not end the session
            events = []
            if repr(exc) != failure:  # once per distinct failure, not every poll
                failure = repr(exc)
                log({"event": "error", "t": time.monotonic(), "message": f"watch: {type(exc).__name__}: {exc}"})
        for event in events:
            log(event)
            line = describe(event)
            if line is not None:
                say(line)
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
