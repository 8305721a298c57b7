"""Models on disk: ``model.safetensors`` + ``config.json`` in one folder.

safetensors holds only tensors, so loading a model file can never run code (pickle can).  The
config says which architecture to build and with what sizes; every tensor is checked against that
architecture before loading, so a config that does not match its weights fails with a message
that names the first tensor that disagrees.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from livegen import __version__
from livegen.errors import ModelError
from livegen.model.device import resolve_device
from livegen.model.lstm import ARCH as NOTE_LSTM, NoteLSTM, NoteLSTMConfig
from livegen.model.seed_baseline import ARCH as SEED_LSTM, SeedLSTM, SeedLSTMConfig

FORMAT = "livegen-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# arch name -> (config class, module class); later architectures register here.
ARCHITECTURES: dict[str, tuple[type, type[nn.Module]]] = {
    NOTE_LSTM: (NoteLSTMConfig, NoteLSTM),
    SEED_LSTM: (SeedLSTMConfig, SeedLSTM),  # the seed recipe, a baseline
}


def default_model_dir() -> Path:
    """The folder `models/default` of this checkout, else the user's data folder."""
    import platformdirs

    candidates = [
        Path(__file__).resolve().parents[2] / "models" / "default",
        Path(platformdirs.user_data_dir("livegen")) / "models" / "default",
    ]
    for candidate in candidates:
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ModelError(
        f"no default model found (looked in {looked}); pass --model PATH to a model folder, "
        "or train one with `livegen train --corpus music21 --out models/default`"
    )


def save_model(model: nn.Module, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write the weights and config of ``model`` into ``directory`` (created if needed)."""
    from safetensors.torch import save_file

    arch = next((name for name, (_, cls) in ARCHITECTURES.items() if isinstance(model, cls)), None)
    if arch is None:
        raise ModelError(f"cannot save a {type(model).__name__}: not a registered architecture")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT, "arch": arch})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "livegen_version": __version__,
        "config": model.config.to_dict(),
        **(extra or {}),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def _locate(path: Path) -> tuple[Path, Path]:
    """A model folder, its weights file or its config file -> (weights, config)."""
    if path.is_dir():
        return path / WEIGHTS_FILE, path / CONFIG_FILE
    if path.suffix == ".json":
        return path.with_name(WEIGHTS_FILE), path
    return path, path.with_name(CONFIG_FILE)


def read_config(config_path: Path) -> tuple[str, Any]:
    """Parse and validate config.json -> (arch, config dataclass)."""
    if not config_path.is_file():
        raise ModelError(f"{config_path}: model config not found (a model folder holds {WEIGHTS_FILE} and {CONFIG_FILE})")
    try:
        data = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{config_path}: not a livegen model config (missing \"format\": \"{FORMAT}\")")
    if data.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{config_path}: format_version {data.get('format_version')!r} not supported (expected {FORMAT_VERSION})")
    arch = data.get("arch")
    if arch not in ARCHITECTURES:
        raise ModelError(f"{config_path}: unknown arch {arch!r} (known: {', '.join(ARCHITECTURES)})")
    config_cls, _ = ARCHITECTURES[arch]
    try:
        config = config_cls.from_dict(data.get("config", {}))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{config_path}: invalid model config ({exc})") from exc
    return arch, config


def load_model(path: str | os.PathLike | None = None, device: str | torch.device | None = "auto") -> nn.Module:
    """Build the model a folder describes and load its checked weights, in eval mode on ``device``."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else default_model_dir()
    if not path.exists():
        raise ModelError(f"{path}: no such model file or folder")
    weights_path, config_path = _locate(path)
    arch, config = read_config(config_path)
    if not weights_path.is_file():
        raise ModelError(f"{weights_path}: model weights not found")
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except Exception as exc:  # safetensors raises its own error type for any bad byte
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{weights_path}: not a valid safetensors file ({reason})") from exc

    _, model_cls = ARCHITECTURES[arch]
    model = model_cls(config)
    check_weights(model, tensors, weights_path)
    model.load_state_dict(tensors, strict=True)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(device).eval()


def check_weights(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Raise ModelError unless ``tensors`` has exactly the model's names, shapes and float dtypes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s), e.g. {unexpected[0]}")
        raise ModelError(f"{where}: weights do not match the config ({'; '.join(parts)})")
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            raise ModelError(
                f"{where}: weights do not match the config: {name} has shape {tuple(got.shape)}, "
                f"config implies {tuple(want.shape)}"
            )
        if got.dtype not in FLOAT_DTYPES:
            raise ModelError(f"{where}: {name} has dtype {got.dtype}, expected a floating-point type")
        if not torch.isfinite(got).all():
            raise ModelError(f"{where}: {name} contains NaN or infinite values")
