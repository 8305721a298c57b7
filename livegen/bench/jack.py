"""A private JACK server with the dummy driver, for the latency benchmark and the tests.

No sound card is needed.  The server runs in realtime mode (``jackd -R``) where this user may
use SCHED_FIFO (root, or the ``audio`` group's rtprio limit), as stage setups run it, and
without realtime elsewhere.  It gets a unique name; processes find it through the ``env`` this
yields (JACK_DEFAULT_SERVER), and nothing else on the machine sees it.  It is terminated (then
killed) on every exit path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from livegen.errors import LivegenError


class BenchError(LivegenError, RuntimeError):
    """A benchmark that cannot run here (no jackd, a daemon that never got ready...)."""


@dataclass
class JackServer:
    name: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str]
    rate: int
    period: int
    realtime: bool
    command: list[str] = field(default_factory=list)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, startup_timeout: float = 15.0) -> None:
        """Start ``command`` (its output appended to the log) and wait until a client can open."""
        with open(self.log_path, "a") as log_file:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT, env=self.env, preexec_fn=_jackd_dies_with_parent)
        deadline = time.monotonic() + startup_timeout
        while not _client_can_connect(self.env):
            if self.process.poll() is not None:
                raise BenchError(f"jackd exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise BenchError(f"jackd accepted no client within {startup_timeout:g} s:\n{self.log()}")
            time.sleep(0.05)

    def restart(self, startup_timeout: float = 15.0) -> None:
        """Stop this jackd (killed if it does not stop) and start it again under the same name,
        so the processes and clients that name it find the new one."""
        stop_process(self.process, 5.0)
        self.start(startup_timeout)


def jackd_version() -> str | None:
    if shutil.which("jackd") is None:
        return None
    try:
        out = subprocess.run(["jackd", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    line = (out.stdout or out.stderr).strip().splitlines()
    return line[0] if line else None


def realtime_allowed() -> bool:
    """Whether a process of this user may run SCHED_FIFO threads, as ``jackd -R`` needs (asked of
    a child process, so this one keeps its own scheduling)."""
    import sys

    if not hasattr(os, "sched_setscheduler"):
        return False
    code = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))"
    try:
        result = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _client_can_connect(env: dict[str, str]) -> bool:
    """Whether a JACK client can open on the server ``env`` names (checked in a child process,
    so this process never becomes a JACK client)."""
    code = (
        "import rtmidi,sys\n"
        "try:\n c=rtmidi.MidiOut(rtmidi.API_UNIX_JACK,name='bench-probe')\n"
        "except Exception:\n sys.exit(1)\n"
        "c.delete()\n"
    )
    import sys

    result = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=30)
    return result.returncode == 0


def _parent_death_signal(sig: int) -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the try/finally blocks still stop it
        pass


def die_with_parent() -> None:
    """``preexec_fn`` for the daemon and the clients: SIGKILL when the benchmark dies (even by
    SIGKILL), so nothing outlives it.  Not a graceful stop: a client that closes its ports while
    jackd is shutting down can hang both, so clients go hard and jackd (below) goes soft."""
    import signal

    _parent_death_signal(signal.SIGKILL)


def _jackd_dies_with_parent() -> None:
    import signal

    _parent_death_signal(signal.SIGTERM)


def stop_process(process: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """Terminate, wait, kill if needed: a process never outlives the benchmark."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def jack_server(rate: int = 48000, period: int = 64, startup_timeout: float = 15.0,
                prefix: str = "livegen-bench", realtime: bool | None = None,
                sync: bool = False) -> Iterator[JackServer]:
    """Start ``jackd -d dummy`` under a unique name; stop it afterwards, whatever happens.

    ``realtime``: None runs ``jackd -R`` where ``realtime_allowed()``, else ``--no-realtime``;
    True insists (BenchError where it is not allowed); False never.  ``sync`` runs ``jackd -S``:
    a cycle waits for every client to finish, so a client the host holds up makes the cycle late
    instead of losing its MIDI (see tests/test_jack_realtime.py).
    """
    if shutil.which("jackd") is None:
        raise BenchError("jackd is not installed (apt install jackd2); the latency benchmark needs it")
    allowed = realtime_allowed() if realtime is not False else False
    if realtime and not allowed:
        raise BenchError("realtime scheduling (SCHED_FIFO) is not allowed for this user; jackd -R cannot run")
    realtime = allowed
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log_path = Path(tempfile.gettempdir()) / f"{name}.log"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1",
           "JACK_NO_AUDIO_RESERVATION": "1"}
    command = ["jackd", "-R" if realtime else "--no-realtime", *(["--sync"] if sync else []), "--name", name,
               "--timeout", "2000", "-d", "dummy", "--rate", str(rate), "--period", str(period)]
    log_path.write_text("")
    server = JackServer(name, None, log_path, env, rate, period, realtime, command)  # type: ignore[arg-type]
    try:
        server.start(startup_timeout)
        yield server
    finally:
        stop_process(server.process, 10.0)
        try:
            log_path.unlink()
        except OSError:
            pass
