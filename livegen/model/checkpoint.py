"""Models on disk: ``model.safetensors`` + ``config.json`` in one folder.

safetensors holds only tensors, so loading a model file can never run code (pickle can).  The
config says which architecture to build and with what sizes; every tensor is checked against that
architecture before loading, so a config that does not match its weights fails with a message
that names the first tensor that disagrees.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from livegen import __version__
from livegen.errors import ModelError
from livegen.jsonfile import read_json
from livegen.model.device import resolve_device
from livegen.model.lstm import ARCH as NOTE_LSTM, NoteLSTM, NoteLSTMConfig
from livegen.model.seed_baseline import ARCH as SEED_LSTM, SeedLSTM, SeedLSTMConfig

FORMAT = "livegen-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
MAX_DIMENSION = 16_384  # no config size (width, layers, bins, window) of a real model is larger
PICKLE_MAGIC = (b"PK\x03\x04",) + tuple(bytes([0x80, protocol]) for protocol in range(2, 6))  # torch.save zip, pickle

# arch name -> (config class, module class); later architectures register here.
ARCHITECTURES: dict[str, tuple[type, type[nn.Module]]] = {
    NOTE_LSTM: (NoteLSTMConfig, NoteLSTM),
    SEED_LSTM: (SeedLSTMConfig, SeedLSTM),  # the seed recipe, a baseline
}


def default_model_dir() -> Path:
    """The shipped `models/default` (this checkout's, or the wheel's), else the user's data folder."""
    import platformdirs

    from livegen.shipped import shipped_dir

    candidates = [
        shipped_dir("models") / "default",
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
    """Parse and validate config.json -> (arch, config dataclass).

    Every value is type-checked against the config dataclass before it is built, so a config
    that lies (a string for a size, a bool for an int, a list for an object) is a ModelError
    naming the key, never a TypeError from deep inside torch.
    """
    if config_path.is_dir():
        raise ModelError(f"{config_path}: is a directory, not a model config")
    if not config_path.is_file():
        raise ModelError(f"{config_path}: model config not found (a model folder holds {WEIGHTS_FILE} and {CONFIG_FILE})")
    data = read_json(config_path, ModelError)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{config_path}: not a livegen model config (missing \"format\": \"{FORMAT}\")")
    version = data.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ModelError(f"{config_path}: format_version {version!r} not supported (expected {FORMAT_VERSION})")
    arch = data.get("arch")
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ModelError(f"{config_path}: unknown arch {arch!r} (known: {', '.join(ARCHITECTURES)})")
    config_cls, _ = ARCHITECTURES[arch]
    values = data.get("config", {})
    if not isinstance(values, dict):
        raise ModelError(f"{config_path}: invalid model config (config must be an object, got {values!r:.80})")
    check_config_types(config_cls, values, config_path, "config")
    try:
        config = config_cls.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{config_path}: invalid model config ({exc})") from exc
    return arch, config


def check_config_types(cls: type, values: dict, where: Path, prefix: str) -> None:
    """ModelError unless every known key of ``values`` has the type its dataclass field declares.

    Unknown keys are left to ``from_dict`` (which names them).  Sizes are capped at MAX_DIMENSION:
    the expected tensors come from a model built on the meta device, which costs no memory, but
    its build time still grows with a size such as the layer count.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, kind, key = values[f.name], hints[f.name], f"{prefix}.{f.name}"

        def wrong(expected: str) -> ModelError:
            return ModelError(f"{where}: invalid model config ({key} = {value!r:.80}: expected {expected})")

        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise wrong("an object")
            check_config_types(kind, value, where, key)
        elif kind is bool:
            if not isinstance(value, bool):
                raise wrong("true or false")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise wrong("an integer")
            if abs(value) > MAX_DIMENSION:
                raise wrong(f"an integer of at most {MAX_DIMENSION}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise wrong("a finite number")
        elif kind is str and not isinstance(value, str):
            raise wrong("a string")


def load_model(path: str | os.PathLike | None = None, device: str | torch.device | None = "auto") -> nn.Module:
    """Build the model a folder describes and load its checked weights, in eval mode on ``device``.

    The expected tensors come from the architecture built on the meta device (no memory), and the
    real model is only built once the file's tensors match them: a config that lies about sizes
    costs nothing.
    """
    path = Path(path) if path is not None else default_model_dir()
    if not path.exists():
        raise ModelError(f"{path}: no such model file or folder")
    weights_path, config_path = _locate(path)
    arch, config = read_config(config_path)
    _, model_cls = ARCHITECTURES[arch]
    try:
        expected = expected_tensors(model_cls, config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{config_path}: invalid model config ({exc})") from exc
    tensors = read_weights(weights_path)
    check_tensors(expected, tensors, weights_path)
    model = model_cls(config)
    model.load_state_dict(tensors, strict=True)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(device).eval()


def expected_tensors(model_cls: type[nn.Module], config: Any) -> dict[str, torch.Tensor]:
    """The state dict ``model_cls(config)`` would have, as meta tensors: shapes without memory."""
    with torch.device("meta"), _SkipMetaInit():
        return model_cls(config).state_dict()


class _SkipMetaInit(TorchFunctionMode):
    """Skips in-place operations (the random initialisation) on meta tensors, which hold no
    values anyway: on the meta device ``normal_`` goes through a decomposition that imports
    torch._dynamo, over a second of startup for nothing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes tensor=...
        if name.endswith("_") and not name.endswith("__") and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def read_weights(weights_path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file on the CPU; ModelError saying why not (pickles named)."""
    from safetensors.torch import load_file

    if weights_path.is_dir():
        raise ModelError(f"{weights_path}: is a directory, not model weights")
    if not weights_path.is_file():
        raise ModelError(f"{weights_path}: model weights not found")
    try:
        with weights_path.open("rb") as handle:
            head = handle.read(8)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise ModelError(f"{weights_path}: cannot read ({exc.strerror or exc})") from exc
    if head.startswith(PICKLE_MAGIC):
        reason = "it is a pickle or torch.save file, which livegen never loads because unpickling can run code"
    elif len(head) < 8:
        reason = f"{size} bytes, too short for a safetensors header"
    elif 8 + int.from_bytes(head, "little") > size:
        reason = f"the header length {int.from_bytes(head, 'little')} points past the end of the {size}-byte file"
    else:
        try:
            return load_file(str(weights_path), device="cpu")
        except Exception as exc:  # safetensors raises its own error type for any bad byte
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    raise ModelError(f"{weights_path}: not a valid safetensors file ({reason})")


def check_weights(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Raise ModelError unless ``tensors`` has exactly the model's names, shapes and float dtypes."""
    check_tensors(model.state_dict(), tensors, where)


def check_tensors(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Raise ModelError unless ``tensors`` has exactly the names and shapes of ``expected``
    (which may live on the meta device), a floating-point dtype and only finite values."""
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
