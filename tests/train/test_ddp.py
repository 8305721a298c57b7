import json
import os
import subprocess
import sys

from livegen.model.checkpoint import load_model
from train_fixtures import write_songs


def test_torchrun_with_two_cpu_processes_trains_a_few_steps(tmp_path):
    """The real entry point (`torchrun -m livegen.train`), gloo backend, 2 processes."""
    songs = write_songs(tmp_path / "songs", count=8)
    out = tmp_path / "model"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "livegen.train", "--data", str(songs), "--out", str(out), "--epochs", "2", "--max-steps", "3",
        "--hidden", "16", "--layers", "1", "--window", "32", "--batch-size", "4", "--workers", "0",
        "--threads", "1", "--quiet", "--cache", str(tmp_path / "cache"), "--device", "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "2 processes" in done.stdout
    assert done.stdout.count("wrote ") == 1  # only rank 0 writes and reports
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) >= 1 and log[-1]["step"] >= 1
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["processes"] == 2
    load_model(out, device="cpu")
