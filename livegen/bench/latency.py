"""The latency harness: a real daemon on a private JACK server, played by a separate client process.

``measure_latency(daemon_command, ...)`` starts the daemon (``daemon_command`` plus the contract
flags: ``--midi-api jack --no-synth --log-json FILE --gap-ms --length --max-seconds --seed``),
waits for its ``ready`` line, optionally starts the flood client, runs the player process
(livegen/bench/player.py), stops everything, and measures:

- response latency per phrase: first answer note-on's arrival at the player minus the phrase-end
  instant (the player's last note-off send time + gap).  A phrase counts only once its answer's
  first note arrived; the others are reported as ``missed``.
- timing per answer note-on: its arrival at the player minus its ``intended`` time in the
  daemon's ``--log-json``, split into scheduler lateness (``sent - intended``) and delivery
  (``arrival - sent``).  One clock: ``time.monotonic()`` in every process on one machine.
- barge-in latency: the player presses a key just after an answer's first note-on arrived; from
  that press to the arrival of the last note-off (or CC 123) of the notes then sounding.  A press
  when nothing was sounding is counted in ``barge_ins.nothing_sounding``, not measured.

Any program that speaks the same contract can be measured: the tests pass a fake daemon that
answers 50 ms late and check that this harness says so.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from livegen.bench.jack import BenchError, JackServer, die_with_parent, jack_server, stop_process
from livegen.bench.player import is_note_off, is_note_on
from livegen.midi_bytes import CC_ALL_NOTES_OFF, CONTROL_CHANGE

DEMO_PHRASE = Path(__file__).resolve().parent.parent / "data" / "demo_phrase.mid"

Phrase = list[list[float]]  # [[pitch, velocity, hold_s, rest_s], ...]


@dataclass(frozen=True)
class LatencyConfig:
    phrases: int = 60
    gap_ms: float = 200.0
    length: int = 4
    max_seconds: float = 1.0
    flood_rate: float = 0.0  # messages per second from a second client; 0 = none
    barge_ins: int = 20  # phrases played again and barged in on after the measured ones
    seed: int = 1
    client_prefix: str = "livegen"
    ready_timeout: float = 120.0

    def to_dict(self) -> dict:
        return asdict(self)


# --- phrases from real MIDI files ----------------------------------------------------------------


def phrase_files() -> list[Path]:
    """The demo phrase, then the MIDI files the music21 package ships (when installed)."""
    files = [DEMO_PHRASE]
    try:
        import music21
    except ImportError:
        return files
    root = Path(music21.__file__).parent
    files += sorted(p for p in root.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    return files


def cut_phrases(notes_by_file: Sequence[Sequence], count: int, sizes: Sequence[int] = (3, 4, 5, 6),
                hold: tuple[float, float] = (0.04, 0.12), rest: tuple[float, float] = (0.01, 0.05)) -> list[Phrase]:
    """Cut melodies (one note per onset, in order) into ``count`` short phrases, cycling through
    the files; holds and rests are the files' own, clamped so a phrase lasts well under a second."""
    melodies = []
    for notes in notes_by_file:
        line, last_start = [], None
        for n in sorted(notes, key=lambda n: (n.start, -n.pitch)):
            if n.start != last_start:  # the top note of a chord
                line.append(n)
                last_start = n.start
        if len(line) >= min(sizes):
            melodies.append(line)
    if not melodies:
        raise BenchError("no usable MIDI phrases")
    phrases: list[Phrase] = []
    cursors = [0] * len(melodies)
    k = 0
    while len(phrases) < count:
        m = k % len(melodies)
        size = sizes[k % len(sizes)]
        k += 1
        line = melodies[m]
        if cursors[m] + size > len(line):
            cursors[m] = 0
        chunk = line[cursors[m] : cursors[m] + size]
        cursors[m] += size
        phrase = []
        for i, n in enumerate(chunk):
            h = float(np.clip(n.end - n.start, *hold))
            gap_to_next = chunk[i + 1].start - n.end if i + 1 < len(chunk) else 0.0
            r = float(np.clip(gap_to_next, *rest)) if i + 1 < len(chunk) else 0.0
            phrase.append([int(n.pitch), int(np.clip(n.velocity, 30, 127)), round(h, 4), round(r, 4)])
        phrases.append(phrase)
    return phrases


def load_phrases(count: int, files: Sequence[Path] | None = None) -> list[Phrase]:
    import warnings

    from livegen.notes import read_midi

    warnings.filterwarnings("ignore", module="pretty_midi")
    notes_by_file = []
    for path in files or phrase_files():
        try:
            notes_by_file.append(read_midi(path))
        except Exception:  # a test file music21 ships broken on purpose: skip it
            continue
    return cut_phrases(notes_by_file, count)


# --- statistics -----------------------------------------------------------------------------------


def summary_ms(values_s: Sequence[float]) -> dict | None:
    """median, p95, p99, max, mean and n of durations in seconds, as milliseconds."""
    if len(values_s) == 0:
        return None
    ms = np.asarray(values_s, dtype=float) * 1000.0
    return {"n": int(len(ms)), "median": round(float(np.median(ms)), 3), "p95": round(float(np.percentile(ms, 95)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3), "max": round(float(ms.max()), 3),
            "min": round(float(ms.min()), 3), "mean": round(float(ms.mean()), 3)}


def match_note_ons(log_ons: list[dict], arrivals: list[tuple[float, list[int]]]) -> list[tuple[dict, float]]:
    """Pair each logged note-on with its arrival at the player: same pitch, in order, not before
    it was sent (1 ms slack for clock reads on different threads)."""
    pairs, j = [], 0
    for event in sorted(log_ons, key=lambda e: e["sent"]):
        k = j
        while k < len(arrivals):
            t, m = arrivals[k]
            if t > event["sent"] + 1.0:  # never arrived: leave it unmatched
                break
            if m[1] == event["pitch"] and t >= event["sent"] - 0.001:
                pairs.append((event, t))
                j = k + 1
                break
            k += 1
    return pairs


def barge_in_latencies(barges: list[dict], messages: list[tuple[float, list[int]]]) -> tuple[list[float], int]:
    """Press -> last note-off (or CC 123) of the notes sounding at the press, for each press;
    and how many presses found nothing sounding (or a note never closed) and were not measured."""
    latencies, unmeasured = [], 0
    for barge in barges:
        pressed, channel = barge["pressed"], barge.get("channel", 0)
        sounding: dict[int, int] = {}
        closed: dict[int, float] = {}
        for t, m in messages:
            if len(m) < 3 or m[0] & 0x0F != channel:
                continue
            if t < pressed:
                if is_note_on(m):
                    sounding[m[1]] = sounding.get(m[1], 0) + 1
                elif is_note_off(m) and sounding.get(m[1]):
                    sounding[m[1]] -= 1
                elif m[0] & 0xF0 == CONTROL_CHANGE and m[1] == CC_ALL_NOTES_OFF:
                    sounding.clear()
                continue
            keys = [k for k, n in sounding.items() if n]
            if is_note_off(m) and m[1] in keys:
                closed.setdefault(m[1], t)
            elif m[0] & 0xF0 == CONTROL_CHANGE and m[1] == CC_ALL_NOTES_OFF:
                for key in keys:
                    closed.setdefault(key, t)
        keys = [k for k, n in sounding.items() if n]
        if not keys or len(closed) < len(keys):
            unmeasured += 1
        else:
            latencies.append(max(closed[k] for k in keys) - pressed)
    return latencies, unmeasured


def analyze(player: dict, events: list[dict], gap_s: float) -> dict:
    """Player result + daemon log -> latency and timing figures."""
    arrivals = [(t, m) for t, m in player["arrivals"] if is_note_on(m)]
    phrases = player["phrases"]
    triggers = sorted(e["t"] for e in events if e.get("event") == "trigger")
    latencies, detection, missed = [], [], 0
    for i, p in enumerate(phrases):
        end = p["release"] + gap_s
        until = phrases[i + 1]["start"] if i + 1 < len(phrases) else float("inf")
        first = next((t for t, _ in arrivals if p["release"] < t < until), None)
        if first is None:
            missed += 1
            continue
        latencies.append(first - end)
        trigger = next((t for t in triggers if p["release"] < t < until), None)
        if trigger is not None:
            detection.append(trigger - end)
    log_ons = [e for e in events if e.get("event") == "note_on" and "sent" in e]
    pairs = match_note_ons(log_ons, arrivals)
    barges = player.get("barges", [])
    barge_ms, unmeasured = barge_in_latencies(barges, [(t, m) for t, m in player["arrivals"]])
    return {
        "phrases": len(phrases),
        "answered": len(latencies),
        "missed": missed,
        "response_ms": summary_ms(latencies),
        "timing_ms": summary_ms([t - e["intended"] for e, t in pairs]),
        "barge_in_ms": summary_ms(barge_ms),
        "barge_ins": {"tried": len(barges), "measured": len(barge_ms), "nothing_sounding": unmeasured},
        "breakdown_ms": {
            "trigger_after_phrase_end": summary_ms(detection),
            "scheduler_lateness": summary_ms([e["sent"] - e["intended"] for e, _ in pairs]),
            "delivery": summary_ms([t - e["sent"] for e, t in pairs]),
            "first_note_scheduler_lateness": summary_ms(first_note_lateness(log_ons, triggers)),
        },
        "note_ons": {"logged": len(log_ons), "arrived": len(arrivals), "matched": len(pairs)},
        "worst_ms": sorted((round(v * 1000, 3) for v in latencies), reverse=True)[:5],
        "errors": [e.get("message") for e in events if e.get("event") == "error"][:10],
        "dropped_input": sum(int(e.get("messages", 0)) for e in events if e.get("event") == "dropped"),
    }


def first_note_lateness(log_ons: list[dict], triggers: list[float]) -> list[float]:
    """sent - intended of each answer's first note (the one the response latency measures)."""
    out = []
    for trigger in triggers:
        first = next((e for e in sorted(log_ons, key=lambda e: e["intended"]) if e["intended"] >= trigger - 1e-6), None)
        if first is not None:
            out.append(first["sent"] - first["intended"])
    return out


# --- processes ------------------------------------------------------------------------------------


def _read_lines(stream, lines: "queue.Queue[str | None]") -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def wait_for_line(lines: "queue.Queue[str | None]", prefix: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:
            return None
        if line.startswith(prefix):
            return line


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, Linux only."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


class DaemonProcess:
    """The daemon under test: started, awaited until ``ready``, always stopped."""

    def __init__(self, command: Sequence[str], env: dict, workdir: Path, extra: Sequence[str] = ()) -> None:
        self.log_path = workdir / f"events-{time.monotonic_ns()}.jsonl"
        self.stderr_path = self.log_path.with_suffix(".stderr")
        self.command = [*command, "--midi-api", "jack", "--no-synth", "--log-json", str(self.log_path), *extra]
        self.env = env
        self.process: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self.peak_rss_mb: float | None = None
        self.exit_code: int | None = None

    def start(self, timeout: float) -> None:
        self._stderr = open(self.stderr_path, "w")
        started = time.monotonic()
        self.process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=self._stderr, text=True, preexec_fn=die_with_parent)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(self.process.stdout, self._lines), daemon=True).start()
        if wait_for_line(self._lines, "ready", timeout) is None:
            self.stop()
            raise BenchError(f"the daemon printed no ready line within {timeout:g} s: {' '.join(self.command)}\n"
                             f"{self.stderr()[-2000:]}")
        self.startup_s = time.monotonic() - started

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def events(self) -> list[dict]:
        records = []
        try:
            text = self.log_path.read_text()
        except OSError:
            return records
        for line in text.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.peak_rss_mb = peak_rss_mb(self.process.pid)
        stop_process(self.process, 10.0)
        self.exit_code = self.process.returncode
        self._stderr.close()


def start_flood(env: dict, rate: float, prefix: str) -> tuple[subprocess.Popen, queue.Queue]:
    process = subprocess.Popen([sys.executable, "-m", "livegen.bench.flood", "--rate", str(rate), "--client-prefix", prefix],
                               env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=die_with_parent)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    if wait_for_line(lines, "ready", 30.0) is None:
        stop_process(process)
        raise BenchError("the flood client did not connect within 30 s")
    return process, lines


def run_session(server: JackServer, daemon_command: Sequence[str], phrases: list[Phrase], config: LatencyConfig,
                workdir: Path) -> dict:
    """One daemon, one player (and the flood when asked) -> measurements."""
    gap = config.gap_ms / 1000.0
    daemon = DaemonProcess(daemon_command, server.env, workdir, [
        "--gap-ms", f"{config.gap_ms:g}", "--length", str(config.length), "--max-seconds", f"{config.max_seconds:g}",
        "--seed", str(config.seed)])
    flood = None
    flood_report = None
    spec_path, result_path = workdir / "spec.json", workdir / "result.json"
    spec = {"phrases": phrases, "gap": gap, "length": config.length, "answer_timeout": config.max_seconds + 1.5,
            "settle": 0.1, "client_prefix": config.client_prefix, "channel": 0, "barge_ins": config.barge_ins}
    spec_path.write_text(json.dumps(spec))
    try:
        daemon.start(config.ready_timeout)
        if config.flood_rate > 0:
            flood, flood_lines = start_flood(server.env, config.flood_rate, config.client_prefix)
        per_phrase = [sum(n[2] + n[3] for n in p) + gap + spec["answer_timeout"] + 0.2 for p in phrases]
        budget = sum(per_phrase) + 2 * sum(per_phrase[: config.barge_ins]) + 60
        player = subprocess.run([sys.executable, "-m", "livegen.bench.player", str(spec_path), str(result_path)],
                                env=server.env, capture_output=True, text=True, timeout=budget,
                                preexec_fn=die_with_parent)
        if player.returncode != 0:
            raise BenchError(f"the player failed ({player.returncode}):\n{player.stderr[-2000:]}")
    finally:
        if flood is not None:
            stop_process(flood)
            flood_report = wait_for_line(flood_lines, "sent", 2.0)
        daemon.stop()
    result = json.loads(result_path.read_text())
    figures = analyze(result, daemon.events(), gap)
    figures["daemon"] = {"startup_s": round(daemon.startup_s, 3), "peak_rss_mb": daemon.peak_rss_mb,
                         "exit_code": daemon.exit_code}
    if flood_report:
        figures["flood"] = flood_report.strip()
    figures["ports"] = result.get("ports")
    return figures


def measure_latency(daemon_command: Sequence[str], config: LatencyConfig = LatencyConfig(),
                    phrases: list[Phrase] | None = None, server: JackServer | None = None,
                    rate: int = 48000, period: int = 64) -> dict:
    """Run one latency session (own JACK server unless one is given) -> figures dict."""
    phrases = phrases if phrases is not None else load_phrases(config.phrases)
    with tempfile.TemporaryDirectory(prefix="livegen-bench-") as tmp:
        if server is not None:
            return run_session(server, daemon_command, phrases, config, Path(tmp))
        with jack_server(rate, period) as own:
            return run_session(own, daemon_command, phrases, config, Path(tmp))


def measure_startup(daemon_command: Sequence[str], server: JackServer, runs: int = 3, timeout: float = 120.0) -> dict:
    """Time from launching the daemon to its ready line, ``runs`` times; peak RSS once ready."""
    times, rss = [], []
    with tempfile.TemporaryDirectory(prefix="livegen-bench-") as tmp:
        for _ in range(runs):
            daemon = DaemonProcess(daemon_command, server.env, Path(tmp))
            try:
                daemon.start(timeout)
                time.sleep(0.3)
            finally:
                daemon.stop()
            times.append(daemon.startup_s)
            if daemon.peak_rss_mb is not None:
                rss.append(daemon.peak_rss_mb)
    return {"runs": runs, "ready_s": {"median": round(float(np.median(times)), 3), "max": round(max(times), 3),
                                      "all": [round(t, 3) for t in times]},
            "peak_rss_mb_idle": max(rss) if rss else None}


def default_daemon_command(model: str | os.PathLike | None = None) -> list[str]:
    command = [sys.executable, "-m", "livegen", "run"]
    if model is not None:
        command += ["--model", str(model)]
    return command
