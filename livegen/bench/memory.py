"""The cost of the session memory per note: feed + sample with the memory on, against without.

The daemon feeds every played note and samples every answer note; with ``--memory W`` each feed
also counts the note in the memory and each sample asks the memory and mixes two distributions.
Both ways run interleaved, note by note, on the same rows (the real phrases the latency benchmark
plays), so a busy machine slows both alike; the memory starts full (``capacity`` notes of the
same phrases) so its tables are as large as a long session makes them.  The two streams share
one model's packed weights, as the daemon's listening stream and its answers do (two copies
would make each note read twice the weights through the cache, a cost no daemon pays).
"""

from __future__ import annotations

import time

import numpy as np

from livegen.bench.inference import _ms, melody_rows

WARM_UP = 50


def bench_memory(model_path: str | None = None, steps: int = 5_000, weight: float = 0.5) -> dict:
    import torch

    from livegen.model.blend import MemoryStream
    from livegen.model.checkpoint import default_model_dir, load_model
    from livegen.model.memory import SessionMemory
    from livegen.model.params import live_params
    from livegen.model.stream import NoteStream, make_generator

    path = model_path or default_model_dir()
    model = load_model(path, device="cpu")
    memory = SessionMemory()
    rows = melody_rows(memory.config.capacity + steps + WARM_UP)
    memory.observe(rows[: memory.config.capacity])
    rows = rows[memory.config.capacity :]
    plain = NoteStream(model, seed=0)
    own = plain.fork()  # the same packed weights, its own state and draws
    own.generator = make_generator(0, own.device)
    blended = MemoryStream(own, memory)
    plain_params = live_params()  # as `livegen run` samples
    memory_params = live_params(memory=weight)
    times = {name: (np.empty(steps), np.empty(steps)) for name in ("without", "with")}
    for i in range(WARM_UP + steps):
        for name, stream, params in (("without", plain, plain_params), ("with", blended, memory_params)):
            t0 = time.perf_counter()
            stream.feed(rows[i])
            t1 = time.perf_counter()
            stream.sample(params)
            t2 = time.perf_counter()
            if i >= WARM_UP:
                times[name][0][i - WARM_UP], times[name][1][i - WARM_UP] = t1 - t0, t2 - t1
    out: dict = {"model": str(path), "steps": steps, "weight": weight, "memory_notes": len(memory),
                 "torch_threads": torch.get_num_threads()}
    for name, (feed, sample) in times.items():
        out[f"{name}_memory"] = {"feed_ms": _ms(feed), "sample_ms": _ms(sample), "feed_sample_ms": _ms(feed + sample)}
    cost = out["with_memory"]["feed_sample_ms"]["median"] - out["without_memory"]["feed_sample_ms"]["median"]
    out["cost_ms"] = round(cost, 4)
    return out
