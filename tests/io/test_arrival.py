import random

from livegen.io.arrival import ArrivalClock


def test_late_callbacks_get_the_native_arrival_times():
    clock = ArrivalClock()
    rng = random.Random(1)
    arrivals = [100.0 + i * 0.0208 for i in range(200)]
    previous = None
    for i, arrival in enumerate(arrivals):
        late = 0.0 if i % 10 == 0 else rng.uniform(0.0, 0.030)  # the callback waits for the GIL
        delta = 0.0 if previous is None else arrival - previous
        stamped = clock.stamp(delta, arrival + late)
        previous = arrival
        if i >= 10:  # once one callback ran on time
            assert abs(stamped - arrival) < 1e-9
        assert stamped <= arrival + late


def test_stamps_never_go_backwards_and_follow_clock_drift():
    clock = ArrivalClock(window_s=1.0)
    last = -1.0
    for i in range(2000):
        arrival = 10.0 + i * 0.01
        native_delta = 0.01 * (1 - 50e-6)  # the native clock runs 50 ppm slow
        stamped = clock.stamp(0.0 if i == 0 else native_delta, arrival + (0.002 if i % 3 else 0.0))
        assert stamped >= last
        last = stamped
        assert stamped <= arrival + 0.002 + 1e-12
        if i > 200:
            assert abs(stamped - arrival) < 0.0005  # renewed anchors keep the drift small


def test_a_broken_delta_falls_back_to_the_callback_time():
    clock = ArrivalClock()
    assert clock.stamp(0.0, 5.0) == 5.0
    assert clock.stamp(float("nan"), 6.0) == 6.0
    assert clock.stamp(-1.0, 7.0) == 7.0
    assert clock.stamp(0.5, 7.6) == 7.5


def test_deltas_that_lose_time_are_caught_up_within_the_lag_bound():
    clock = ArrivalClock()
    assert clock.stamp(0.0, 1.0) == 1.0
    assert clock.stamp(0.5, 1.5) == 1.5
    # RtMidi swallowed 1.3 s of events into an unterminated sysex: the delta says 0.2 s
    assert clock.stamp(0.2, 3.0) == 3.0
    assert clock.stamp(0.5, 3.52) == 3.5  # and native times are used again from there
