"""The suite's guard against JACK2's synchronous engine stopping for good (tests/conftest.py):
jackd is restarted under its name, a test that failed meanwhile runs again (twice at most, each
time on a restarted jackd), and the session's summary says so.  Run as an inner pytest session
on a jackd of its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).parent

INNER = '''
import os
from pathlib import Path

from livegen.bench.jack import _client_can_connect


def stop_jackd(server):
    """jackd's own words for an engine that stopped, and the failure it causes."""
    with open(server.log_path, "a") as log:
        log.write("Driver is not running\\n")
    raise AssertionError("JACK server not running")


def stop_jackd_once(server, mark):
    if not mark.exists():
        mark.write_text(str(server.process.pid))
        stop_jackd(server)


def test_a_failure_while_jackd_stopped_runs_again(jack_server):
    mark = Path(os.environ["MARK_DIR"]) / "once"
    stop_jackd_once(jack_server, mark)
    assert jack_server.process.pid != int(mark.read_text())  # run again on a new jackd
    assert _client_can_connect(jack_server.env)


def test_the_next_test_finds_jackd_taking_clients(jack_server):
    assert _client_can_connect(jack_server.env)
    assert jack_server.log().count("JACK server starting") == 2  # started, then restarted once


def test_a_test_that_fails_again_still_fails(jack_server):
    stop_jackd_once(jack_server, Path(os.environ["MARK_DIR"]) / "twice")
    raise AssertionError("a real failure")


def test_jackd_that_stops_again_under_the_rerun_is_restarted_again(jack_server):
    marks = Path(os.environ["MARK_DIR"])
    stop_jackd_once(jack_server, marks / "again-1")
    stop_jackd_once(jack_server, marks / "again-2")
    assert _client_can_connect(jack_server.env)


def test_a_test_that_stops_jackd_every_time_fails_after_two_reruns(jack_server):
    runs = Path(os.environ["MARK_DIR"]) / "runs"
    runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))
    stop_jackd(jack_server)
'''


@pytest.mark.skipif(shutil.which("jackd") is None, reason="jackd is not installed (apt install jackd2)")
def test_jackd_that_stops_is_restarted_and_the_failed_test_runs_again(pytester, monkeypatch, tmp_path):
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                          f"exec(compile(open({str(TESTS / 'conftest.py')!r}).read(), 'conftest.py', 'exec'))\n")
    pytester.makepyfile(test_inner=INNER)
    monkeypatch.setenv("MARK_DIR", str(tmp_path))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    assert "jackd stopped and was restarted" in out
    restarts = [line for line in out.splitlines() if ": jackd stopped (Driver is not running)" in line]
    assert len(restarts) == 7, out
    assert "test_a_failure_while_jackd_stopped_runs_again" in restarts[0] and "run again: passed" in restarts[0]
    assert "'AssertionError: JACK server not running'" in restarts[0]
    assert "test_a_test_that_fails_again_still_fails" in restarts[1] and "run again: failed again" in restarts[1]
    again = restarts[2:4]
    assert all("stops_again_under_the_rerun" in line for line in again), out
    assert "run again: failed again" in again[0] and "run again: passed" in again[1]
    every_time = restarts[4:]
    assert all("stops_jackd_every_time" in line for line in every_time), out
    assert ["run again" in line for line in every_time] == [True, True, False]  # restarted for the next test
    assert (tmp_path / "runs").read_text() == "3"  # ran once and twice again, then counted as failed
