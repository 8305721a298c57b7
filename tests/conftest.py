"""Shared fixtures.

JACK: ``jack_server`` starts one private jackd (dummy driver, no sound card needed) for the whole
session and points JACK_DEFAULT_SERVER at it.  It runs in realtime mode (``jackd -R``) where this
user may use realtime scheduling (root here), as stage setups run it, so the tests see what
stages see; elsewhere without (``jack_server.realtime`` says which). ``midi_probe`` is a JACK
test client (tests/midi_probe.py) that plays into and listens to the ports under test.  Tests
that use them are skipped, with the reason, where jackd is not installed.

    def test_echo(jack_server, midi_probe):
        daemon = subprocess.Popen([...], env=jack_server.env)  # children find the server
        midi_probe.play_into(port_matcher("livegen", "in"))
        midi_probe.listen_to(port_matcher("livegen", "out"))
        midi_probe.send([0x90, 60, 100])
        midi_probe.wait_for(lambda messages: len(messages) >= 1)
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:  # helper modules (midi_probe...) importable from tests in subfolders
    sys.path.insert(0, _HERE)

from livegen.bench.jack import JackServer  # noqa: E402
from midi_probe import MidiProbe, start_jack_server  # noqa: E402


@pytest.fixture(scope="session")
def jack_server() -> JackServer:
    """A running jackd for this session: ``.name``, ``.env`` (for subprocesses), ``.realtime``,
    ``.log()``.

    JACK_DEFAULT_SERVER (and JACK_NO_START_SERVER) are set in os.environ while it runs and
    restored afterwards; jackd is terminated and waited for at the end of the session.
    """
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (apt install jackd2)")
    with start_jack_server() as server:
        _SESSION_SERVER[:] = [server]
        _HEALTHY_FROM[0] = len(server.log())
        yield server


@pytest.fixture
def midi_probe(jack_server) -> MidiProbe:
    """A MidiProbe on the session's JACK server, closed after the test."""
    with MidiProbe() as probe:
        yield probe


@pytest.fixture(scope="session")
def quick_model(tmp_path_factory):
    """A tiny real model biased to short steps and notes (see factories.quick_model)."""
    from factories import quick_model_dir

    return quick_model_dir(tmp_path_factory.mktemp("model") / "quick")


@pytest.fixture
def daemon(jack_server, midi_probe, quick_model, tmp_path):
    """``daemon(*flags)`` starts `livegen run` with the quick model and connects the probe."""
    from daemon_driver import Daemon

    made = []

    def start(*extra):
        made.append(Daemon(jack_server, midi_probe, quick_model, tmp_path, *extra))
        return made[-1]

    yield start
    for each in made:
        each.close()


JACKD_LOG_LINES = 30

_SESSION_SERVER: list[JackServer] = []  # the session's jackd (kept once stopped: the last test's teardown stops it)

JACKD_STOPPED = ("Driver is not running", "engine may now behave abnormally")
"""What JACK2 1.9.21 logs when its synchronous engine has stopped for good: a client that died
in the middle of a cycle (killed, or ended while closing) left the server waiting 20 s for it,
and from then on it refuses every client.  Measured outside the suite with a client killed at a
random instant: both runs against `jackd -S` ended so (one at the first kill), while asynchronous
jackd carried on through 50 kills (README, Troubleshooting).  "abnormally" may come before a
recovery too; a restart then costs a second, and waiting to see would cost the next test."""

_RESTARTS: list[str] = []  # what the terminal summary reports
_HEALTHY_FROM = [0]  # where in its log the session's jackd last (re)started


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that ran on the session's jackd shows the end of jackd's log: when the
    server itself went wrong ("Driver is not running", "Cannot create new client"), that is where
    it says so, and the CI output is all there is to read afterwards."""
    outcome = yield
    report = outcome.get_result()
    server = (getattr(item, "funcargs", None) or {}).get("jack_server")
    if report.failed and report.when in ("setup", "call") and isinstance(server, JackServer):
        lines = server.log().splitlines()[-JACKD_LOG_LINES:]
        report.sections.append((f"jackd log {server.name} (last {len(lines)} lines)", "\n".join(lines)))
        item.jackd_stopped = _jackd_stopped()  # now: the last test's teardown stops jackd and removes its log


def _forget_failed_fixtures(item) -> None:
    """Let fixtures that failed in the first run be made again (as pytest-rerunfailures does)."""
    for definitions in getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).values():
        for definition in definitions:
            cached = getattr(definition, "cached_result", None)
            if cached is not None and cached[2]:
                definition.cached_result = None
                getattr(definition, "_finalizers", []).clear()


JACKD_RERUNS = 2
"""How many more times a test that failed while jackd stopped runs, each on a restarted jackd.
One was not always enough: in a CI run the jackd restarted after a 20,000-message/s flood
stopped again under the rerun's first clients, and the test failed on jackd's account."""

RESTART_TRIES = 3
SETTLE_S = 1.0
"""A restarted jackd counts once it takes a client, and still takes one SETTLE_S later with
none of JACKD_STOPPED in its log; otherwise it is restarted again, RESTART_TRIES in all."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """When the session's jackd stops (JACKD_STOPPED in its log since it last started), it is
    restarted under the same name before the next test, and a test that failed meanwhile runs
    again, up to JACKD_RERUNS times: the failure is jackd's, not the test's, and without this
    every later JACK test fails too.  A test that fails with jackd running fails, and so does one
    that still fails after the reruns; every restart is listed at the end of the session with
    jackd's words and the failure."""
    if "jack_server" not in item.fixturenames:
        return None
    from _pytest.runner import runtestprotocol

    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    reruns = 0
    while stopped := _jackd_stopped() or getattr(item, "jackd_stopped", []):
        item.jackd_stopped = []
        failed = next((r for r in reports if r.failed), None)
        crash = "" if failed is None else getattr(getattr(failed.longrepr, "reprcrash", None), "message", "") or "?"
        taking_clients, restarted = _restart_session_jackd()
        line = f"{item.nodeid}: jackd stopped ({'; '.join(stopped)}); {restarted}"
        if failed is None or not taking_clients or reruns == JACKD_RERUNS:
            _RESTARTS.append(line)
            break
        _forget_failed_fixtures(item)
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        reruns += 1
        line += f"; the test had failed with {crash.splitlines()[0]!r}; run again: " + \
            ("failed again" if any(r.failed for r in reports) else "passed")
        _RESTARTS.append(line)
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _jackd_stopped() -> list[str]:
    """JACKD_STOPPED lines the session's jackd logged since it (re)started."""
    if not _SESSION_SERVER:
        return []
    said = _SESSION_SERVER[0].log()[_HEALTHY_FROM[0]:]
    return [line for line in said.splitlines() if any(words in line for words in JACKD_STOPPED)][:2]


def _restart_session_jackd() -> tuple[bool, str]:
    """Whether the restarted jackd takes clients, and "restarted" (with the number of tries
    when it took more than one) or why not."""
    from livegen.bench.jack import BenchError, _client_can_connect

    server = _SESSION_SERVER[0]
    if server.process.poll() is not None:  # stopped with the session: a rerun starts a new one
        return True, "restarted"
    for tries in range(1, RESTART_TRIES + 1):
        try:
            server.restart()
        except BenchError as exc:
            return False, f"could not restart it: {exc}"
        finally:
            _HEALTHY_FROM[0] = len(server.log())
        time.sleep(SETTLE_S)
        if not _jackd_stopped() and _client_can_connect(server.env):
            return True, "restarted" if tries == 1 else f"restarted ({tries} tries)"
    said = "; ".join(_jackd_stopped()) or "it took no client"
    return False, f"restarted {RESTART_TRIES} times, and each time it stopped again ({said})"


def pytest_terminal_summary(terminalreporter) -> None:
    if _RESTARTS:
        terminalreporter.section("jackd stopped and was restarted")
        for line in _RESTARTS:
            terminalreporter.write_line(line)
