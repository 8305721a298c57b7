"""The live view: the Textual app driven by Textual's pilot (keys, drawing), and `livegen run
--view` for real in a headless tmux terminal, played through JACK: the state changes and the notes
of a phrase and of its answer appear; keys reach the daemon."""

from __future__ import annotations

import asyncio
import html
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time

import pytest

from daemon_driver import wait
from livegen.view.link import ViewFeed, describe
from livegen.view.roll import Roll
from midi_probe import port_matcher


def snapshot(t, state, notes, temperature=1.0, events=()):
    return {"t": t, "state": state, "preset": "default", "phrases": 1,
            "settings": [["temperature", temperature, 21], ["length", 32, 22], ["mute", "off", 26]],
            "ports": {"input": "livegen:in", "output": "livegen-01:out"}, "presets": ["ballad", "default", "wild"],
            "latency_ms": 0.4, "timing_ms": {"median": 0.2, "max": 0.5, "n": 4}, "osc": {},
            "notes": notes, "events": [[t, e] for e in events]}


def screen_rows(app) -> list[str]:
    """The app's screen as text rows (from its SVG screenshot: one <text> run per style)."""
    rows: dict[float, list[str]] = {}
    for y, body in re.findall(r'<text[^>]*?y="([\d.]+)"[^>]*>(.*?)</text>', app.export_screenshot()):
        rows.setdefault(float(y), []).append(html.unescape(body).replace("\xa0", " "))
    return ["".join(rows[y]) for y in sorted(rows)]


def test_the_roll_keeps_spans_and_draws_each_side_in_its_colour():
    roll = Roll(span_s=4.0)
    roll.add(0.0, "player", True, 0, 60)
    roll.add(0.5, "player", False, 0, 60)
    roll.add(1.0, "livegen", True, 0, 64)
    roll.add(1.0, "player", True, 0, 64)  # the same pitch at once: a third colour
    text = roll.render(2.0, 4 + 40, 13)
    lines = text.plain.split("\n")
    c4 = next(line for line in lines if line.startswith("C4"))
    e4 = next(line for line in lines if line.startswith("E4"))
    assert c4[4:].count("█") == 5 and e4[4:].count("█") == 10  # 0.1 s a column
    styles = {str(span.style) for span in text.spans if set(text.plain[span.start:span.end]) == {"█"}}
    assert styles == {"bold cyan", "bold white"}  # livegen's E4 is under the player's: "both"
    assert roll.last == {"player": [60, 64], "livegen": [64]}


def test_the_view_app_shows_state_notes_and_sends_keys_headless():
    sent = []

    async def drive():
        app = __import__("livegen.view.app", fromlist=["ViewApp"]).ViewApp(send=sent.append)
        async with app.run_test(size=(110, 44)) as pilot:
            app.show(snapshot(1.0, "listening", [[0.2, "player", True, 0, 60, 90], [0.4, "player", False, 0, 60, 0],
                                                 [0.5, "player", True, 0, 64, 90]], events=["control: length = 4"]))
            await pilot.pause()
            first = screen_rows(app)
            app.show(snapshot(2.0, "playing", [[0.7, "player", False, 0, 64, 0], [1.5, "livegen", True, 0, 67, 80]]))
            await pilot.pause()
            second = screen_rows(app)
            await pilot.press("up", "down", "p", "m", "right", "left", "e")
            await pilot.press("q")
            return first, second

    first, second = asyncio.run(drive())
    assert "LISTENING" in first[0] and "PLAYING" in second[0]
    assert any(row.startswith("│C4") and "█" in row for row in second)
    assert any(row.startswith("│G4") and "█" in row for row in second)
    assert any("last phrase: C4 E4" in row and "answer: G4" in row for row in second)
    assert any("temperature" in row and "CC 21" in row for row in second)
    assert any("control: length = 4" in row for row in second)
    assert sent == [{"command": "temperature", "args": [1.1]}, {"command": "temperature", "args": [0.9]},
                    {"command": "panic", "args": []}, {"command": "mute", "args": [1]},
                    {"command": "preset", "args": ["wild"]}, {"command": "preset", "args": ["ballad"]},
                    {"command": "end_call", "args": []}, {"command": "quit", "args": []}]


def test_the_feed_takes_notes_once_and_measures_the_answer():
    class Session:  # what ViewFeed reads: plain attributes
        from livegen.engine.session import SessionConfig as _C

        config = _C()
        muted = False
        phrases = 1

        class phrase:
            gap_s = 0.5

    feed = ViewFeed(Session(), {"input": "in", "output": "out"}, ["default"], clock=lambda: 5.0)
    feed.observe({"event": "note_on", "who": "player", "channel": 0, "pitch": 60, "velocity": 90, "t": 1.0})
    feed.observe({"event": "respond", "t": 1.6, "start_at": 1.7, "temperature": 1.0})
    feed.observe({"event": "note_on", "pitch": 62, "velocity": 80, "channel": 0, "intended": 1.7, "sent": 1.7004})
    feed.observe({"event": "state", "state": "playing"})
    first, second = feed.snapshot(), feed.snapshot()
    assert [n[1] for n in first["notes"]] == ["player", "livegen"] and second["notes"] == []
    assert first["state"] == "playing" and first["latency_ms"] == pytest.approx(0.4)
    assert [text for _, text in first["events"]] == [describe({"event": "respond", "t": 1.6, "start_at": 1.7,
                                                                "temperature": 1.0})]
    assert ["gap", 500, None] in first["settings"]
    json.dumps(first)  # what goes over the socket


# --- the real thing: `livegen run --view` in tmux, played through JACK ------------------------------


class Tmux:
    """A private tmux server (its own socket) running one command in a 120x45 window."""

    def __init__(self, command: str, name: str) -> None:
        self.base = ["tmux", "-L", name, "-f", "/dev/null"]  # a server of its own, no user configuration
        subprocess.run([*self.base, "new-session", "-d", "-s", "view", "-x", "120", "-y", "45", command], check=True)

    def screen(self, escapes: bool = False) -> str:
        result = subprocess.run([*self.base, "capture-pane", "-p", *(["-e"] if escapes else []), "-t", "view"],
                                capture_output=True, text=True)
        return result.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "view", *keys], check=True)

    def alive(self) -> bool:
        return subprocess.run([*self.base, "has-session", "-t", "view"], capture_output=True).returncode == 0

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_livegen_run_view_in_a_terminal_shows_states_and_the_notes_of_a_phrase(jack_server, midi_probe, quick_model,
                                                                                 tmp_path):
    log = tmp_path / "events.jsonl"

    def logged(kind):
        return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == kind]
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in jack_server.env.items() if k.startswith("JACK"))
    command = (f"env {env} {shlex.quote(sys.executable)} -m livegen run --model {shlex.quote(str(quick_model))} "
               f"--midi-api jack --no-synth --seed 1 --length 4 --gap-ms 300 --view --log-json {shlex.quote(str(log))}"
               f" 2>{shlex.quote(str(tmp_path / 'stderr'))}")
    tmux = Tmux(command, f"livegen-test-{time.monotonic_ns()}")
    try:
        assert wait(lambda: log.exists() and '"ready"' in log.read_text(), timeout=120)  # a loaded machine: slow start
        midi_probe.play_into(port_matcher("livegen", "in"))
        midi_probe.listen_to(port_matcher("livegen", "out"))
        assert wait(lambda: "IDLE" in tmux.screen(), timeout=30), tmux.screen()
        seen: set[str] = set()
        done = threading.Event()

        def look() -> None:  # the states the terminal shows, on a thread: the playing keeps its time
            while not done.is_set():
                screen = tmux.screen()
                seen.update(s for s in ("IDLE", "LISTENING", "THINKING", "PLAYING") if s in screen)
                time.sleep(0.1)  # each capture is a process: keep a loaded machine's CPU for the music

        watcher = threading.Thread(target=look, daemon=True)
        watcher.start()
        try:
            midi_probe.play([60, 64, 67], hold=0.2, rest=0.05)  # slow enough for the captures to see it
            assert wait(lambda: logged("trigger"), timeout=15)
            if logged("trigger")[0]["notes"] != 3:  # as test_live_control does for clock ticks
                pytest.skip(f"JACK delivered {logged('trigger')[0]['notes']} of 3 notes to the daemon "
                            "(machine overloaded, jackd not realtime): the view cannot be judged")
            assert wait(lambda: len(logged("note_on")) == 4 and "IDLE" in tmux.screen(), timeout=15), tmux.screen()
            time.sleep(0.2)
        finally:
            done.set()
            watcher.join(5)
        screen = tmux.screen()
        answer = [e["pitch"] for e in logged("note_on")]
        names = __import__("livegen.view.roll", fromlist=["pitch_name"]).pitch_name
        assert "last phrase: C4 E4 G4" in screen, screen
        assert f"answer: {' '.join(map(names, answer))}" in screen, screen
        rows = {line[1:5].strip(): line for line in screen.splitlines() if line.startswith("│")}
        in_view = [names(p) for p in [60, 64, 67, *answer] if names(p) in rows]  # the roll shows the busiest octaves
        assert len(in_view) >= 3 and all("█" in rows[name] for name in in_view), screen
        assert {"IDLE", "LISTENING"} <= seen and seen & {"THINKING", "PLAYING"}, seen
        coloured = tmux.screen(escapes=True)
        colours = set(re.findall(r"\x1b\[([0-9;]*)m█", coloured))
        assert len(colours) >= 2, colours  # the player's notes and livegen's in two colours
        tmux.keys("Up")
        tmux.keys("p")
        assert wait(lambda: [e["name"] for e in logged("control")] == ["temperature", "panic"], timeout=5)
        tmux.keys("q")  # quits livegen
        assert wait(lambda: not tmux.alive(), timeout=10)
    finally:
        midi_probe.close()
        tmux.close()
    assert logged("control")[0]["value"] == 1.1


def test_view_without_a_terminal_is_one_line_and_exit_2(jack_server, quick_model):
    result = subprocess.run([sys.executable, "-m", "livegen", "run", "--model", str(quick_model), "--midi-api", "jack",
                             "--no-synth", "--view"], env=jack_server.env, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "--view needs a terminal" in lines[0], result.stderr
