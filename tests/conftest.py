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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that ran on the session's jackd shows the end of jackd's log: when the
    server itself went wrong ("Driver is not running", "Cannot create new client"), that is where
    it says so, and the CI output is all there is to read afterwards."""
    outcome = yield
    report = outcome.get_result()
    server = item.funcargs.get("jack_server") if hasattr(item, "funcargs") else None
    if report.failed and report.when in ("setup", "call") and isinstance(server, JackServer):
        lines = server.log().splitlines()[-JACKD_LOG_LINES:]
        report.sections.append((f"jackd log {server.name} (last {len(lines)} lines)", "\n".join(lines)))
