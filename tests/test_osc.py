"""OSC in and out: the settings table, garbage, and real UDP on loopback into and out of a real
daemon playing through JACK ports."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from daemon_driver import wait
from livegen.io.osc import SETTINGS, OscReceiver, OscSender, Setting
from midi_probe import note_offs, note_ons, unmatched


def osc(address: str, *args) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def udp_send(port: int, *datagrams: bytes) -> float:
    """Send datagrams to 127.0.0.1:port; returns time.monotonic() just before the first."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        t = time.monotonic()
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))
    return t


class Listener:
    """A UDP socket on loopback recording every OSC message (address, args) it receives."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.05)
        self.port = self.socket.getsockname()[1]
        self.messages: list[tuple[str, list]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65536)
            except socket.timeout:
                continue
            message = OscMessage(data)
            self.messages.append((message.address, list(message.params)))

    def of(self, address: str) -> list[list]:
        return [args for a, args in list(self.messages) if a == address]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.socket.close()


# --- the table and the parser (pure logic) -------------------------------------------------------


def test_every_setting_parses_its_own_type_and_refuses_the_rest():
    assert SETTINGS["temperature"].parse([1.5]) == 1.5
    assert SETTINGS["temperature"].parse([2]) == 2  # Pd and Max send ints for whole numbers
    assert SETTINGS["gap"].parse([350.0]) == pytest.approx(0.35)  # ms in, seconds to the session
    assert SETTINGS["length"].parse([12]) == 12 and SETTINGS["length"].parse([12.0]) == 12
    assert SETTINGS["mode"].parse(["overlap"]) == "overlap"
    assert SETTINGS["mute"].parse([1]) is True and SETTINGS["mute"].parse([0.0]) is False
    assert SETTINGS["panic"].parse([]) is True and SETTINGS["panic"].parse([1.0]) is True
    assert SETTINGS["panic"].parse([0.0]) is None  # a button's release does nothing
    for name, args in [("temperature", [10.5]), ("temperature", [float("nan")]), ("temperature", ["hot"]),
                       ("temperature", []), ("temperature", [1.0, 2.0]), ("top_p", [0.0]), ("length", [0]),
                       ("length", [3.5]), ("gap", [5.0]), ("mode", ["loud"]), ("mode", [3]), ("mute", ["yes"]),
                       ("panic", ["now"]), ("end_call", [1, 2]), ("temperature", [True])]:
        with pytest.raises(ValueError):
            SETTINGS[name].parse(args)


def test_a_new_setting_joins_osc_with_one_table_entry():
    applied = []
    table = {**SETTINGS, "memory": Setting("float", 0.0, 1.0)}
    receiver = OscReceiver(0, lambda name, value: applied.append((name, value)), settings=table)
    try:
        receiver.handle(osc("/livegen/memory", 0.25))
    finally:
        receiver.stop()
    assert applied == [("memory", 0.25)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda a, junk: osc(a) + junk, st.sampled_from(list(f"/livegen/{n}" for n in SETTINGS)),
                                            st.binary(max_size=40)))
def test_any_datagram_is_applied_or_counted_never_raised(datagram):
    applied = []
    receiver = OscReceiver(0, lambda name, value: applied.append((name, value)))
    try:
        receiver.handle(datagram)
        counts = receiver.counts
        assert counts["applied"] + counts["malformed"] + counts["unknown"] + counts["rejected"] >= 1 or \
            datagram.startswith(b"#bundle")  # an empty bundle holds no message
        assert len(applied) == counts["applied"]
    finally:
        receiver.stop()


def test_the_sender_drops_and_counts_instead_of_blocking():
    listener = Listener()
    sender = OscSender("127.0.0.1", listener.port, capacity=8)
    try:
        started = time.monotonic()
        results = [sender.send("/livegen/phrase", i) for i in range(100)]  # not started: nothing drains
        assert time.monotonic() - started < 0.5  # returns at once (generous bound for a loaded machine)
        assert results.count(True) == 8 and sender.dropped == 92
        sender.start()
        assert wait(lambda: len(listener.of("/livegen/phrase")) == 8, timeout=5)
    finally:
        sender.stop()
        listener.close()
    assert listener.of("/livegen/phrase") == [[i] for i in range(8)]


# --- through a real daemon: UDP on loopback in, JACK ports out -------------------------------------


def osc_port(d) -> int:
    assert wait(lambda: d.events("osc_listening"), timeout=5)
    event = d.events("osc_listening")[0]
    assert event["host"] == "127.0.0.1"
    return event["port"]


def test_a_temperature_sent_by_osc_shows_in_the_next_respond_event(daemon):
    d = daemon("--osc-port", "0", "--length", "3", "--gap-ms", "200")
    port = osc_port(d)
    d.probe.play([60, 62])
    assert wait(lambda: len(d.events("respond")) == 1 and len(note_ons(d.probe.messages)) == 3)
    udp_send(port, osc("/livegen/temperature", 1.5))
    assert wait(lambda: d.events("control"), timeout=5)
    d.probe.play([64, 65])
    assert wait(lambda: len(d.events("respond")) == 2)
    control = d.events("control")[0]
    assert (control["name"], control["value"]) == ("temperature", 1.5)
    first, second = d.events("respond")
    assert first["temperature"] == 1.0 and second["temperature"] == 1.5


def test_every_address_changes_its_setting_and_is_logged_like_a_knob(daemon):
    d = daemon("--osc-port", "0", "--length", "3", "--gap-ms", "200")
    port = osc_port(d)
    udp_send(port, osc("/livegen/top_p", 0.5), osc("/livegen/length", 5), osc("/livegen/gap", 300.0),
             osc("/livegen/mode", "overlap"), osc("/livegen/mute", 1), osc("/livegen/mute", 0))
    assert wait(lambda: len(d.events("control")) == 6, timeout=5)
    assert [(e["name"], e["value"]) for e in d.events("control")] == [
        ("top_p", 0.5), ("length", 5), ("gap", 0.3), ("mode", "overlap"), ("mute", True), ("mute", False)]
    d.probe.play([60, 62])
    assert wait(lambda: d.events("respond") and len(note_ons(d.probe.messages)) == 5, timeout=10)
    respond = d.events("respond")[0]
    assert (respond["top_p"], respond["length"], respond["mode"]) == (0.5, 5, "overlap")
    udp_send(port, osc("/livegen/preset", "ballad"))
    assert wait(lambda: len(d.events("control")) == 7, timeout=5)
    assert (d.events("control")[-1]["name"], d.events("control")[-1]["value"]) == ("preset", "ballad")
    held = d.probe.send([0x90, 67, 90])  # a key held: only the end-call can end this phrase
    time.sleep(0.1)
    udp_send(port, osc("/livegen/end_call"))
    assert wait(lambda: len(d.events("respond")) == 2, timeout=5)
    trigger = d.events("trigger")[-1]
    assert trigger["reason"] == "end_call" and trigger["t"] > held
    assert d.events("respond")[-1]["preset"] == "ballad" and d.events("respond")[-1]["temperature"] == 0.6
    d.probe.send([0x80, 67, 0])


def test_panic_by_osc_silences_a_playing_answer_within_20_ms(daemon):
    d = daemon("--osc-port", "0", "--length", "200", "--max-seconds", "60", "--gap-ms", "200", "--mode", "overlap")
    port = osc_port(d)
    d.probe.play([60, 62])
    assert wait(lambda: len(note_ons(d.probe.messages)) >= 4, timeout=10)
    pressed = udp_send(port, osc("/livegen/panic"))
    assert wait(lambda: [0xB0, 123, 0] in [m for _, m in d.probe.messages] and not unmatched(d.probe.messages), timeout=2)
    closed_at = max(t for t, _ in note_offs(d.probe.messages))
    all_off_at = next(t for t, m in d.probe.messages if m == [0xB0, 123, 0])
    assert closed_at - pressed <= 0.020 and all_off_at - pressed <= 0.020, (closed_at - pressed, all_off_at - pressed)
    time.sleep(0.3)
    assert not [t for t, _ in note_ons(d.probe.messages) if t > pressed + 0.005]
    assert [e["name"] for e in d.events("control")] == ["panic"]


GARBAGE = [
    b"", b"\x00", b"hello", b"/livegen/temperature", b"/livegen/temperature\x00\x00\x00\x00,f\x00\x00",  # truncated
    b"#bundle\x00\xff", bytes(range(256)) * 4, b"\xff" * 2000,
    osc("/livegen/temperature", "hot"), osc("/livegen/temperature", 99.0), osc("/livegen/temperature", float("nan")),
    osc("/livegen/temperature"), osc("/livegen/temperature", 1.0, 2.0), osc("/livegen/length", -3),
    osc("/livegen/mode", "loud"), osc("/livegen/preset", "../../etc/passwd"), osc("/livegen/preset", "no-such-preset"),
    osc("/livegen/mute", "yes"), osc("/livegen/panic", "now"), osc("/livegen/nothing", 1), osc("/other/temperature", 1.5),
    osc("/livegen/", 1), osc("/livegen/temperature/x", 1.5),
]


def test_garbage_datagrams_change_nothing(daemon):
    d = daemon("--osc-port", "0", "--length", "3", "--gap-ms", "200")
    port = osc_port(d)
    udp_send(port, *GARBAGE)
    assert wait(lambda: sum(e["count"] for e in d.events("osc_ignored")) >= 3, timeout=5)  # one per kind, at least
    d.probe.play([60, 62])
    assert wait(lambda: d.events("respond") and len(note_ons(d.probe.messages)) == 3, timeout=10)
    assert d.events("control") == []
    respond = d.events("respond")[0]
    assert (respond["temperature"], respond["length"], respond["mode"], respond["preset"]) == \
        (1.0, 3, "call-response", "default")
    assert {e["reason"] for e in d.events("osc_ignored")} == {"malformed", "unknown", "rejected"}
    assert not [e for e in d.events("error") if "Traceback" in e["message"]]
    assert d.process.poll() is None
    udp_send(port, osc("/livegen/temperature", 0.5))  # and it still listens
    assert wait(lambda: d.events("control"), timeout=5)
    assert d.stop()[0] == 0


def test_osc_out_sends_the_states_and_notes_of_a_phrase_and_of_its_answer(daemon):
    listener = Listener()
    try:
        d = daemon("--osc-send", f"127.0.0.1:{listener.port}", "--length", "4", "--gap-ms", "200")
        d.probe.play([60, 64, 67])
        assert wait(lambda: len(note_offs(d.probe.messages)) == 4, timeout=10)
        assert wait(lambda: listener.of("/livegen/state")[-1:] == [["idle"]], timeout=5)
    finally:
        listener.close()
    notes = listener.of("/livegen/note")
    player = [n for n in notes if n[0] == "player"]
    answer = [n for n in notes if n[0] == "livegen"]
    assert [n[1:4] for n in player] == [["on", 1, 60], ["off", 1, 60], ["on", 1, 64], ["off", 1, 64],
                                        ["on", 1, 67], ["off", 1, 67]]
    assert all(n[4] == 90 for n in player if n[1] == "on")
    played = [(m[0] & 0x0F, m[1], m[2]) for _, m in note_ons(d.probe.messages)]
    assert [(n[2] - 1, n[3], n[4]) for n in answer if n[1] == "on"] == played
    assert sorted(n[3] for n in answer if n[1] == "off") == sorted(p for _, p, _ in played)
    assert listener.of("/livegen/phrase") == [[3]]
    states = [s[0] for s in listener.of("/livegen/state")]
    assert states[:2] == ["idle", "listening"] and states[-1] == "idle"  # idle: sent once at start
    assert states.index("playing") > states.index("listening")
    assert all(a != b for a, b in zip(states, states[1:]))  # changes only


def test_a_port_in_use_or_a_bad_address_is_one_line_and_exit_2(jack_server, quick_model):
    import subprocess
    import sys

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        for flags, expected in ((["--osc-port", str(port)], f"cannot listen on 127.0.0.1:{port}"),
                                (["--osc-send", "no-such-host.invalid:9000"], "cannot resolve host 'no-such-host.invalid'"),
                                (["--osc-send", "localhost"], "is not HOST:PORT")):
            result = subprocess.run([sys.executable, "-m", "livegen", "run", "--model", str(quick_model), "--midi-api",
                                     "jack", "--no-synth", *flags], env=jack_server.env, capture_output=True, text=True,
                                    timeout=120)
            lines = [line for line in result.stderr.strip().splitlines() if not line.startswith((" ", "usage:"))]
            assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr  # argparse's usage aside
