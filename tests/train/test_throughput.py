import numpy as np
import pytest

from livegen.train.throughput import measure_throughput


def tunes(count=12, length=60):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        rows = np.column_stack([rng.integers(55, 80, length), rng.choice([0.0, 0.25, 0.5], length),
                                rng.choice([0.25, 0.5], length), rng.integers(40, 100, length)]).astype(float)
        out.append(rows)
    return out


@pytest.mark.parametrize("arch, batch", [("note-lstm", 4), ("seed-lstm", 16)])
def test_measure_throughput_times_real_training_steps(arch, batch):
    result = measure_throughput(arch, 16, tunes(), seconds=0.2, batch_size=batch, window=32, warmup_steps=1)
    assert result.arch == arch and result.hidden == 16 and result.batch_size == batch
    assert result.steps >= 1 and result.notes >= result.steps and result.seconds >= 0.2
    assert result.notes_per_second == pytest.approx(result.notes / result.seconds)
    if arch == "seed-lstm":  # one target per window of 25 notes (the last batch of the data is smaller)
        assert result.window == 25 and result.notes <= result.steps * batch
    else:  # a target at every position of every window
        assert result.notes > result.steps * batch
    assert set(result.to_dict()) >= {"arch", "hidden", "notes_per_second", "threads"}


def test_measure_throughput_rejects_unknown_arch_and_bad_duration():
    with pytest.raises(ValueError, match="architecture"):
        measure_throughput("markov", 16, tunes(), seconds=0.1)
    with pytest.raises(ValueError, match="seconds"):
        measure_throughput("note-lstm", 16, tunes(), seconds=0)
