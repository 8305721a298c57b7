"""`livegen run` as a real process on real JACK ports (dummy driver), played by a test client.

Timing bounds are generous for a noisy 2-core machine, except where the contract names one
(barge-in within 20 ms, shutdown within 2 s); precise latency figures are `livegen bench`'s job.
"""

import signal
import subprocess
import sys
import time

import pretty_midi
import pytest

from daemon_driver import wait
from midi_probe import closed_at, note_ons, press_while_sounding, unmatched

GAP = 0.25


@pytest.fixture
def daemon(daemon, tmp_path):
    """The shared driver, with this module's gap and a recording to check."""

    def start(*extra):
        d = daemon("--gap-ms", str(GAP * 1000), "--record", str(tmp_path / "jam.mid"), *extra)
        d.record_path = tmp_path / "jam.mid"
        return d

    return start


def test_a_phrase_gets_an_answer_of_the_requested_length_after_the_gap(daemon):
    d = daemon("--length", "8", "--max-seconds", "30")
    released = d.probe.play([60, 62, 64, 65, 67])
    assert wait(lambda: len(note_ons(d.probe.messages)) == 8 and not unmatched(d.probe.messages), timeout=20)
    first_arrival = note_ons(d.probe.messages)[0][0]
    assert first_arrival >= released + GAP - 0.01  # not before the gap has passed
    assert first_arrival <= released + GAP + 0.25
    time.sleep(0.3)
    assert len(note_ons(d.probe.messages)) == 8  # exactly the requested length
    assert d.stop()[0] == 0
    trigger = d.events("trigger")
    assert len(trigger) == 1 and trigger[0]["notes"] == 5
    ons = d.events("note_on")
    assert len(ons) == 8 and ons[0]["intended"] == pytest.approx(trigger[0]["t"])
    assert d.events("ready")


def test_sustain_pedal_delays_the_answer_but_active_sensing_and_clock_do_not(daemon):
    d = daemon("--length", "3")
    d.probe.send([0xB0, 64, 127])
    d.probe.play([60, 64])
    time.sleep(GAP * 2.5)
    assert note_ons(d.probe.messages) == []  # pedal still down: no answer
    lifted = d.probe.send([0xB0, 64, 0])
    assert wait(lambda: len(note_ons(d.probe.messages)) == 3, timeout=10)
    assert note_ons(d.probe.messages)[0][0] >= lifted + GAP - 0.01

    released = d.probe.play([67])
    for _ in range(int(GAP / 0.01)):  # sensing and clock all through the gap
        d.probe.send([0xFE])
        d.probe.send([0xF8])
        time.sleep(0.01)
    assert wait(lambda: len(note_ons(d.probe.messages)) == 6, timeout=10)
    assert note_ons(d.probe.messages)[3][0] <= released + GAP + 0.25


def test_barge_in_closes_every_answer_note_within_20_ms(daemon):
    d = daemon("--length", "200", "--max-seconds", "60")
    d.probe.play([60, 62])
    assert wait(lambda: len(note_ons(d.probe.messages)) >= 3, timeout=10)
    pressed, sounding = press_while_sounding(d.probe, [0x90, 72, 100], channel=0)  # a note is known to sound
    assert wait(lambda: closed_at(d.probe.messages, sounding, pressed) is not None, timeout=2), d.probe.messages[-8:]
    # The quick model's notes last 100 ms, so a note that just started ends at its own note-off
    # far later than this: only the barge-in closes it in time.
    assert closed_at(d.probe.messages, sounding, pressed) - pressed <= 0.020
    time.sleep(0.3)
    assert not unmatched(d.probe.messages, channel=0)
    assert not [t for t, _ in note_ons(d.probe.messages, channel=0) if t > pressed + 0.005]  # and it stays quiet
    d.probe.send([0x80, 72, 0])
    assert d.stop()[0] == 0
    assert d.events("barge_in")


def test_sigterm_mid_answer_closes_everything_and_writes_the_recording(daemon):
    d = daemon("--length", "200", "--max-seconds", "60")
    d.probe.play([60, 64, 67])
    assert wait(lambda: len(note_ons(d.probe.messages)) >= 3, timeout=10)
    code, took = d.stop(signal.SIGTERM)
    assert code == 0 and took < 2.0
    time.sleep(0.1)
    sent = [e for e in d.events() if e["event"] in ("note_on", "note_off", "error")][-8:]
    assert not unmatched(d.probe.messages), f"daemon's last events: {sent}"
    # CC 123 twice, 50 ms apart (SILENCE_AGAIN_AFTER_S): in different JACK cycles, so a receiver
    # that loses one cycle's MIDI to an xrun still gets one.  50 ms is a sleep on the daemon's side:
    # 40 ms allows the probe's 1 ms stamping and JACK cycles; 250 ms allows a loaded machine.
    all_off = [t for t, m in d.probe.messages if m == [0xB0, 123, 0]]
    assert len(all_off) == 2, f"CC 123 at {all_off}; daemon's last events: {sent}"
    assert 0.040 <= all_off[1] - all_off[0] <= 0.250, all_off
    midi = pretty_midi.PrettyMIDI(str(d.record_path))
    tracks = {inst.name: inst for inst in midi.instruments}
    assert [n.pitch for n in tracks["human"].notes] == [60, 64, 67]
    assert len(tracks["livegen"].notes) >= 3


def test_sigint_before_any_phrase_exits_cleanly(daemon):
    d = daemon()
    code, took = d.stop(signal.SIGINT)
    assert code == 0 and took < 2.0


def test_sigusr1_prints_every_threads_stack_and_the_daemon_plays_on(daemon):
    """What a hung daemon needs (`kill -USR1 <pid>`): faulthandler answers from C, whatever the
    main thread is doing, and the session goes on as if nothing happened."""
    d = daemon("--length", "4")
    d.process.send_signal(signal.SIGUSR1)
    d.probe.play([60, 62, 64])
    assert wait(lambda: len(note_ons(d.probe.messages)) == 4 and not unmatched(d.probe.messages), timeout=20)
    assert d.stop(signal.SIGINT)[0] == 0
    stderr = d.process.stderr.read()
    assert "most recent call first" in stderr, stderr
    assert "livegen/daemon.py" in stderr and " in watch" in stderr, stderr  # the main thread, listening
    assert "Traceback" not in stderr


def test_unknown_port_name_lists_the_ports_that_exist(jack_server, quick_model):
    result = subprocess.run(
        [sys.executable, "-m", "livegen", "run", "--model", str(quick_model), "--midi-api", "jack", "--no-synth",
         "--input", "Keystation 88"], env=jack_server.env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "no MIDI input port matches 'Keystation 88'" in result.stderr
    assert "Traceback" not in result.stderr


def test_mirror_mode_answers_with_the_players_own_material(daemon):
    d = daemon("--mode", "mirror", "--length", "6")
    line = [60, 62, 64, 60, 62, 64, 67, 65]
    d.probe.play(line, hold=0.05, rest=0.01)
    assert wait(lambda: len(note_ons(d.probe.messages)) == 6 and not unmatched(d.probe.messages), timeout=10)
    assert {m[1] for _, m in note_ons(d.probe.messages)} <= set(line)
