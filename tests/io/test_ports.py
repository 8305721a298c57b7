"""MIDI ports through a real JACK server (dummy driver): listing, opening, both directions,
errors, the bounded input queue, closing.

Timing bounds are generous (noisy 2-core machines); only orders of magnitude are asserted.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from livegen.errors import LivegenError, PortNotFoundError
from livegen.io import apis, ports
from livegen.io.ports import InputPort, MidiBackendError, OutputPort, find_port, list_ports, open_ports
from midi_probe import wait_until

NOTE_ON = [0x90, 60, 100]
CLOCK = [0xF8]
ACTIVE_SENSING = [0xFE]
SYSEX = [0xF0, 0x7D, 0x01, 0x02, 0xF7]


def unique(prefix: str = "lgt") -> str:
    """A client name no other test uses, so leftovers cannot be confused with this test's ports."""
    return f"{prefix}{uuid.uuid4().hex[:6]}"


@pytest.fixture
def rtmidi_jack(jack_server):
    """Raw rtmidi objects standing in for other programs' ports; deleted after the test.

    ``make(kind, client, port)`` opens a virtual port: kind "source" (an output others can
    read, i.e. a keyboard) or "destination" (an input others can write to, i.e. a synth).
    Destinations are polled with get_message(), never given a callback.
    """
    import rtmidi

    made = []

    def make(kind: str, client: str, port: str):
        cls = rtmidi.MidiOut if kind == "source" else rtmidi.MidiIn
        obj = cls(rtmidi.API_UNIX_JACK, name=client)
        if kind == "destination":
            obj.ignore_types(sysex=False, timing=False, active_sense=False)
        obj.open_virtual_port(port)
        made.append(obj)
        return obj

    yield make
    for obj in made:
        obj.close_port()
        obj.delete()


def drain(port: InputPort, count: int, timeout: float = 10.0) -> list:
    """``count`` messages from ``port``, failing clearly if they do not come."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        item = port.get(timeout=0.1)
        if item is not None:
            got.append(item)
    assert len(got) == count, f"expected {count} messages, got {got}"
    return got


# --- matching rules (no server needed) -------------------------------------------------------------


def test_find_port_prefers_exact_then_case_insensitive_then_substring():
    names = ["Keys:Keys MIDI 1", "keys:out", "Keys:out"]
    assert find_port(names, "Keys:out", "input") == (2, "Keys:out")
    assert find_port(names, "KEYS:OUT", "input") == (1, "keys:out")  # first case-insensitive equal
    assert find_port(names, "midi 1", "input") == (0, "Keys:Keys MIDI 1")


def test_find_port_takes_the_first_of_several_substring_matches_and_warns(caplog):
    names = ["Keystation:Keystation MIDI 1", "Keystation:Keystation MIDI 2"]
    with caplog.at_level(logging.WARNING, logger="livegen.io.listing"):
        assert find_port(names, "keystation", "input") == (0, names[0])
    assert "MIDI 2" in caplog.text


def test_find_port_errors_list_what_exists():
    with pytest.raises(PortNotFoundError) as info:
        find_port(["a:out", "b:out"], "zz", "input")
    assert str(info.value) == "no MIDI input port matches 'zz'; inputs are: a:out, b:out"
    assert isinstance(info.value, OSError) and isinstance(info.value, LivegenError)
    with pytest.raises(PortNotFoundError, match=r"^no MIDI output port matches 'x'; outputs are: none$"):
        find_port([], "x", "output")
    with pytest.raises(ValueError):
        find_port(["a"], "", "input")


def test_unknown_api_name_is_a_value_error():
    with pytest.raises(ValueError, match="auto, alsa, jack"):
        ports.resolve_api("oss")


# --- without a server ----------------------------------------------------------------------------


@pytest.mark.skipif("jack" not in ports.compiled_apis(), reason="python-rtmidi built without JACK")
def test_jack_not_running_is_one_clear_line(monkeypatch, capfd):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"livegen-test-nobody-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    for attempt in (lambda: ports.resolve_api("jack"), lambda: InputPort("jack"), lambda: OutputPort("jack"),
                    lambda: list_ports("jack")):
        with pytest.raises(MidiBackendError) as info:
            attempt()
        message = str(info.value)
        assert "not running (start jackd or use --midi-api alsa)" in message
        assert "\n" not in message
        assert isinstance(info.value, LivegenError) and isinstance(info.value, OSError)
    assert "Cannot connect to server" not in capfd.readouterr().err  # libjack's noise is silenced
    if not os.path.exists(apis.ALSA_SEQUENCER):
        with pytest.raises(MidiBackendError, match="no usable MIDI API: .*jack: JACK server .*not running"):
            ports.resolve_api("auto")
    errors: dict[str, str] = {}
    assert "jack" not in ports.list_all_ports(errors)
    assert "not running" in errors["jack"]


# --- through the server --------------------------------------------------------------------------


def test_auto_finds_jack_and_listing_shows_virtual_ports(jack_server):
    if not os.path.exists(apis.ALSA_SEQUENCER):
        assert ports.resolve_api("auto") == "jack"
    client = unique()
    with OutputPort("jack", client) as out, InputPort("jack", client) as inp:
        listed = list_ports("jack")
        assert out.name in listed["inputs"]  # livegen's output is an input for other programs
        assert inp.name in listed["outputs"]
        everything = ports.list_all_ports()
        assert out.name in everything["jack"]["inputs"]
    listed = list_ports("jack")
    assert out.name not in listed["inputs"] and inp.name not in listed["outputs"]


def test_open_ports_names_follow_the_contract(jack_server):
    client = unique()
    with open_ports("jack", client) as (inp, out):
        assert (inp.name, out.name) == (f"{client}:in", f"{client}-01:out")
        assert inp.virtual and out.virtual and inp.target is None
        assert inp.api == out.api == "jack"


def test_messages_travel_both_ways_with_monotonic_times(jack_server, midi_probe):
    client = unique()
    with open_ports("jack", client) as (inp, out):
        midi_probe.play_into(inp.name)
        midi_probe.listen_to(out.name)

        before = time.monotonic()
        for message in (NOTE_ON, CLOCK, SYSEX, ACTIVE_SENSING):
            midi_probe.send(message)
        received = drain(inp, 4)
        after = time.monotonic()
        assert [m for _, m in received] == [NOTE_ON, CLOCK, SYSEX, ACTIVE_SENSING]  # nothing filtered
        times = [t for t, _ in received]
        assert before <= times[0] and times == sorted(times) and times[-1] <= after

        sent_at = time.monotonic()
        out.send([0x90, 64, 90])
        out.send(bytes([0x80, 64, 0]))
        out.send(SYSEX)
        got = midi_probe.wait_for(lambda messages: len(messages) >= 3)
        assert [m for _, m in got] == [[0x90, 64, 90], [0x80, 64, 0], SYSEX]
        assert all(sent_at - 0.01 <= t <= time.monotonic() for t, _ in got)


def test_open_existing_ports_by_exact_name_and_by_substring(jack_server, rtmidi_jack):
    keyboard = unique("kbd")
    synth = unique("syn")
    source = rtmidi_jack("source", keyboard, "Keys Out")
    sink = rtmidi_jack("destination", synth, "Piano In")
    client = unique()

    for pattern in (f"{keyboard}:Keys Out", f"{keyboard.upper()}:KEYS"):  # exact, then substring
        with InputPort("jack", client, pattern) as inp:
            assert inp.target == f"{keyboard}:Keys Out"
            assert not inp.virtual and inp.name.startswith(client) and inp.name.endswith(":in")
            source.send_message(NOTE_ON)
            assert [m for _, m in drain(inp, 1)] == [NOTE_ON]

    for pattern in (f"{synth}:Piano In", f"{synth}:piano"):
        with OutputPort("jack", client, pattern) as out:
            assert out.target == f"{synth}:Piano In"
            out.send([0xB0, 64, 127])
            got = wait_until(sink.get_message, 10, message="a message at the synth")
            assert got[0] == [0xB0, 64, 127]


def test_missing_port_error_lists_the_existing_ports(jack_server, rtmidi_jack):
    keyboard = unique("kbd")
    rtmidi_jack("source", keyboard, "Keys Out")
    client = unique()
    with pytest.raises(PortNotFoundError) as info:
        InputPort("jack", client, "no-such-keyboard")
    message = str(info.value)
    assert message.startswith("no MIDI input port matches 'no-such-keyboard'; inputs are: ")
    assert f"{keyboard}:Keys Out" in message
    with pytest.raises(PortNotFoundError, match="outputs are: "):
        OutputPort("jack", client, "no-such-synth")
    listed = list_ports("jack")  # the failed attempts left no port behind
    assert not any(name.startswith(client) for name in listed["inputs"] + listed["outputs"])


def test_full_queue_drops_and_counts_without_blocking(jack_server):
    with InputPort("jack", unique(), capacity=5) as inp:
        started = time.monotonic()
        for pitch in range(20):
            inp._put((0.0, [0x90, pitch, 100]))  # as the poll thread queues it
        assert time.monotonic() - started < 1.0  # never waits for room
        assert (inp.pending, inp.dropped) == (5, 15)
        assert [m[1] for _, m in drain(inp, 5)] == [0, 1, 2, 3, 4]  # the oldest are kept
        assert inp.get(timeout=0) is None
        inp._put((0.0, [0x90, 99, 100]))  # room again
        assert inp.get(timeout=0)[1] == [0x90, 99, 100]


def test_a_full_queue_still_takes_releases_so_no_key_stays_down(jack_server):
    from livegen.io.midi_in import RELEASE_ROOM

    with InputPort("jack", unique(), capacity=5) as inp:
        for pitch in range(5):
            inp._put((0.0, [0x90, pitch, 100]))
        for message in ([0x90, 9, 100], [0xA0, 1, 1], [0xB0, 64, 127]):  # not releases: dropped
            inp._put((0.0, message))
        assert (inp.pending, inp.dropped) == (5, 3)
        releases = [[0x80, 1, 0], [0x90, 2, 0], [0xB0, 64, 0], [0xB0, 123, 0]]
        for message in releases:
            inp._put((0.0, message))
        assert (inp.pending, inp.dropped) == (9, 3)
        for _ in range(RELEASE_ROOM):  # the extra room is bounded too
            inp._put((0.0, [0x80, 60, 0]))
        assert inp.pending == 5 + RELEASE_ROOM and inp.dropped == 3 + len(releases)
        assert [m for _, m in drain(inp, 9)][5:] == releases


def test_the_queue_is_bounded_in_bytes_too(jack_server):
    sysex = [0xF0] + [0x11] * 998 + [0xF7]  # 1,000 bytes
    with InputPort("jack", unique(), capacity=1000, byte_capacity=10_500) as inp:
        for _ in range(20):
            inp._put((0.0, sysex))
        assert (inp.pending, inp.dropped) == (10, 10)
        inp._put((0.0, [0x90, 60, 100]))  # small messages still fit
        assert inp.pending == 11
        drain(inp, 11)
        for _ in range(10):  # what was read makes room again
            inp._put((0.0, sysex))
        assert (inp.pending, inp.dropped) == (10, 10)


def test_full_queue_drops_real_traffic_too(jack_server, midi_probe):
    with InputPort("jack", unique(), capacity=10) as inp:
        midi_probe.play_into(inp.name)
        for _ in range(50):
            midi_probe.send(CLOCK)
        wait_until(lambda: inp.pending + inp.dropped == 50, 10, message="50 clock messages counted")
        assert (inp.pending, inp.dropped) == (10, 40)


def test_close_is_idempotent_and_wakes_a_blocked_reader(jack_server, midi_probe):
    inp = InputPort("jack", unique())
    midi_probe.play_into(inp.name)
    midi_probe.send(NOTE_ON)
    wait_until(lambda: inp.pending == 1, 10, message="one queued message")

    results = []
    reader = threading.Thread(target=lambda: results.extend(inp))  # iterates until closed
    reader.start()
    wait_until(lambda: results, 10, message="the reader to take the queued message")
    time.sleep(0.1)  # the reader is now blocked in get() with no timeout
    assert reader.is_alive()
    inp.close()
    reader.join(10)
    assert not reader.is_alive(), "close() did not wake the reader"
    assert [m for _, m in results] == [NOTE_ON]
    inp.close()  # again: nothing happens
    assert inp.closed and inp.get(timeout=0) is None and inp.get(timeout=5) is None
    with pytest.raises(ValueError):
        inp.start()

    out = OutputPort("jack", unique())
    out.close()
    out.close()
    with pytest.raises(ValueError, match="closed"):
        out.send(NOTE_ON)


def test_messages_waiting_in_rtmidi_at_close_are_still_read(jack_server, midi_probe):
    inp = InputPort("jack", unique(), poll_interval=60.0)  # only close() will empty rtmidi's queue
    midi_probe.play_into(inp.name)
    midi_probe.send(NOTE_ON)
    time.sleep(0.1)  # a few JACK cycles: the message waits in rtmidi
    assert inp.get(timeout=0) is None
    started = time.monotonic()
    inp.close()
    assert time.monotonic() - started < 5  # the sleeping poll thread is woken, not waited for
    assert inp.get(timeout=1)[1] == NOTE_ON
    assert inp.get(timeout=1) is None


def test_the_poll_thread_is_started_explicitly_and_joined_by_close(jack_server):
    def pollers():
        return [t for t in threading.enumerate() if t.name.startswith("midi-in ")]

    before = len(pollers())
    inp = InputPort("jack", unique(), start=False)
    assert len(pollers()) == before
    inp.start()
    assert len(pollers()) == before + 1
    inp.close()
    assert len(pollers()) == before


def test_no_python_runs_on_the_jack_thread(jack_server, midi_probe):
    """The input must not give rtmidi a callback: that runs Python, waiting for the GIL, inside
    JACK's realtime process cycle, and an overrun cycle loses its MIDI (issue 15).  Without one,
    the process cycle leaves each message in rtmidi's own queue (with a callback set, rtmidi
    queues nothing there)."""
    with InputPort("jack", unique(), poll_interval=60.0) as inp:  # the poll thread sleeps on
        midi_probe.play_into(inp.name)
        midi_probe.send(NOTE_ON)
        time.sleep(0.1)
        with inp.paused():
            assert inp._rt.get_message()[0] == NOTE_ON


def test_send_checks_its_argument(jack_server):
    with OutputPort("jack", unique()) as out:
        for bad, error in (([], ValueError), ([0x90, 300, 1], ValueError), ([0x40, 1], ValueError),
                           ([0x90, "a", 1], TypeError), ([0x90, 1.5, 1], TypeError), (None, TypeError),
                           ([0x90, 1, 2, 3], ValueError), ([True, 1], TypeError)):
            with pytest.raises(error):
                out.send(bad)
        out.send((0xFC,))  # tuples and bytes are fine


# --- the two hazards rtmidi callbacks had with JACK (livegen/io/midi_in.py docstring) -------------

STRESS = textwrap.dedent(
    """
    import threading, time, rtmidi
    from livegen.io.ports import InputPort, open_ports

    source = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="stress-src")
    source.open_virtual_port("clock")
    stop = threading.Event()

    def pump():  # a fast clock stream, so the input always has something to take
        while not stop.is_set():
            source.send_message([0xF8])
            time.sleep(0.0005)

    def burn():  # keeps the GIL busy, as the engine and model threads would
        while not stop.is_set():
            sum(range(2000))

    threads = [threading.Thread(target=f, daemon=True) for f in (pump, burn)]
    for t in threads:
        t.start()
    received = 0
    for _ in range(ROUNDS):
        with InputPort("jack", "stress", "stress-src:clock") as port:
            time.sleep(0.02)
        while port.get(timeout=0) is not None:
            received += 1
    started = time.monotonic()
    with open_ports("jack", "stress", input_pattern="stress-src:clock") as (inp, out):
        opened = time.monotonic() - started
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    source.close_port()
    source.delete()
    print("ok", received, round(opened, 3))
    """
)


def test_closing_and_opening_under_traffic_neither_deadlocks_nor_stalls(jack_server):
    # In a subprocess so that a regression (an interpreter deadlock) fails instead of hanging.
    code = STRESS.replace("ROUNDS", "15")
    try:
        done = subprocess.run([sys.executable, "-c", code], env=jack_server.env, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"open/close under traffic hung: {exc.stderr}")
    assert done.returncode == 0, done.stderr
    _, received, opened = done.stdout.split()
    assert int(received) > 0
    # A stalled JACK graph takes seconds per round trip (6-16 s observed); a healthy open takes
    # well under one.
    assert float(opened) < 5.0, done.stdout


def test_messages_sent_just_before_close_still_arrive(jack_server, midi_probe):
    """A shutdown's last note-offs and CC 123 go out right before the port closes."""
    out = OutputPort("jack", unique())
    midi_probe.listen_to(out.name)
    time.sleep(0.1)
    burst = [[0x80, pitch, 0] for pitch in range(40, 100)] + [[0xB0, 123, 0]]
    for message in burst:
        out.send(message)
    out.close()
    got = midi_probe.wait_for(lambda messages: len(messages) >= len(burst), timeout=5)
    assert [m for _, m in got] == burst


# --- hot-plug: a target that goes away and comes back (livegen/io/hotplug.py drives these) -------------


def test_input_reconnects_to_a_source_that_comes_back_under_its_name(jack_server):
    from midi_probe import MidiProbe

    with MidiProbe(unique("kbd")) as keys:
        source = keys.offer("source", "keys")
        with InputPort("jack", unique(), source) as inp:
            name = inp.name
            keys.send(NOTE_ON)
            assert drain(inp, 1)[0][1] == NOTE_ON
            assert inp.target_present() is True
            keys.unplug("source")
            wait_until(lambda: inp.target_present() is False, 5)
            assert inp.reconnect() is False  # nothing to connect to yet
            keys.replug("source")
            wait_until(lambda: inp.target_present(), 5)
            assert inp.reconnect() is True
            assert (inp.name, inp.target) == (name, source)  # same port, same target
            keys.send([0x91, 62, 90])
            assert drain(inp, 1)[0][1] == [0x91, 62, 90]
        assert inp.target_present() is None and inp.reconnect() is False  # closed


def test_a_lost_input_releases_what_its_channels_held(jack_server, midi_probe):
    with InputPort("jack", unique()) as inp:
        midi_probe.play_into(inp.name)
        midi_probe.send([0x92, 60, 100])
        midi_probe.send(CLOCK)
        drain(inp, 2)
        inp.mark_lost(123.0)
        assert drain(inp, 2) == [(123.0, [0xB2, 64, 0]), (123.0, [0xB2, 123, 0])]  # channel 3 only
        assert inp.get(timeout=0.05) is None


def test_paused_input_keeps_what_arrives_meanwhile_in_order(jack_server, midi_probe):
    with InputPort("jack", unique()) as inp:
        midi_probe.play_into(inp.name)
        time.sleep(0.05)
        with inp.paused():
            sent = [midi_probe.send([0x90, pitch, 100]) for pitch in (60, 61, 62)]
            time.sleep(0.1)
            assert inp.get(timeout=0) is None  # held in rtmidi meanwhile
        midi_probe.send([0x90, 63, 100])
        got = drain(inp, 4)
    assert [m[1] for _, m in got] == [60, 61, 62, 63]
    times = [t for t, _ in got]
    assert times == sorted(times) and times[0] >= sent[0] - 0.01


def test_output_reconnect_releases_what_sounded_when_the_target_went(jack_server):
    from midi_probe import MidiProbe, unmatched

    with MidiProbe(unique("synth")) as synth:
        target = synth.offer("destination", "synth")
        with OutputPort("jack", unique(), target) as out:
            out.send([0x90, 60, 100])
            out.send([0x91, 64, 127])
            out.send([0xB1, 64, 127])  # sustain pedal down on channel 2
            synth.wait_for_count(3)
            synth.unplug("destination")
            wait_until(lambda: out.target_present() is False, 5)
            out.mark_lost()
            assert out.lost
            out.send([0x80, 60, 0])  # its note-off goes nowhere
            out.send([0x92, 70, 100])  # nor does a note started meanwhile: it is not owed
            back = synth.replug("destination")
            wait_until(lambda: out.target_present(), 5)
            assert out.reconnect() is True and not out.lost
            out.send([0x90, 72, 100])
            got = synth.wait_for(lambda m: [0x90, 72, 100] in [msg for _, msg in m], 5)
    after = [msg for t, msg in got if t >= back]
    released = [[0x80, 60, 0], [0x81, 64, 0], [0xB1, 64, 0], [0xB0, 123, 0], [0xB1, 123, 0], [0xB2, 123, 0]]
    assert after[:-1] == released * 2  # twice, in case a JACK cycle is lost
    assert unmatched([(t, m) for t, m in got if m[:2] != [0x90, 72]]) == {}


def test_virtual_ports_have_no_target_to_follow(jack_server):
    with open_ports("jack", unique()) as (inp, out):
        assert inp.target_present() is None and out.target_present() is None
        assert inp.reconnect() is False and out.reconnect() is False


class FlickeringClient:
    """An rtmidi object whose port list changes while it is listed, ``failures`` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def get_ports(self):
        import rtmidi

        self.calls += 1
        if self.calls <= self.failures:
            raise rtmidi.InvalidPortError("MidiInJack::getPortName: the 'portNumber' argument (3) is invalid.")
        return ["system:midi_capture_1", "keys:out"]


def test_a_port_list_that_changes_while_listed_is_listed_again():
    """JACK clients come and go while livegen starts (another daemon, a replugged device):
    rtmidi then fails a name lookup, and the list must be taken again, not crash the start."""
    from livegen.io.apis import MidiBackendError
    from livegen.io.listing import LIST_ATTEMPTS, find_target, port_names

    client = FlickeringClient(failures=3)
    assert port_names(client) == ["system:midi_capture_1", "keys:out"] and client.calls == 4
    assert find_target(FlickeringClient(failures=2), "keys:out") == 1
    with pytest.raises(MidiBackendError, match="kept changing"):
        port_names(FlickeringClient(failures=LIST_ATTEMPTS))


class ShiftingClient:
    """Its port list gains a port in front just as the first ``open_port`` runs: the index
    listed before then names another program's port."""

    def __init__(self) -> None:
        self.names = ["keys:out", "synth:in"]
        self.opened: list[str] = []

    def get_ports(self):
        return list(self.names)

    def open_port(self, index, name):
        if not self.opened:
            self.names.insert(0, "late-daemon:in")  # a daemon starting beside us registers its port
        self.opened.append(self.names[index])

    def close_port(self):
        self.opened.append("closed")


def test_a_port_opened_by_index_is_checked_against_a_second_listing():
    """rtmidi opens by index; a port registered between listing and opening shifts the list, so
    the open is checked and redone, and the port opened is the one asked for."""
    from livegen.io.listing import open_listed

    client = ShiftingClient()
    name = open_listed(client, lambda names: names.index("synth:in"), "out")
    assert name == "synth:in"
    assert client.opened == ["keys:out", "closed", "synth:in"]  # the wrong port first, then the right one


def test_an_urgent_input_polls_fast_whatever_its_usual_interval(jack_server, midi_probe):
    """Harmonize mode marks the input urgent: rtmidi's queue is then read every
    FAST_POLL_INTERVAL_S (a port that polls every 30 s would otherwise hold the note that long)."""
    from livegen.io.midi_in import FAST_POLL_INTERVAL_S

    inp = InputPort("jack", unique(), poll_interval=30.0, start=False)
    try:
        assert inp.poll_interval == 30.0
        inp.urgent = True
        assert inp.poll_interval == FAST_POLL_INTERVAL_S
        inp.start()
        midi_probe.play_into(inp.name)
        midi_probe.send(NOTE_ON)
        item = inp.get(timeout=10)
        assert item is not None and item[1] == NOTE_ON
        inp.urgent = False
        assert inp.poll_interval == 30.0
    finally:
        inp.close()
