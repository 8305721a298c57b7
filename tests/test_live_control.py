"""Presets and live control through real JACK ports: every shipped preset answers, a CC changes
the next answer's temperature, the panic CC silences at once, and answers follow a MIDI clock."""

import statistics
import subprocess
import sys
import threading
import time

import pytest

from daemon_driver import wait
from livegen import presets
from livegen.engine.tempo import fit_ticks
from midi_probe import MidiProbe, closed_at, note_ons, port_matcher, press_while_sounding, unmatched

SHIPPED = sorted(p.stem for p in presets.SHIPPED_DIR.glob("*.toml")
                 if presets.load(p.stem).mode != "harmonize")  # harmonize presets: tests/test_harmonize_jack.py


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_answers_through_jack(daemon, name):
    preset = presets.load(name)
    d = daemon("--preset", name, "--length", "4", "--gap-ms", "200")
    channel = preset.output.channel - 1
    d.probe.play([60, 62, 64, 65])
    assert wait(lambda: len(note_ons(d.probe.messages, channel=channel)) == 4
                and not unmatched(d.probe.messages, channel=channel), timeout=15)
    assert all(preset.sampling.pitch_low <= m[1] <= preset.sampling.pitch_high
               for _, m in note_ons(d.probe.messages, channel=channel))
    assert d.events("respond")[0]["preset"] == name


def test_a_cc_changes_the_next_answers_temperature(daemon):
    d = daemon("--preset", "ballad", "--length", "3", "--gap-ms", "200")  # temperature CC 21, range 0.2..1.2
    d.probe.play([60, 62])
    assert wait(lambda: len(d.events("respond")) == 1 and len(note_ons(d.probe.messages)) == 3)
    d.probe.send([0xB0, 21, 127])
    assert wait(lambda: d.events("control"), timeout=5)
    d.probe.play([64, 65])
    assert wait(lambda: len(d.events("respond")) == 2)
    control = d.events("control")[0]
    assert control["name"] == "temperature" and control["value"] == 1.2
    first, second = d.events("respond")
    assert first["temperature"] == 0.6 and second["temperature"] == 1.2
    assert d.events("trigger")[-1]["temperature"] == 1.2


def test_the_panic_cc_silences_a_playing_answer_within_20_ms(daemon):
    d = daemon("--preset", "wild", "--length", "200", "--max-seconds", "60", "--gap-ms", "200")  # panic CC 25
    d.probe.play([60, 62])
    assert wait(lambda: len(note_ons(d.probe.messages)) >= 3, timeout=10)
    pressed, sounding = press_while_sounding(d.probe, [0xB0, 25, 127], channel=0)  # a note is known to sound
    assert wait(lambda: closed_at(d.probe.messages, sounding, pressed) is not None
                and [0xB0, 123, 0] in [m for t, m in d.probe.messages if t >= pressed], timeout=2), \
        (pressed, sounding, [(round(t - pressed, 4), m) for t, m in d.probe.messages[-12:]])
    all_off_at = next(t for t, m in d.probe.messages if m == [0xB0, 123, 0] and t >= pressed)
    # the sounding notes' own note-offs (not CC 123, which closed_at also accepts) and CC 123 at once
    note_off_at = closed_at([(t, m) for t, m in d.probe.messages if m[0] & 0xF0 != 0xB0], sounding, pressed)
    assert note_off_at is not None and note_off_at - pressed <= 0.020
    assert all_off_at - pressed <= 0.020
    time.sleep(0.3)
    assert not unmatched(d.probe.messages)
    assert not [t for t, _ in note_ons(d.probe.messages) if t > pressed + 0.005]
    assert any(e["name"] == "panic" for e in d.events("control"))


class ClockSender:
    """A second JACK client sending Start then 24 ticks per beat at absolute times, and a
    witness client that hears the ticks as JACK delivers them (alongside livegen)."""

    def __init__(self, bpm: float):
        self.tick = 60.0 / bpm / 24
        self.sent: list[float] = []
        self.probe = MidiProbe("probe-clock")
        self.probe.play_into(port_matcher("livegen", "in"))
        self.witness = MidiProbe("probe-witness")
        self.witness.listen_to(lambda name: name.startswith("probe-clock:"))
        time.sleep(0.1)  # let JACK settle the connections
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        self.probe.send([0xFA])
        origin = time.monotonic() + 0.01
        i = 0
        while not self._stop.is_set():
            due = origin + i * self.tick
            while (left := due - time.monotonic()) > 0:
                time.sleep(min(left, 0.002) if left > 0.003 else 0)
            self.sent.append(self.probe.send([0xF8]))
            i += 1

    def delivered(self) -> list[float]:
        """Arrival times of the ticks at the witness."""
        return [t for t, m in self.witness.messages if m == [0xF8]]

    @staticmethod
    def grid(times: list[float], division_ticks: int):
        """(origin, step) of the line fitted to tick times, late ticks discounted as the daemon
        does (tests/engine/test_tempo_control.py checks that fit against known lines)."""
        origin, tick = fit_ticks(list(enumerate(times)))
        return origin, tick * division_ticks

    def close(self):
        self._stop.set()
        self._thread.join(2)
        wait(lambda: len(self.delivered()) >= len(self.sent), timeout=2)  # the last ticks on their way
        self.witness.close()
        self.probe.close()


CLOCK_UNTESTED = "CLOCK GRID NOT JUDGED"
"""Starts the skip reasons below.  pyproject's ``-ra`` lists every skip with its reason in the
short summary at the very end of the output, so a skip here is one of the last lines CI prints.
A realtime jackd (``-R``: its process thread runs SCHED_FIFO, ahead of the machine's other work)
delivers the ticks on time, so this should not skip there; on a non-realtime jackd under load it
may."""


def test_quantised_answers_fall_on_the_clock_grid(daemon, capsys):
    d = daemon("--preset", "daw", "--length", "8", "--max-seconds", "10")  # quantize 1/16, gap 2 beats, ch 2
    clock = ClockSender(120.0)
    try:
        time.sleep(0.5)
        d.probe.play([60, 62, 64, 65], hold=0.1, rest=0.15)
        assert wait(lambda: len(note_ons(d.probe.messages, channel=1)) == 8
                    and not unmatched(d.probe.messages, channel=1), timeout=15)
    finally:
        clock.close()
    sent, delivered = clock.sent, clock.delivered()
    if len(delivered) != len(sent):  # JACK drops MIDI in cycles it cannot finish (xruns)
        pytest.skip(f"{CLOCK_UNTESTED}: JACK delivered {len(delivered)} of {len(sent)} clock ticks (machine overloaded)")
    delays = [b - a for a, b in zip(sent, delivered)]
    intended = [e["intended"] for e in d.events("note_on")]
    arrived = [t for t, _ in note_ons(d.probe.messages, channel=1)]
    respond = d.events("respond")[0]
    assert len(intended) == 8 and respond["grid_from"] == "clock"
    assert intended[0] >= d.events("trigger")[0]["t"] - 1e-6  # first note on a grid point at or after the gap end

    def off(times, grid):  # signed distance of each time to the nearest point of the grid, ms
        origin, step = grid
        return [round((t - origin - round((t - origin) / step) * step) * 1000, 2) for t in times]

    sender_grid, delivered_grid = clock.grid(sent, 6), clock.grid(delivered, 6)
    with capsys.disabled():
        print(f"\nclock grid: JACK delivered the ticks {min(delays) * 1000:.2f}..{max(delays) * 1000:.2f} ms after "
              f"sending; onsets (ms) vs the delivered grid: scheduled {off(intended, delivered_grid)}, "
              f"arrived {off(arrived, delivered_grid)}; scheduled vs the sent grid {off(intended, sender_grid)}")
    if max(delays) - min(delays) > 0.010:
        # JACK's dummy driver falls behind on an overloaded machine and then delivers everything
        # tens of ms late: which ticks the grid should follow is then undefined.
        pytest.skip(f"{CLOCK_UNTESTED}: JACK delivered the clock {min(delays) * 1000:.1f}..{max(delays) * 1000:.1f} ms late "
                    "during the run (machine overloaded); the grid cannot be judged")
    assert abs(delivered_grid[1] - 0.125) < 0.001
    # The daemon knows the clock only as it arrives: on that grid within 2 ms, and on the sender's
    # within 2 ms plus JACK's mean delivery delay of the ticks (up to two 64-frame periods; a
    # CI run measured 0.17-2.60 ms and the daemon 1.9-2.2 ms off the sender's grid).
    assert max(map(abs, off(intended, delivered_grid))) <= 2.0
    assert max(map(abs, off(intended, sender_grid))) <= 2.0 + statistics.mean(delays) * 1000
    # at the client: plus about one JACK period (64 frames, 1.3 ms here) of delivery
    assert statistics.median(map(abs, off(arrived, delivered_grid))) <= 3.0


def test_learn_binds_the_next_cc_and_writes_the_preset(jack_server, midi_probe, quick_model, tmp_path):
    target = tmp_path / "stage.toml"
    target.write_text('description = "stage"\n[sampling]\ntemperature = 0.7\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "livegen", "run", "--model", str(quick_model), "--midi-api", "jack", "--no-synth",
         "--preset", str(target), "--learn", "--learn-timeout", "1.5"],
        env=jack_server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        midi_probe.play_into(port_matcher("livegen", "in"))
        line = process.stderr.readline()
        assert "move the control for temperature" in line, line
        time.sleep(0.1)
        for value in (10, 20, 30):  # a knob sends a burst
            midi_probe.send([0xB0, 74, value])
        line = process.stderr.readline()
        assert "temperature = CC 74" in line, line
        line = process.stderr.readline()
        assert "move the control for length" in line
        midi_probe.send([0xB0, 74, 40])  # the same knob again: taken, ignored
        midi_probe.send([0xB0, 75, 40])
        assert "length = CC 75" in process.stderr.readline()
        assert process.stdout.readline().startswith("ready")
    finally:
        midi_probe.close()
        process.terminate()
        process.wait(10)
    learned = presets.load(str(target))
    assert learned.controls.temperature == 74 and learned.controls.length == 75
    assert learned.sampling.temperature == 0.7 and learned.description == "stage"
