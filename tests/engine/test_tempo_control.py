from livegen.engine.control import ControlMap, TimedScheduler
from livegen.engine.tempo import ClockFollower, Grid, phrase_beat


def test_clock_follower_fits_tempo_and_grid_through_jitter():
    clock = ClockFollower()
    clock.start(0.0)
    tick = 0.5 / 24  # 120 BPM
    for i in range(48):
        clock.tick(10.0 + i * tick + (0.0015 if i % 3 == 0 else -0.0007))
    assert abs(clock.bpm - 120) < 0.5
    grid = clock.grid("1/16")
    assert abs(grid.step - 0.125) < 0.001
    point = grid.ceil(11.01)
    assert abs(point - 11.125) < 0.002


def test_a_burst_of_late_ticks_does_not_tilt_the_grid():
    clock = ClockFollower()
    clock.start(0.0)
    tick = 0.5 / 24
    for i in range(192):
        late = 0.060 if 100 <= i < 110 else (0.0005 if i % 2 else 0.0)  # a 10-tick stall of 60 ms
        clock.tick(10.0 + i * tick + late)
    origin, period = clock.fit()
    assert abs(period - tick) < 2e-6 and abs(origin - 10.0) < 0.001
    grid = clock.grid("1/16")
    assert abs(grid.ceil(10.0 + 200 * tick) - (10.0 + 204 * tick)) < 0.001


def test_grid_snap_never_before():
    grid = Grid(0.0, 0.25)
    assert grid.ceil(0.26) == 0.5
    assert grid.snap(0.3) == 0.25
    assert grid.snap(0.3, not_before=0.5) == 0.5


def test_phrase_beat_folds_into_range():
    assert abs(phrase_beat([0, 0.25, 0.5, 0.75]) - 0.5) < 1e-9  # eighths at 120 -> beat 0.5
    assert phrase_beat([0.0]) is None


def test_control_map_ranges():
    cm = ControlMap(temperature=21, length=22, gap=23, mode=24, panic=25, mute=26)
    assert cm.interpret(0, 21, 0) == ("temperature", 0.1)
    assert cm.interpret(0, 21, 127) == ("temperature", 2.0)
    assert cm.interpret(0, 22, 127) == ("length", 64)
    assert cm.interpret(0, 23, 0) == ("gap", 0.1)
    assert cm.interpret(0, 24, 80) == ("mode", "mirror")
    assert cm.interpret(0, 24, 127) == ("mode", "harmonize")  # the knob's travel in quarters
    assert cm.interpret(0, 25, 0) is None and cm.interpret(0, 25, 127) == ("panic", True)
    assert cm.interpret(0, 26, 0) == ("mute", False)
    assert ControlMap(channel=3, temperature=21).interpret(0, 21, 5) is None


class Recorder:
    def __init__(self):
        self.notes = []

    def schedule_note(self, pitch, velocity, channel, on_at, off_at, tag=None):
        self.notes.append((on_at, off_at))

    def cancel(self, tag=None, now=None):
        return []


def test_timed_scheduler_snaps_first_note_at_or_after_start_and_keeps_durations():
    inner = Recorder()
    timed = TimedScheduler(inner)
    timed.set_timing(1, Grid(0.0, 0.125), 0.01)
    timed.schedule_note(60, 90, 0, 1.03, 1.13, 1)
    timed.schedule_note(62, 90, 0, 1.14, 1.2, 1)
    (a_on, a_off), (b_on, b_off) = inner.notes
    assert abs(a_on - 1.135) < 1e-9 and abs(a_off - a_on - 0.1) < 1e-9
    assert abs(b_on - 1.135) < 1e-9  # nearest point, not before the first
    timed.schedule_note(64, 90, 0, 5.0, 5.1, 2)  # untimed answer passes through
    assert inner.notes[-1] == (5.0, 5.1)
