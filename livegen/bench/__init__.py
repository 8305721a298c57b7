"""`livegen bench`: latency, timing, inference, training and startup figures on this machine.

    livegen bench                      # everything, a table (about 5-8 minutes)
    livegen bench latency inference    # a subset
    livegen bench --json -o bench.json # the JSON report (schema: REPORT_KEYS, see BENCHMARKS.md)

Benchmarks (names for the positional argument):
- ``latency``: the real daemon (``livegen run --midi-api jack --no-synth``) on a private JACK
  server (dummy driver), played by a separate client process with phrases cut from real MIDI
  files; then the same with a second client flooding the input (``--flood-rate``, 0 to skip);
  then again on a second server at the stage setting, 32 frames (``--stage-period``, 0 to skip).
  jackd runs in realtime mode (``-R``) where this user may, as on stage.
  Response latency = first answer note-on's arrival - (last note-off sent + gap); timing = each
  answer note-on's arrival - its ``intended`` time in the daemon's ``--log-json``; barge-in =
  a key pressed just after an answer's first note-on arrived -> the last note-off of the notes
  then sounding (``--barge-ins`` presses, p50 and p99).
- ``inference``: per-note ``NoteStream.feed``/``sample`` of the model vs the seed recipe's way.
- ``train``: training throughput of the default architecture vs the seed recipe.
- ``startup``: launch -> ``ready`` line, and the daemon's peak RSS.

Nothing is installed or downloaded; a benchmark that cannot run here (no jackd) is reported as
skipped with the reason.  Every report names the machine, the versions and the git commit.
The exit code is 0 when every target measured passed, 1 when one failed (named on stderr).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from livegen import __version__
from livegen.bench.harmonize import TARGETS as HARMONIZE_TARGETS

BENCHMARKS = ("latency", "inference", "train", "startup", "harmonize", "memory")
SCHEMA = 1
REPORT_KEYS = ("schema", "livegen_bench", "command", "started", "elapsed_s", "machine", "versions", "git", "config",
               "results", "targets", "skipped")

# (name, where in results, limit, "max" = measured must be <= limit, "min" = >=, unit)
TARGETS = (
    ("response latency median", ("latency", "response_ms", "median"), 3.0, "max", "ms"),
    ("response latency p99", ("latency", "response_ms", "p99"), 10.0, "max", "ms"),
    ("timing p99", ("latency", "timing_ms", "p99"), 2.0, "max", "ms"),
    ("barge-in p99", ("latency", "barge_in_ms", "p99"), 20.0, "max", "ms"),
    ("timing p99 under flood", ("latency_flood", "timing_ms", "p99"), 2.0, "max", "ms"),
    ("stage period: phrases missed", ("latency_stage", "missed"), 0, "max", ""),
    ("stage period: response p99", ("latency_stage", "response_ms", "p99"), 10.0, "max", "ms"),
    ("per-note feed + sample median (CPU)", ("inference", "devices", "cpu", "stream", "feed_plus_sample_ms", "median"), 0.3, "max", "ms"),
    ("inference speedup vs seed way", ("inference", "devices", "cpu", "speedup_vs_seed_way"), 10.0, "min", "x"),
    ("training throughput vs seed recipe", ("train", "ratio"), 10.0, "min", "x"),
    ("startup to ready", ("startup", "ready_s", "median"), 3.0, "max", "s"),
    *HARMONIZE_TARGETS,
    ("feed + sample with session memory median (CPU)", ("memory", "with_memory", "feed_sample_ms", "median"), 0.3, "max", "ms"),
)


# --- machine and versions -------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def machine_info() -> dict:
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "arch": platform.machine(), "memory_gb": _memory_gb(),
            "gpu": gpu, "os": platform.platform()}


def versions() -> dict:
    from livegen.bench.jack import jackd_version

    found = {"python": platform.python_version(), "livegen": __version__}
    for module in ("torch", "numpy", "rtmidi"):
        try:
            found[module] = getattr(__import__(module), "__version__", "?")
        except ImportError:
            found[module] = None
    found["jackd"] = jackd_version()
    return found


def git_info() -> dict | None:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


# --- targets --------------------------------------------------------------------------------------


def _lookup(results: dict, path: tuple[str, ...]):
    value = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def check_targets(results: dict) -> list[dict]:
    checked = []
    for name, path, limit, kind, unit in TARGETS:
        measured = _lookup(results, path)
        if measured is None:
            continue
        ok = measured <= limit if kind == "max" else measured >= limit
        checked.append({"name": name, "measured": measured, "target": f"{'<=' if kind == 'max' else '>='} {limit:g} {unit}",
                        "pass": bool(ok)})
    return checked


# --- running --------------------------------------------------------------------------------------


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                        help=f"which to run: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="also write the JSON report here")
    parser.add_argument("--model", metavar="PATH", help="model folder (default: models/default)")
    lat = parser.add_argument_group("latency")
    lat.add_argument("--phrases", type=int, default=60, help="phrases per latency run (default 60)")
    lat.add_argument("--gap-ms", type=float, default=200.0, help="daemon --gap-ms (default 200)")
    lat.add_argument("--length", type=int, default=4, help="daemon --length, notes per answer (default 4)")
    lat.add_argument("--barge-ins", type=int, default=20,
                     help="phrases barged in on after the measured ones, for the barge-in latency (default 20)")
    lat.add_argument("--max-seconds", type=float, default=1.0, help="daemon --max-seconds (default 1)")
    lat.add_argument("--flood-rate", type=float, default=5000.0,
                     help="messages/s from the flood client in the stress run; 0 skips it (default 5000)")
    lat.add_argument("--jack-rate", type=int, default=48000, help="JACK sample rate (default 48000)")
    lat.add_argument("--jack-period", type=int, default=64, help="JACK frames per period (default 64)")
    lat.add_argument("--stage-period", type=int, default=32,
                     help="JACK frames per period of a further run at the stage setting; 0 skips it (default 32)")
    lat.add_argument("--jack-sync", action="store_true",
                     help="run the private jackd servers synchronous (jackd -S): a cycle a client finishes late "
                          "comes late instead of losing its MIDI, for machines that miss short periods (a VM); "
                          "the default is jackd's asynchronous mode, as on stage")
    lat.add_argument("--daemon-command", metavar="CMD",
                     help="daemon to measure instead of `livegen run` (a shell-quoted command; the harness "
                          "appends --midi-api jack --no-synth --log-json FILE --gap-ms ...)")
    lat.add_argument("--view", action="store_true",
                     help="run the daemon with its live view on (--view, drawn into a pseudo-terminal this "
                          "bench reads): the view must cost the engine nothing, so the targets stay the same")
    lat.add_argument("--startup-runs", type=int, default=3, help="daemon launches timed by `startup` (default 3)")
    inf = parser.add_argument_group("inference and training")
    inf.add_argument("--steps", type=int, default=10_000, help="streamed steps timed (default 10000)")
    inf.add_argument("--seed-steps", type=int, default=2_000, help="steps timed the seed recipe's way (default 2000)")
    inf.add_argument("--train-seconds", type=float, default=10.0, help="seconds of training timed per recipe (default 10)")
    inf.add_argument("--train-files", type=int, default=40, help="music21 Bach chorales used as data (default 40)")


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def stage_latency(args: argparse.Namespace, daemon_command: list[str], config) -> dict:
    """The latency run again, on its own jackd at ``--stage-period`` frames (issue 15: MIDI was
    lost at 32 frames with jackd -R); ``period`` and ``realtime`` say what it ran at."""
    import tempfile

    from livegen.bench.jack import jack_server
    from livegen.bench.latency import load_phrases, run_session

    phrases = load_phrases(args.phrases)
    with jack_server(args.jack_rate, args.stage_period, sync=args.jack_sync) as server, \
            tempfile.TemporaryDirectory(prefix="livegen-bench-") as tmp:
        _say(f"latency at {args.stage_period} frames ({'realtime' if server.realtime else 'not realtime'}): "
             f"{len(phrases)} phrases")
        figures = run_session(server, daemon_command, phrases, config, Path(tmp))
    return {**figures, "period": args.stage_period, "realtime": server.realtime}


def run_benchmarks(args: argparse.Namespace) -> dict:
    from livegen.bench.jack import BenchError, jack_server
    from livegen.bench.latency import LatencyConfig, default_daemon_command, load_phrases, measure_startup, run_session

    wanted = list(dict.fromkeys(args.benchmarks or BENCHMARKS))
    unknown = [w for w in wanted if w not in BENCHMARKS]
    if unknown:
        raise BenchError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    started = time.monotonic()
    daemon_command = shlex.split(args.daemon_command) if args.daemon_command else default_daemon_command(args.model)
    config = LatencyConfig(phrases=args.phrases, gap_ms=args.gap_ms, length=args.length, max_seconds=args.max_seconds,
                           barge_ins=min(args.barge_ins, args.phrases))
    report: dict = {
        "schema": SCHEMA, "livegen_bench": __version__, "command": ["livegen", "bench", *sys.argv[2:]]
        if sys.argv[1:2] == ["bench"] else sys.argv,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "versions": versions(), "git": git_info(),
        "config": {"benchmarks": wanted, "daemon_command": daemon_command, "latency": config.to_dict(),
                   "flood_rate": args.flood_rate, "jack": {"driver": "dummy", "rate": args.jack_rate,
                                                          "period": args.jack_period,
                                                          "stage_period": args.stage_period,
                                                          "sync": args.jack_sync},
                   "steps": args.steps, "seed_steps": args.seed_steps, "train_seconds": args.train_seconds},
        "results": {}, "skipped": {},
    }
    results, skipped = report["results"], report["skipped"]
    if "latency" in wanted or "startup" in wanted:
        import contextlib
        import tempfile

        try:
            with jack_server(args.jack_rate, args.jack_period, sync=args.jack_sync) as server, \
                    tempfile.TemporaryDirectory(prefix="livegen-bench-") as tmp, contextlib.ExitStack() as stack:
                if getattr(args, "view", False):
                    from livegen.bench.terminal import PseudoTerminal

                    view = stack.enter_context(PseudoTerminal())
                    daemon_command = [*daemon_command, "--view", "--view-tty", view.path]
                    report["config"]["view"] = True
                    stack.callback(lambda: report["config"].update(view_drawn_bytes=view.drawn))
                report["config"]["jack"]["realtime"] = server.realtime
                if "startup" in wanted:
                    _say(f"startup: {args.startup_runs} daemon launches")
                    results["startup"] = measure_startup(daemon_command, server, args.startup_runs)
                if "latency" in wanted:
                    phrases = load_phrases(args.phrases)
                    _say(f"latency: {len(phrases)} phrases")
                    results["latency"] = run_session(server, daemon_command, phrases, config, Path(tmp))
                    if args.flood_rate > 0:
                        _say(f"latency under a {args.flood_rate:g} messages/s flood: {len(phrases)} phrases")
                        flood = LatencyConfig(**{**config.to_dict(), "flood_rate": args.flood_rate, "barge_ins": 0})
                        results["latency_flood"] = run_session(server, daemon_command, phrases, flood, Path(tmp))
            if "latency" in wanted and args.stage_period > 0:
                results["latency_stage"] = stage_latency(args, daemon_command, config)
        except BenchError as exc:
            if "jackd is not installed" not in str(exc):
                raise
            for name in ("startup", "latency"):
                if name in wanted:
                    skipped[name] = str(exc)
        if "startup" in results and "latency" in results:
            rss = [r for r in (results["startup"].get("peak_rss_mb_idle"), results["latency"]["daemon"]["peak_rss_mb"],
                               results.get("latency_flood", {}).get("daemon", {}).get("peak_rss_mb")) if r]
            results["startup"]["peak_rss_mb"] = max(rss) if rss else None
    if "harmonize" in wanted:
        from livegen.bench.harmonize import bench as bench_harmonize

        bench_harmonize(args, results, skipped, _say)
    if "inference" in wanted:
        from livegen.bench.inference import bench_inference

        _say(f"inference: {args.steps} streamed steps, {args.seed_steps} the seed recipe's way")
        results["inference"] = bench_inference(args.model, args.steps, args.seed_steps)
    if "train" in wanted:
        from livegen.bench.train import bench_train

        _say(f"train: {args.train_seconds:g} s per recipe")
        results["train"] = bench_train(args.model, args.train_seconds, args.train_files)
    if "memory" in wanted:  # livegen.bench.memory: the session memory's cost per note
        from livegen.bench.memory import bench_memory

        _say(f"memory: {args.steps // 2} notes fed and sampled with and without the session memory")
        results["memory"] = bench_memory(args.model, max(args.steps // 2, 100))
    report["targets"] = check_targets(results)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report


# --- table ----------------------------------------------------------------------------------------


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: dict) -> str:
    r = report["results"]
    m, v, g = report["machine"], report["versions"], report.get("git") or {}
    lines = [
        f"livegen bench  {report['started']}  ({report['elapsed_s']} s)",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, GPU: {', '.join(m['gpu']) if m['gpu'] else 'none'}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"git: {g.get('commit', '?')[:12]}{' (dirty)' if g.get('dirty') else ''}",
        "",
    ]
    stage = f"latency at {r['latency_stage']['period']} frames" if "latency_stage" in r else ""
    for key, title in (("latency", "latency"), ("latency_flood", "latency under flood"), ("latency_stage", stage)):
        if key not in r:
            continue
        x = r[key]
        resp, tim = x["response_ms"] or {}, x["timing_ms"] or {}
        lines.append(f"{title}: {x['answered']}/{x['phrases']} phrases answered"
                     + (f"; {x['flood']}" if x.get("flood") else ""))
        lines.append(f"  response ms  median {_f(resp.get('median'))}  p95 {_f(resp.get('p95'))}  "
                     f"p99 {_f(resp.get('p99'))}  max {_f(resp.get('max'))}")
        lines.append(f"  timing ms    median {_f(tim.get('median'))}  p99 {_f(tim.get('p99'))}  max {_f(tim.get('max'))}"
                     f"  (n={tim.get('n', 0)})")
        if x.get("barge_in_ms"):
            barge = x["barge_in_ms"]
            lines.append(f"  barge-in ms  median {_f(barge['median'])}  p99 {_f(barge['p99'])}  max {_f(barge['max'])}"
                         f"  (n={barge['n']} of {x['barge_ins']['tried']})")
        b = x["breakdown_ms"]
        lines.append("  breakdown ms " + "  ".join(
            f"{name} p50/p99 {_f((b[name] or {}).get('median'))}/{_f((b[name] or {}).get('p99'))}"
            for name in ("trigger_after_phrase_end", "scheduler_lateness", "delivery")))
    if "inference" in r:
        for device, d in r["inference"]["devices"].items():
            s = d["stream"]
            lines.append(f"inference ({device}, {r['inference']['torch_threads']} threads): feed median "
                         f"{_f(s['feed_ms']['median'], 3)} ms p99 {_f(s['feed_ms']['p99'], 3)}; sample median "
                         f"{_f(s['sample_ms']['median'], 3)} ms p99 {_f(s['sample_ms']['p99'], 3)}; seed way "
                         f"{_f(d['seed_way']['best_ms']['median'], 3)} ms -> {d['speedup_vs_seed_way']}x")
        if "seed_baseline_model_cpu" in r["inference"]:
            sb = r["inference"]["seed_baseline_model_cpu"]["best_ms"]
            lines.append(f"  seed-baseline model (LSTM 128, 25-note window) per note: {_f(sb['median'], 3)} ms")
    if "train" in r:
        t = r["train"]
        lines.append(f"train ({t['data']['pieces']} pieces, {t['torch_threads']} threads): default "
                     f"{t['default']['notes_per_second']:.0f} notes/s, seed recipe {t['seed_recipe']['notes_per_second']:.0f}"
                     f" notes/s -> {t['ratio']}x")
    if "startup" in r:
        s = r["startup"]
        lines.append(f"startup: ready in {_f(s['ready_s']['median'])} s (median of {s['runs']}); "
                     f"peak RSS {s.get('peak_rss_mb', s.get('peak_rss_mb_idle'))} MB")
    if "harmonize" in r:
        from livegen.bench.harmonize import format_lines

        lines += format_lines(r["harmonize"])
    if "memory" in r:
        m = r["memory"]
        lines.append(f"memory (weight {m['weight']}, {m['memory_notes']} notes): feed + sample median "
                     f"{_f(m['with_memory']['feed_sample_ms']['median'], 3)} ms, without "
                     f"{_f(m['without_memory']['feed_sample_ms']['median'], 3)} ms -> cost {_f(m['cost_ms'], 3)} ms")
    for name, reason in report["skipped"].items():
        lines.append(f"{name}: skipped ({reason})")
    if report["targets"]:
        lines += ["", f"{'target':38} {'measured':>10}  {'goal':>10}  result"]
        for t in report["targets"]:
            lines.append(f"{t['name']:38} {t['measured']:>10.3f}  {t['target']:>10}  {'pass' if t['pass'] else 'FAIL'}")
    return "\n".join(lines)


EXIT_TARGET_FAILED = 1


def failed_targets(report: dict) -> list[str]:
    """``name (measured, goal)`` of every target that failed; empty when all measured passed."""
    return [f"{t['name']} ({t['measured']:g}, goal {t['target']})" for t in report["targets"] if not t["pass"]]


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every finally block stops its process


def run_bench(args: argparse.Namespace) -> int:
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    report = run_benchmarks(args)
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text if args.json else format_table(report), flush=True)
    failed = failed_targets(report)
    if failed:
        print(f"livegen bench: {len(failed)} target(s) failed: {'; '.join(failed)}", file=sys.stderr, flush=True)
        return EXIT_TARGET_FAILED
    return 0
