"""`livegen SUBCOMMAND`: one entry point for the daemon and the offline tools.

Heavy modules (torch, pretty_midi, fluidsynth, matplotlib) are imported inside the subcommand
that needs them, so `livegen --help` and `livegen ports` start fast.  Every expected failure is a
LivegenError: it becomes one line on stderr and exit code 2 (or the error's own ``exit_code``:
3 when the JACK server stops under `livegen run`), never a traceback.
"""

from __future__ import annotations

import os

# numpy's OpenBLAS runs the lean step's matrix-vector product (livegen/model/lean.py) on two
# threads by default; when another process holds a core, the second thread's hand-off costs
# milliseconds (feed + sample p99 8 ms against 0.3 ms with one thread, measured with one busy
# process beside it).  A note at batch 1 gains nothing from a second thread.  This must be set
# before numpy loads; nothing above the subcommands imports it.  Set the variable to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402 - after the BLAS setting, on purpose
import sys  # noqa: E402
import time
from pathlib import Path
from typing import Callable, Sequence

from livegen import __version__
from livegen.argtypes import add_prior_arguments, number_in_range, pitch_range
from livegen.errors import LivegenError

EXIT_OK = 0
EXIT_ERROR = 2

Handler = Callable[[argparse.Namespace], int]


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="PATH", help="model folder (default: models/default)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N, mps")


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=number_in_range(float, 0.0, 10.0), default=1.0,
                        help="0 = most likely notes, 1 = as trained, >1 wilder (default 1.0)")
    parser.add_argument("--top-p", type=number_in_range(float, 0.01, 1.0), default=1.0,
                        help="nucleus sampling mass in (0, 1] (default 1.0 = off)")
    parser.add_argument("--pitch-range", type=pitch_range, default=(21, 108), metavar="LOW-HIGH",
                        help="pitches the answer may use, MIDI numbers or names (default 21-108, the piano)")
    add_prior_arguments(parser)
    parser.add_argument("--seed", type=int, help="random seed for a reproducible result")


def _add_session_flags(parser: argparse.ArgumentParser) -> None:
    from livegen.daemon import add_session_arguments

    add_session_arguments(parser)


# --- subcommands -----------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    from livegen.model.checkpoint import load_model
    from livegen.model.sampling import SamplingParams
    from livegen.model.stream import continue_notes
    from livegen.notes import Track, read_midi, write_midi

    primer = read_midi(args.primer, instrument=args.instrument)
    if args.primer_notes:
        primer = primer[-args.primer_notes :]
    model = load_model(args.model, device=args.device)
    params = SamplingParams(args.temperature, args.top_p, *args.pitch_range, key_prior=args.key_prior,
                            register_prior=args.register_prior, rhythm_temperature=args.rhythm_temperature)
    started = time.perf_counter()
    continuation = continue_notes(model, primer, args.length, params, seed=args.seed)
    elapsed = time.perf_counter() - started
    tracks = [] if args.continuation_only else [Track("primer", list(primer), program=args.program)]
    tracks.append(Track("livegen", continuation, program=args.program))
    write_midi(args.output, tracks)
    print(
        f"wrote {args.output}: {len(continuation)} new notes after a {len(primer)}-note primer "
        f"(generated in {elapsed:.2f} s)"
    )
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from livegen.io.synth import render_midi_file

    result = render_midi_file(args.input, args.output, soundfont=args.soundfont, sample_rate=args.sample_rate)
    print(f"wrote {result.path}: {result.seconds:.1f} s, {result.sample_rate} Hz stereo")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from livegen.plot import plot_midi_file

    path = plot_midi_file(args.input, args.output, distributions=args.distributions)
    print(f"wrote {path}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from livegen.daemon import run_demo

    return run_demo(args)


def cmd_run(args: argparse.Namespace) -> int:
    from livegen.daemon import run_daemon

    return run_daemon(args)


def cmd_presets(args: argparse.Namespace) -> int:
    from livegen import presets

    if args.action == "show":
        preset = presets.load(args.name)
        print(f"# {preset.path or 'built-in defaults'}")
        print(presets.dumps(preset), end="")
        return EXIT_OK
    found = presets.available()
    if not found:
        print(f"no presets found in {', '.join(str(p) for p in presets.search_path())}")
    for name, path in found.items():
        try:
            preset = presets.load(str(path))
        except LivegenError as exc:
            print(f"{name}: INVALID: {exc}")
            continue
        print(f"{name}  ({path})")
        print(f"    {preset.description}")
        print(f"    {presets.summary(preset)}")
    return EXIT_OK


def cmd_ports(args: argparse.Namespace) -> int:
    from livegen.daemon import run_ports

    return run_ports(args)


# --- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livegen",
        description="A real-time AI MIDI instrument: play a phrase, hear an LSTM continue it in time.",
    )
    parser.add_argument("--version", action="version", version=f"livegen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")

    def add(name: str, handler: Handler, help: str, **kwargs) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, **kwargs)
        p.set_defaults(handler=handler)
        return p

    p = add("run", cmd_run, "the real-time daemon: listen to a keyboard, answer in time")
    _add_session_flags(p)
    from livegen.daemon import add_run_arguments

    add_run_arguments(p)
    p = add("demo", cmd_demo, "the engine end to end with a built-in player phrase; writes MIDI and WAV")
    _add_session_flags(p)
    p.add_argument("--out", default="livegen-demo", metavar="DIR", help="folder for demo.mid and demo.wav (default ./livegen-demo)")
    p.add_argument("--phrase", type=Path, metavar="FILE.mid", help="play this MIDI file instead of the built-in phrase")
    p.add_argument("--render", action=argparse.BooleanOptionalAction, default=True, help="render demo.wav with FluidSynth")
    p = add("ports", cmd_ports, "list MIDI input and output ports per API")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("presets", cmd_presets, "list presets; `presets show NAME` prints one fully resolved")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list", help="list (default) or show")
    p.add_argument("name", nargs="?", metavar="NAME|PATH", help="the preset to show (default: the built-in defaults)")

    p = add("generate", cmd_generate, "continue a MIDI file offline")
    p.add_argument("primer", type=Path, help="MIDI file whose notes prime the model")
    p.add_argument("-o", "--output", type=Path, required=True, help="MIDI file to write")
    p.add_argument("--length", type=number_in_range(int, 1, 100_000), default=64, help="new notes (default 64)")
    _add_sampling_flags(p)
    _add_model_flags(p)
    p.add_argument("--instrument", help="primer instrument to use, by index or name (default: all non-drum merged)")
    p.add_argument("--primer-notes", type=number_in_range(int, 1, 10_000_000), metavar="N",
                   help="prime with only the last N notes of the primer")
    p.add_argument("--program", type=number_in_range(int, 0, 127), default=0, help="GM program of the output tracks (default 0, piano)")
    p.add_argument("--continuation-only", action="store_true", help="write only the new notes, not the primer")

    p = add("render", cmd_render, "render a MIDI file to a 44.1 kHz stereo WAV with FluidSynth")
    p.add_argument("input", type=Path, help="MIDI file")
    p.add_argument("-o", "--output", type=Path, required=True, help="WAV file to write")
    p.add_argument("--soundfont", help="SoundFont (.sf2); default: $LIVEGEN_SOUNDFONT, then system GM fonts")
    p.add_argument("--sample-rate", type=number_in_range(int, 8000, 192000), default=44100, help="Hz (default 44100)")

    p = add("plot", cmd_plot, "draw a piano roll of a MIDI file to PNG")
    p.add_argument("input", type=Path, help="MIDI file")
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    p.add_argument("--distributions", action="store_true", help="add pitch/step/duration/velocity histograms")

    from livegen.train.commands import add_eval_arguments, add_train_arguments, run_eval, run_train

    add_train_arguments(add("train", run_train, "train a model from MIDI folders and/or the music21 corpus"))
    add_eval_arguments(add("eval", run_eval, "metrics of models on held-out files (JSON with --json)"))
    from livegen.bench import add_bench_arguments, run_bench

    add_bench_arguments(add("bench", run_bench, "latency, timing, inference, training and startup benchmarks (JSON with --json)"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return args.handler(args)
    except LivegenError as exc:
        print(f"livegen {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_ERROR)  # 3: the JACK server stopped under `run`
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
