"""livegen/watchdog.py: ending the process from C while a native call holds the GIL.

Each case runs in a subprocess of its own, since the watchdog ends the process it is armed in.
The stuck thread is libc's sleep called through ctypes.PyDLL, which keeps the GIL: as python-rtmidi
keeps it while RtMidi waits for a JACK server."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from livegen.watchdog import FALLBACK_EXIT_CODE, _timer_library

SCRIPT = """
import ctypes, sys, time
import livegen.watchdog as watchdog
if sys.argv[1] == "no-timer":
    watchdog._timer_library = lambda: None
cancel = watchdog.exit_later(0.5, code=5)
print("armed", cancel is not None, flush=True)
if sys.argv[1] == "cancel":
    cancel()
    time.sleep(1.5)  # past the watchdog's time
    print("survived", flush=True)
    sys.exit(0)
ctypes.PyDLL(None).sleep(30)  # every Python thread stops here: only C can end the process
print("not reached", flush=True)
"""


def run(case: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


@pytest.mark.skipif(_timer_library() is None, reason="no POSIX timer_create on this platform: the fallback case covers it")
def test_a_process_stuck_with_the_gil_is_ended_with_the_status_asked_for_and_every_stack_printed():
    done, took = run("stuck")
    assert done.returncode == 5, done
    assert "armed True" in done.stdout and "not reached" not in done.stdout
    assert "Timeout (" in done.stderr and "most recent call first" in done.stderr, done.stderr
    assert took < 25  # the watchdog, not the 30 s sleep's end


def test_without_posix_timers_faulthandler_ends_it_with_its_own_status():
    done, took = run("no-timer")
    assert done.returncode == FALLBACK_EXIT_CODE, done
    assert "Timeout (" in done.stderr and "not reached" not in done.stdout, done
    assert took < 25


def test_a_cancelled_watchdog_ends_nothing():
    done, _ = run("cancel")
    assert done.returncode == 0 and "survived" in done.stdout, done
    assert "Timeout (" not in done.stderr
