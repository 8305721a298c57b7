"""Per-note inference time of a shipped model, streamed vs the seed recipe's way.

- streamed (what the daemon does): ``NoteStream.feed`` of one note (one LSTM step from the kept
  state), then ``NoteStream.sample`` of the next note; each timed on its own.
- seed recipe's way, same model: for every note, tokenize the last 25 notes and encode them from
  a zero state through the whole network, then read the next-note distributions off the last
  position.  Timed with oneDNN on and off; the faster counts (the baseline's best case).
- the seed recipe's own model (models/seed-baseline, LSTM 128 over a 25-note window) per note,
  the same way, for reference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

SEED_WINDOW = 25


def _timed(fn: Callable[[int], object], steps: int, sync: Callable[[], None] = lambda: None) -> np.ndarray:
    times = np.empty(steps)
    for i in range(steps):
        t0 = time.perf_counter()
        fn(i)
        sync()
        times[i] = time.perf_counter() - t0
    return times


def _ms(times: np.ndarray) -> dict:
    ms = times * 1000.0
    return {"n": int(len(ms)), "median": round(float(np.median(ms)), 4), "p99": round(float(np.percentile(ms, 99)), 4),
            "max": round(float(ms.max()), 4), "mean": round(float(ms.mean()), 4)}


def melody_rows(count: int) -> np.ndarray:
    """Note rows from the real phrases the latency benchmark plays, repeated to ``count``."""
    from livegen.bench.latency import DEMO_PHRASE
    from livegen.notes import notes_to_array, read_midi

    rows = notes_to_array(read_midi(DEMO_PHRASE))
    reps = int(np.ceil(count / len(rows)))
    return np.tile(rows, (reps, 1))[:count]


def measure_stream(model, steps: int, device: str) -> dict:
    import torch

    from livegen.model.params import live_params
    from livegen.model.stream import NoteStream

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    stream = NoteStream(model, seed=0)
    stream.warm_up()
    rows = melody_rows(steps + SEED_WINDOW)
    stream.feed(rows[:SEED_WINDOW])
    params = live_params()  # as `livegen run` samples (the key and span read at every note)
    for i in range(50):  # warm-up
        stream.feed(rows[i])
        stream.sample(params)
    feed = np.empty(steps)
    sample = np.empty(steps)
    for i in range(steps):
        t0 = time.perf_counter()
        stream.feed(rows[SEED_WINDOW + i])
        sync()
        t1 = time.perf_counter()
        stream.sample(params)
        t2 = time.perf_counter()
        feed[i], sample[i] = t1 - t0, t2 - t1
    return {"feed_ms": _ms(feed), "sample_ms": _ms(sample), "feed_plus_sample_ms": _ms(feed + sample)}


def measure_seed_way(model, steps: int, device: str) -> dict:
    """Re-encode a 25-note window through the whole network for every note."""
    import torch

    from livegen.model.lstm import NextNote
    from livegen.model.tokens import Tokenizer

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    tokenizer = Tokenizer(model.config.tokens)
    dev = next(model.parameters()).device
    rows = melody_rows(steps + SEED_WINDOW)

    def one(i: int) -> None:
        window = torch.as_tensor(tokenizer.encode(rows[i : i + SEED_WINDOW]), device=dev)
        h, _ = model.encode(window.unsqueeze(0))  # (1, 25, hidden) from a zero state
        NextNote(model, h[:, -1]).step_logits()

    results = {}
    for onednn in (False, True):
        with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=onednn):
            _timed(one, 20, sync)
            results["onednn_on" if onednn else "onednn_off"] = _ms(_timed(one, steps, sync))
    best = min(results.values(), key=lambda r: r["median"])
    return {"window": SEED_WINDOW, "best_ms": best, **results}


def measure_seed_model(path: Path, steps: int) -> dict | None:
    """The seed recipe's own model (LSTM 128 over 25 notes), per note, CPU."""
    import torch

    from livegen.model.checkpoint import load_model
    from livegen.model.seed_baseline import features

    if not path.exists():
        return None
    model = load_model(path, device="cpu")
    x = features(melody_rows(steps + SEED_WINDOW))

    def one(i: int) -> None:
        model(x[i : i + SEED_WINDOW].unsqueeze(0))

    results = {}
    for onednn in (False, True):
        with torch.inference_mode(), torch.backends.mkldnn.flags(enabled=onednn):
            _timed(one, 20)
            results["onednn_on" if onednn else "onednn_off"] = _ms(_timed(one, steps))
    best = min(results.values(), key=lambda r: r["median"])
    return {"model": str(path), "best_ms": best, **results}


def bench_inference(model_path: str | None = None, steps: int = 10_000, seed_steps: int = 2_000,
                    devices: tuple[str, ...] | None = None) -> dict:
    import torch

    from livegen.model.checkpoint import default_model_dir, load_model

    path = Path(model_path) if model_path else default_model_dir()
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    if devices is None:
        devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    out: dict = {"model": str(path), "arch": config.get("arch"), "steps": steps, "seed_steps": seed_steps,
                 "torch_threads": torch.get_num_threads(), "devices": {}}
    for device in devices:
        model = load_model(path, device=device)
        stream = measure_stream(model, steps, device)
        seed_way = measure_seed_way(model, seed_steps, device)
        out["devices"][device] = {
            "stream": stream,
            "seed_way": seed_way,
            "speedup_vs_seed_way": round(seed_way["best_ms"]["median"] / stream["feed_ms"]["median"], 2),
        }
    seed_model = measure_seed_model(path.parent / "seed-baseline", seed_steps)
    if seed_model is not None:
        out["seed_baseline_model_cpu"] = seed_model
        cpu = out["devices"].get("cpu")
        if cpu:
            cpu["speedup_vs_seed_baseline_model"] = round(seed_model["best_ms"]["median"] / cpu["stream"]["feed_ms"]["median"], 2)
    return out
