"""The GPU path: feed, sample, a training step and a short engine run with the model on CUDA.

These run wherever CUDA exists and are skipped elsewhere; `bash scripts/gpu-check.sh` runs them
and `livegen bench inference` (CPU and CUDA side by side) in one go on a GPU machine.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from livegen.model.lstm import NoteLSTM, NoteLSTMConfig
from livegen.model.sampling import SamplingParams
from livegen.model.stream import NoteStream
from livegen.model.tokens import TokenConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here; run `bash scripts/gpu-check.sh` on a machine with a GPU")

CALL = np.array([[60, 0.0, 0.4, 80], [64, 0.5, 0.4, 80], [67, 0.5, 0.4, 80], [72, 0.5, 0.9, 90],
                 [67, 0.0, 0.9, 70], [64, 1.0, 0.4, 80]], dtype=np.float64)


def model_on(device: str) -> NoteLSTM:
    torch.manual_seed(0)
    config = NoteLSTMConfig(hidden=64, layers=1, head="linear", input_projection=False,
                            tokens=TokenConfig.relative_default())
    return NoteLSTM(config).to(device).eval()


def test_streaming_on_cuda_keeps_the_state_on_the_device_and_matches_the_cpu():
    gpu, cpu = NoteStream(model_on("cuda")), NoteStream(model_on("cpu"))
    for row in CALL:
        gpu.feed(row)
        cpu.feed(row)
        assert gpu.state[0].device.type == "cuda" and gpu.state[1].device.type == "cuda"
    torch.testing.assert_close(gpu.state[0].cpu(), cpu.state[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu.next.h.cpu(), cpu.next.h, atol=1e-4, rtol=1e-4)


def test_sampling_on_cuda_gives_valid_notes_at_the_players_tempo():
    stream = NoteStream(model_on("cuda"), seed=1)
    stream.feed(CALL)
    for _ in range(16):
        row = stream.sample(SamplingParams(pitch_low=36, pitch_high=96))
        assert 36 <= row[0] <= 96 and row[1] >= 0 and row[2] > 0 and 1 <= row[3] <= 127
        stream.feed(row)
        assert stream.state[0].device.type == "cuda"


def test_one_training_step_on_cuda_lowers_the_loss():
    from livegen.train.loop import LSTMTask, TrainConfig, make_optimizer, train_step

    model = model_on("cuda").train()
    config = TrainConfig(lr=1e-2)
    task = LSTMTask(model, config)
    arrays = [np.tile(CALL, (8, 1))] * 8
    batch = task.batches(arrays, None)[0]
    optimizer = make_optimizer(model, config)
    device = torch.device("cuda")
    first = None
    for _ in range(5):
        parts, n = train_step(model, task, batch, optimizer, config, device)
        loss = float(sum(parts.values())) / n
        first = loss if first is None else first
    assert loss < first


def test_a_short_demo_runs_with_the_model_on_cuda(tmp_path):
    done = subprocess.run([sys.executable, "-m", "livegen", "demo", "--device", "cuda", "--no-synth", "--seed", "1",
                           "--log-json", str(tmp_path / "events.jsonl")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    ons = [e for e in events if e["event"] == "note_on"]
    offs = [e for e in events if e["event"] == "note_off"]
    assert ons and len(offs) >= len(ons)
