"""The training loop: batches of note windows, AdamW, clipping, LR schedule, AMP, DDP, checkpoints.

Two trainable architectures share this loop through a small *task* object:

* ``note-lstm`` (ours): random windows of up to ``window`` notes, teacher forcing on every
  position, loss = the sum of the four fields' cross-entropies (nats per note).
* ``seed-lstm`` (the seed recipe): every 25-note sliding window, one target (the note after it),
  the recipe's weighted CE + MSE loss.

Throughput is counted in *notes with a loss* per second, so the two are comparable: the seed
recipe spends a 25-step LSTM pass on each of its targets, ours one step per target.

Under ``torchrun`` (RANK/WORLD_SIZE in the environment) the model is wrapped in
DistributedDataParallel (gloo on CPU, NCCL on GPU); every rank builds the same shuffled batch list
from the epoch's seed and takes its own share; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from livegen.errors import ModelError
from livegen.model.timebase import order_chords
from livegen.model.tokens import FIELDS, Tokenizer
from livegen.train.augment import NO_AUGMENTATION, AugmentConfig, augment
from livegen.train.data import Piece

LAST_DIR = "last"
STATE_FILE = "train_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
AVERAGE_FILE = "average.safetensors"  # in out/last: the moving average of the weights (--ema), for --resume
LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "note-lstm"
    epochs: int = 20
    batch_size: int = 64
    window: int = 128  # notes per training window (note-lstm)
    lr: float = 2e-3
    weight_decay: float = 0.01
    clip: float = 1.0  # max gradient norm; 0 = no clipping
    warmup: int = 100  # steps of linear warm-up, then cosine decay to lr * min_lr
    min_lr: float = 0.1
    schedule: bool = True
    optimizer: str = "adamw"
    seed: int = 0
    max_steps: int = 0  # stop after this many optimizer steps in all (0 = no limit)
    amp: str = "auto"  # auto: bf16/fp16 autocast on CUDA, off on CPU
    select: str = "pitch"  # the validation loss that picks the saved model: pitch, or total (all fields)
    ema: float = 0.0  # decay of a moving average of the weights, validated and saved instead of them (0 = off)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.select not in ("pitch", "total"):
            raise ValueError(f"select must be pitch or total, got {self.select!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")

    def to_dict(self) -> dict:
        return asdict(self)


# --- batches -------------------------------------------------------------------------------------


class LSTMBatches:
    """Windows of token rows, bucketed by length so little is padding."""

    def __init__(self, arrays: Sequence[np.ndarray], tokenizer: Tokenizer, window: int, batch_size: int,
                 rng: np.random.Generator | None) -> None:
        windows = []
        config = tokenizer.config
        for array in arrays:
            tokens = tokenizer.encode(order_chords(array, config.chord_order, config.chord_seconds))
            n = len(tokens)
            if n < 2:
                continue
            if rng is not None:  # training: random offsets, about one window per `window` notes
                count = max(1, math.ceil((n - 1) / window))
                starts = rng.integers(0, max(n - window - 1, 0) + 1, size=count)
            else:  # validation: consecutive windows
                starts = range(0, n - 1, window)
            windows.extend(tokens[s : s + window + 1] for s in starts if n - s >= 2)
        order = rng.permutation(len(windows)) if rng is not None else np.arange(len(windows))
        batches = []
        chunk = batch_size * 64
        for begin in range(0, len(order), chunk):
            part = sorted(order[begin : begin + chunk], key=lambda i: -len(windows[i]))
            batches.extend(part[b : b + batch_size] for b in range(0, len(part), batch_size))
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        self.windows, self.batches = windows, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        members = [self.windows[i] for i in self.batches[index]]
        length = max(len(w) for w in members)
        tokens = np.zeros((len(members), length, 4), dtype=np.int64)
        mask = np.zeros((len(members), length - 1), dtype=bool)
        for row, window in enumerate(members):
            tokens[row, : len(window)] = window
            mask[row, : len(window) - 1] = True
        return tokens, mask


class SeedBatches:
    """Every ``window``-note sliding window and the note after it (the seed recipe's dataset)."""

    def __init__(self, arrays: Sequence[np.ndarray], window: int, batch_size: int,
                 rng: np.random.Generator | None, limit: int = 0) -> None:
        arrays = [a for a in arrays if len(a) > window]
        self.notes = np.concatenate(arrays).astype(np.float32) if arrays else np.zeros((0, 4), np.float32)
        offsets = np.cumsum([0] + [len(a) for a in arrays])
        starts = np.concatenate([o + np.arange(len(a) - window) for o, a in zip(offsets, arrays)]) if arrays else np.zeros(0, int)
        if rng is not None:
            starts = starts[rng.permutation(len(starts))]
        elif limit and len(starts) > limit:  # validation: an even subsample
            starts = starts[np.linspace(0, len(starts) - 1, limit).astype(int)]
        self.starts, self.window, self.batch_size = starts, window, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.starts) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        starts = self.starts[index * self.batch_size : (index + 1) * self.batch_size]
        rows = self.notes[starts[:, None] + np.arange(self.window + 1)]  # (B, window + 1, 4)
        return rows[:, :-1], rows[:, -1]


# --- tasks: how one architecture turns a batch into a loss ---------------------------------------


class LSTMTask:
    fields = FIELDS
    defaults = {}

    def __init__(self, model, config: TrainConfig) -> None:
        self.tokenizer = Tokenizer(model.config.tokens)
        self.config = config

    def batches(self, arrays, rng):
        return LSTMBatches(arrays, self.tokenizer, self.config.window, self.config.batch_size, rng)

    def loss(self, model, batch, device) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """-> (mean loss to minimise, summed loss per field, number of targets)."""
        tokens, mask = (torch.from_numpy(b).to(device, non_blocking=True) for b in batch)
        targets = tokens[:, 1:]
        logits, _ = model(tokens[:, :-1], targets)
        count = int(mask.sum())
        targets = targets.masked_fill(~mask.unsqueeze(-1), -100)  # padding: ignored by cross_entropy
        sums = {}
        for column, name in enumerate(FIELDS):
            sums[name] = F.cross_entropy(getattr(logits, name).flatten(0, 1).float(), targets[..., column].flatten(),
                                         reduction="sum", ignore_index=-100)
        total = sum(sums.values()) / max(count, 1)
        return total, {k: v.detach() for k, v in sums.items()}, count


class SeedTask:
    fields = ("pitch", "step", "duration")
    defaults = {"batch_size": 64, "lr": 0.005, "weight_decay": 0.0, "clip": 0.0, "schedule": False,
                "warmup": 0, "optimizer": "adam"}  # the tutorial: Adam(0.005), batch 64

    def __init__(self, model, config: TrainConfig) -> None:
        self.window = model.config.window
        self.config = config

    def batches(self, arrays, rng):
        return SeedBatches(arrays, self.window, self.config.batch_size, rng, limit=20_000)

    def loss(self, model, batch, device):
        from livegen.model.seed_baseline import features

        rows, target = (torch.from_numpy(b).to(device, non_blocking=True) for b in batch)
        output = model(features(rows))
        core = model.module if hasattr(model, "module") else model
        total, parts = core.loss(output, target)
        count = len(target)
        return total, {k: v.detach() * count for k, v in parts.items()}, count


def make_task(model, config: TrainConfig):
    from livegen.model.seed_baseline import SeedLSTM

    return SeedTask(model, config) if isinstance(model, SeedLSTM) else LSTMTask(model, config)


# --- distributed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes, if any -> (Dist, this rank's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(hours=2))  # rank 0 may parse a corpus first
    return Dist(rank, world, local_rank), device


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_reduce(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if not d.enabled:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def shutdown_distributed(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# --- optimizer state on disk (safetensors + JSON, never pickle) ----------------------------------


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path, info: dict) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(directory / OPTIMIZER_FILE))
    payload = {**info, "param_groups": state["param_groups"], "optimizer_scalars": scalars}
    temporary = directory / (STATE_FILE + ".tmp")
    temporary.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(temporary, directory / STATE_FILE)


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> dict:
    from safetensors.torch import load_file

    try:
        info = json.loads((directory / STATE_FILE).read_text())
        tensors = load_file(str(directory / OPTIMIZER_FILE))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{directory}: cannot resume, training state missing or corrupt ({exc})") from exc
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for name, value in info.get("optimizer_scalars", {}).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{directory}: optimizer state does not match the model ({exc})") from exc
    return info


# --- a moving average of the weights (--ema) -----------------------------------------------------


def make_average(model: nn.Module, config: TrainConfig, resume_from: Path | None = None):
    """An exponential moving average of ``model``'s weights (torch's AveragedModel), or None when
    ``config.ema`` is 0.  Why: late in training each step's noise (augmentation drawn anew every
    epoch, dropout, small batches) moves the weights around a minimum; their average sits nearer it.
    ``resume_from`` (a ``last`` folder) restores the average that ``--resume`` left."""
    if config.ema <= 0.0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema))
    path = resume_from / AVERAGE_FILE if resume_from is not None else None
    if path is not None and path.exists():
        from safetensors.torch import load_file

        try:
            average.module.load_state_dict(load_file(str(path)))
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelError(f"{path}: cannot resume the weight average ({exc})") from exc
        average.n_averaged.fill_(1)  # later updates average into it instead of copying the model
    return average


def save_average(average, directory: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in average.module.state_dict().items()}
    save_file(tensors, str(directory / AVERAGE_FILE))


# --- the loop ------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the seed recipe) or AdamW without weight decay on biases and embeddings (nanoGPT's rule)."""
    decay, no_decay = [], []
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for parameter in model.parameters():
        (no_decay if parameter.ndim < 2 or id(parameter) in embeddings else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99))


def train_step(model, task, batch, optimizer, config: TrainConfig, device: torch.device,
               autocast=contextlib.nullcontext, scaler=None, parameters=None) -> tuple[dict[str, torch.Tensor], int]:
    """One optimizer step on one batch -> (summed loss per field, number of targets).

    ``model`` may be the DDP wrapper; ``parameters`` (default: the model's) are the ones clipped.
    """
    with autocast():
        loss, parts, n = task.loss(model, batch, device)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if config.clip > 0:
        nn.utils.clip_grad_norm_(model.parameters() if parameters is None else parameters, config.clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return parts, n


def _lr_lambda(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if not config.schedule:
            return 1.0
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = min((step - config.warmup) / max(total_steps - config.warmup, 1), 1.0)
        return config.min_lr + (1 - config.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _autocast(config: TrainConfig, device: torch.device):
    """-> (autocast context factory, GradScaler or None)."""
    if device.type != "cuda" or config.amp == "off":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if config.amp == "bf16" or (config.amp == "auto" and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


@dataclass
class TrainResult:
    epochs_done: int
    steps: int
    best_val: float | None
    best_epoch: int | None
    train_seconds: float
    notes_per_second: float
    history: list[dict]


def train(
    model: nn.Module,
    config: TrainConfig,
    train_pieces: Sequence[Piece],
    val_pieces: Sequence[Piece],
    out: Path,
    device: torch.device,
    dist_info: Dist = Dist(),
    resume: bool = False,
    save: Callable[[nn.Module, Path, dict], None] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train ``model`` in place; rank 0 saves the best model to ``out`` and the last to out/last.

    With ``config.ema`` the moving average of the weights is what is validated and saved to ``out``
    (out/last keeps the raw weights to resume from, and the average beside them)."""
    from tqdm import tqdm

    main = dist_info.main
    model.to(device)
    task = make_task(model, config)
    optimizer = make_optimizer(model, config)

    history: list[dict] = []
    start_epoch, step, best_val, best_epoch, train_seconds, targets_done = 0, 0, None, None, 0.0, 0
    if resume:
        info = load_optimizer(optimizer, out / LAST_DIR)
        start_epoch, step = info["epoch"], info["step"]
        best_val, best_epoch = info.get("best_val"), info.get("best_epoch")
        history = info.get("history", [])
        train_seconds, targets_done = info.get("train_seconds", 0.0), info.get("targets", 0)
        log(f"resuming after epoch {start_epoch} (step {step})")

    wrapped = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    average = make_average(model, config, out / LAST_DIR if resume else None)
    train_arrays = [p.notes for p in train_pieces]
    val_batches = task.batches([p.notes for p in val_pieces], None)
    autocast, scaler = _autocast(config, device)

    def epoch_batches(epoch: int):
        rng = np.random.default_rng([config.seed, epoch])  # identical on every rank
        arrays = [augment(p.notes, p.quantised, rng, config.augment) for p in train_pieces] \
            if config.augment != NO_AUGMENTATION else train_arrays
        return task.batches(arrays, rng)

    per_epoch = len(epoch_batches(0)) // dist_info.world
    if per_epoch == 0:
        raise ModelError("not enough training data for one batch per process")
    total_steps = config.epochs * per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    factor = _lr_lambda(config, total_steps)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=step - 1)

    epoch = start_epoch
    for epoch in range(start_epoch, config.epochs):
        if config.max_steps and step >= config.max_steps:
            break
        model.train()
        batches = epoch_batches(epoch)
        mine = list(range(dist_info.rank, len(batches), dist_info.world))[:per_epoch]
        sums = {name: 0.0 for name in task.fields}
        count = 0
        started = time.perf_counter()
        bar = tqdm(mine, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not (progress and main), leave=False)
        for index in bar:
            parts, n = train_step(wrapped, task, batches[index], optimizer, config, device, autocast, scaler,
                                  parameters=model.parameters())
            scheduler.step()
            if average is not None:
                average.update_parameters(model)
            step += 1
            count += n
            for name in sums:
                sums[name] += float(parts[name])
            if progress and main and step % 10 == 0:
                bar.set_postfix({name[:3]: f"{sums[name] / max(count, 1):.3f}" for name in task.fields})
            if config.max_steps and step >= config.max_steps:
                break
        bar.close()
        elapsed = time.perf_counter() - started
        totals = all_reduce([count, elapsed] + [sums[k] for k in task.fields], dist_info, device)
        count_all, elapsed_max = totals[0], totals[1] / dist_info.world
        train_seconds += elapsed
        targets_done += int(count_all)
        train_losses = {k: v / max(count_all, 1) for k, v in zip(task.fields, totals[2:])}
        val_losses = evaluate_loss(wrapped if average is None else average.module, task, val_batches, device,
                                   dist_info, autocast)
        record = {
            "epoch": epoch + 1,
            "step": step,
            "lr": optimizer.param_groups[0]["lr"],
            "train": train_losses,
            "train_total": _total(task, train_losses, model),
            "val": val_losses,
            "val_total": _total(task, val_losses, model) if val_losses else None,
            "seconds": round(elapsed, 2),
            "notes_per_second": round(count_all / max(elapsed_max, 1e-9), 1),
        }
        if average is not None:  # what the average buys: the raw weights' validation loss beside it
            record["val_raw"] = evaluate_loss(wrapped, task, val_batches, device, dist_info, autocast)
        history.append(record)
        losses, total = (record["val"], record["val_total"]) if record["val"] else (record["train"], record["train_total"])
        current = losses["pitch"] if config.select == "pitch" else total
        improved = best_val is None or current < best_val
        if improved:
            best_val, best_epoch = current, epoch + 1
        if main:
            log(_format(record, task.fields) + ("  *best" if improved else ""))
            with open(out / LOG_FILE, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            summary = {"epochs_done": epoch + 1, "steps": step, "best_val": best_val, "best_epoch": best_epoch,
                       "train_seconds": round(train_seconds, 1), "targets": targets_done,
                       "notes_per_second": round(targets_done / max(train_seconds, 1e-9), 1)}
            if improved and save is not None:
                save(model if average is None else average.module, out, summary)
            last = out / LAST_DIR
            if save is not None:
                save(model, last, summary)
                if average is not None:
                    save_average(average, last)
                save_optimizer(optimizer, last, {"epoch": epoch + 1, "step": step, "best_val": best_val,
                                                 "best_epoch": best_epoch, "history": history,
                                                 "train_seconds": train_seconds, "targets": targets_done})
        barrier(dist_info)

    done = history[-1]["epoch"] if history else start_epoch
    return TrainResult(done, step, best_val, best_epoch, train_seconds,
                       targets_done / max(train_seconds, 1e-9), history)


def _total(task, losses: dict[str, float], model) -> float:
    if isinstance(task, SeedTask):
        c = model.config
        return c.pitch_weight * losses["pitch"] + c.step_weight * losses["step"] + c.duration_weight * losses["duration"]
    return sum(losses.values())


def _format(record: dict, fields: Sequence[str]) -> str:
    def losses(values: dict) -> str:
        return " ".join(f"{k} {values[k]:.3f}" for k in fields)

    text = f"epoch {record['epoch']}: train {record['train_total']:.4f} ({losses(record['train'])})"
    if record["val"]:
        text += f" | val {record['val_total']:.4f} ({losses(record['val'])})"
    if record.get("val_raw"):
        text += f" | raw weights' val pitch {record['val_raw']['pitch']:.3f}"
    return text + f" | {record['notes_per_second']:.0f} notes/s, {record['seconds']:.0f} s"


@torch.no_grad()
def evaluate_loss(model, task, batches, device, dist_info: Dist, autocast) -> dict[str, float]:
    """Mean loss per field over validation batches (sharded over ranks, summed)."""
    if len(batches) == 0:
        return {}
    model.eval()
    sums = {name: 0.0 for name in task.fields}
    count = 0
    core = model.module if hasattr(model, "module") else model  # no DDP sync for evaluation
    for index in range(dist_info.rank, len(batches), dist_info.world):
        with autocast():
            _, parts, n = task.loss(core, batches[index], device)
        count += n
        for name in sums:
            sums[name] += float(parts[name])
    totals = all_reduce([count] + [sums[k] for k in task.fields], dist_info, device)
    model.train()
    return {k: v / max(totals[0], 1) for k, v in zip(task.fields, totals[1:])}
