"""Driving `livegen run` as a real process through JACK, for the daemon and live-control tests.

The fixtures (``daemon``, ``quick_model``) live in conftest.py; this module holds the driver.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from midi_probe import port_matcher, wait_until


def wait(condition, timeout: float = 10.0) -> bool:
    """wait_until, as a boolean for ``assert wait(...)``."""
    try:
        wait_until(condition, timeout)
        return True
    except AssertionError:
        return False


class Daemon:
    """`livegen run` as a real process on the test JACK server, with a MidiProbe connected to
    its ports once it printed its ready line."""

    command: tuple[str, ...] = ("-m", "livegen")
    """What follows the interpreter on the command line (a subclass may run a launcher script)."""

    def __init__(self, server, probe, model_dir, tmp_path, *extra):
        self.log_path = tmp_path / "events.jsonl"
        args = [sys.executable, *self.command, "run", "--model", str(model_dir), "--midi-api", "jack",
                "--no-synth", "--seed", "1", "--log-json", str(self.log_path), *extra]
        self.process = subprocess.Popen(args, env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("ready"):
            self.process.kill()
            raise AssertionError(f"no ready line: {line!r} {self.process.stderr.read()}")
        self.probe = probe
        probe.play_into(port_matcher("livegen", "in"))
        probe.listen_to(port_matcher("livegen", "out"))
        time.sleep(0.1)  # let JACK settle the connections

    def events(self, kind=None):
        records = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        return [r for r in records if kind is None or r["event"] == kind]

    def stop(self, sig=signal.SIGTERM):
        started = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(10)
        return code, time.monotonic() - started

    def close(self):
        self.probe.close()  # first: never tear a client down while its peer vanishes
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
