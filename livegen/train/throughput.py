"""Training throughput: notes with a loss per second of the real training step, any architecture.

``measure_throughput`` builds a fresh model of the given architecture and hidden size, and times
the same step the training loop runs (batch assembly from note windows, forward, loss, backward,
clipping, optimizer step) for about ``seconds`` after a few warm-up steps.  Each architecture uses
its own recipe's batch size unless one is given (ours: 64 windows of 128 notes; the seed recipe: 64
windows of 25 notes, one target each), so the figure compares the recipes as trained.  Timing
starts after one step on every batch shape, so it is the steady state of a long run.

``livegen bench train`` reports it; the model cards quote it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from livegen.train.loop import SeedTask, TrainConfig, make_optimizer, make_task, train_step

DEFAULT_BATCH = {"note-lstm": 64, "seed-lstm": SeedTask.defaults["batch_size"]}


@dataclass(frozen=True)
class Throughput:
    arch: str
    hidden: int
    layers: int
    batch_size: int
    window: int
    threads: int
    steps: int
    notes: int  # targets with a loss
    seconds: float
    notes_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(arch: str, hidden: int, layers: int = 2, **options):
    from livegen.model.lstm import NoteLSTM, NoteLSTMConfig
    from livegen.model.seed_baseline import SeedLSTM, SeedLSTMConfig

    if arch == "seed-lstm":
        return SeedLSTM(SeedLSTMConfig(hidden=hidden))
    if arch == "note-lstm":
        return NoteLSTM(NoteLSTMConfig(hidden=hidden, layers=layers, **options))
    raise ValueError(f"unknown trainable architecture {arch!r} (note-lstm or seed-lstm)")


def measure_throughput(
    arch: str,
    hidden: int,
    data: Sequence[np.ndarray],
    seconds: float = 10.0,
    *,
    layers: int = 2,
    batch_size: int | None = None,
    window: int = 128,
    warmup_steps: int = 3,
    seed: int = 0,
    **options,
) -> Throughput:
    """Time training steps of ``arch`` on ``data`` (note arrays) on the CPU -> notes with a loss per second.

    ``options`` are further NoteLSTMConfig fields (e.g. ``head="mlp"``, ``dropout=0.1``).
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    torch.manual_seed(seed)
    model = build_model(arch, hidden, layers, **options).train()
    values = {"arch": arch, "window": window}
    if arch == "seed-lstm":
        values.update(SeedTask.defaults)
    values["batch_size"] = batch_size or DEFAULT_BATCH[arch]
    config = TrainConfig(**values)
    task = make_task(model, config)
    batches = task.batches(list(data), np.random.default_rng(seed))
    if len(batches) == 0:
        raise ValueError("not enough data for one batch")
    optimizer = make_optimizer(model, config)
    device = torch.device("cpu")
    # Warm-up: one step on a batch of every shape.  oneDNN builds its LSTM kernels per sequence
    # length, and a training run pays for that once, in its first epoch; timing cold shapes would
    # charge it to every step of ours (many window lengths) and to none of the seed's (always 25).
    shapes: set[tuple[int, ...]] = set()
    for index in range(len(batches)):
        shape = np.shape(batches[index][0])
        if shape not in shapes:
            shapes.add(shape)
            train_step(model, task, batches[index], optimizer, config, device)
    for index in range(warmup_steps):
        train_step(model, task, batches[index % len(batches)], optimizer, config, device)
    index = warmup_steps
    steps = notes = 0
    started = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        _, n = train_step(model, task, batches[index % len(batches)], optimizer, config, device)
        index += 1
        steps += 1
        notes += n
        elapsed = time.perf_counter() - started
    return Throughput(arch, hidden, layers if arch == "note-lstm" else 1, config.batch_size,
                      window if arch == "note-lstm" else model.config.window, torch.get_num_threads(),
                      steps, notes, elapsed, notes / elapsed)


def model_options(model_dir) -> tuple[int, int, dict]:
    """A saved note-lstm's (hidden, layers, other NoteLSTMConfig fields) from its config.json."""
    import json
    from pathlib import Path

    config = json.loads((Path(model_dir) / "config.json").read_text())["config"]
    options = {k: config[k] for k in ("pitch_embedding", "field_embedding", "dropout", "head", "input_projection")
               if k in config}
    return config["hidden"], config["layers"], options


def compare(data: Sequence[np.ndarray], hidden: int, seconds: float, rounds: int = 3, layers: int = 2,
            **options) -> dict:
    """Ours against the seed recipe at the same hidden size, alternating ``rounds`` times so both see
    the same machine load -> JSON-ready dict with every round, the medians and their ratio."""
    runs = {"note-lstm": [], "seed-lstm": []}
    for _ in range(rounds):
        runs["note-lstm"].append(measure_throughput("note-lstm", hidden, data, seconds, layers=layers, **options))
        runs["seed-lstm"].append(measure_throughput("seed-lstm", hidden, data, seconds))
    median = {arch: float(np.median([r.notes_per_second for r in results])) for arch, results in runs.items()}
    return {"hidden": hidden, "threads": torch.get_num_threads(), "seconds_per_run": seconds, "rounds": rounds,
            "ours": {"median": round(median["note-lstm"]), "runs": [r.to_dict() for r in runs["note-lstm"]]},
            "seed_recipe": {"median": round(median["seed-lstm"]), "runs": [r.to_dict() for r in runs["seed-lstm"]]},
            "ratio": round(median["note-lstm"] / median["seed-lstm"], 2)}


def main(argv=None) -> int:
    """`python -m livegen.train.throughput`: ours vs the seed recipe on corpus data, JSON on stdout."""
    import argparse
    import json

    from livegen.train.data import corpus_files, default_cache_dir, ingest

    parser = argparse.ArgumentParser(prog="python -m livegen.train.throughput", description=main.__doc__)
    parser.add_argument("--model", default="models/default", help="note-lstm folder whose architecture is timed")
    parser.add_argument("--hidden", type=int, help="hidden size of both recipes (default: the model's)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per timed run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per recipe (default 3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--corpus-include", action="append", default=None, metavar="TEXT",
                        help="music21 corpus paths to train on (default: bach/bwv and essenFolksong/)")
    parser.add_argument("--cache", help="parsed-notes cache (default: the user cache dir)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden, layers, options = model_options(args.model)
    files = corpus_files(args.corpus_include or ["bach/bwv", "essenFolksong/"])
    data = [p.notes for p in ingest(files, args.cache or default_cache_dir(), workers=0, progress=False).pieces]
    report = compare(data, args.hidden or hidden, args.seconds, args.rounds, layers=layers, **options)
    report["model"] = {"path": str(args.model), "layers": layers, **options}
    report["data"] = {"pieces": len(data), "notes": int(sum(len(d) for d in data))}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
