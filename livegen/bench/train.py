"""Training throughput (notes with a loss per second) of the default architecture and of the seed
recipe at the same hidden size, on the same data and machine (livegen.train.throughput)."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS_INCLUDE = ("bach/bwv",)


def training_data(files: int = 40) -> tuple[list, dict]:
    """Note arrays of the first ``files`` Bach chorales in the music21 corpus (cached after the
    first parse, in livegen's training cache)."""
    from livegen.train.data import corpus_files, default_cache_dir, ingest

    ids = corpus_files(list(CORPUS_INCLUDE))[:files]
    ingested = ingest(ids, cache_dir=default_cache_dir(), workers=0, progress=False)
    data = [p.notes for p in ingested.pieces]
    return data, {"source": f"music21 corpus {', '.join(CORPUS_INCLUDE)} (first {files} files)",
                  "pieces": len(data), "notes": int(sum(len(d) for d in data))}


def bench_train(model_path: str | None = None, seconds: float = 10.0, files: int = 40) -> dict:
    import torch

    from livegen.model.checkpoint import default_model_dir
    from livegen.train.throughput import measure_throughput

    path = Path(model_path) if model_path else default_model_dir()
    config = json.loads((path / "config.json").read_text())["config"]
    options = {k: config[k] for k in ("pitch_embedding", "field_embedding", "dropout", "head", "input_projection")
               if k in config}
    data, info = training_data(files)
    ours = measure_throughput("note-lstm", config["hidden"], data, seconds, layers=config["layers"], **options)
    seed = measure_throughput("seed-lstm", config["hidden"], data, seconds)
    return {"data": info, "device": "cpu", "torch_threads": torch.get_num_threads(),
            "default": ours.to_dict(), "seed_recipe": seed.to_dict(),
            "ratio": round(ours.notes_per_second / seed.notes_per_second, 2)}
