import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from factories import TINY_CONFIG, melody, tiny_model, tiny_model_dir
from livegen.errors import LivegenError, ModelError
from livegen.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_model, save_model
from livegen.model.device import resolve_device
from livegen.model.stream import continue_notes


def test_save_and_load_give_the_same_model(tmp_path):
    model = tiny_model(seed=5)
    save_model(model, tmp_path / "m", extra={"trained_on": "nothing"})
    config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert config["arch"] == "note-lstm" and config["trained_on"] == "nothing"
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config == TINY_CONFIG
    for path in (tmp_path / "m", tmp_path / "m" / WEIGHTS_FILE, tmp_path / "m" / CONFIG_FILE):
        again = load_model(path, device="cpu")
        assert continue_notes(again, melody(), 20, seed=1) == continue_notes(model, melody(), 20, seed=1)
    assert not loaded.training


def expect_model_error(path, *fragments):
    with pytest.raises(ModelError) as info:
        load_model(path, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, LivegenError)


def test_corrupted_weights_file(tmp_path):
    directory = tiny_model_dir(tmp_path / "m")
    weights = directory / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    expect_model_error(directory, str(weights), "not a valid safetensors file")


def test_a_pickle_renamed_to_safetensors_is_refused_and_never_executed(tmp_path):
    directory = tiny_model_dir(tmp_path / "m")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (directory / WEIGHTS_FILE).write_bytes(pickle.dumps({"weights": Exploit()}))
    torch.save(tiny_model().state_dict(), tmp_path / "torch_pickle.pt")
    expect_model_error(directory, "not a valid safetensors file")
    assert not marker.exists()
    (directory / WEIGHTS_FILE).write_bytes((tmp_path / "torch_pickle.pt").read_bytes())
    expect_model_error(directory, "not a valid safetensors file")


def test_config_that_does_not_match_the_weights(tmp_path):
    directory = tiny_model_dir(tmp_path / "m")
    config = json.loads((directory / CONFIG_FILE).read_text())
    config["config"]["hidden"] = 48
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    expect_model_error(directory, "weights do not match the config", "has shape", "config implies")


def test_missing_and_extra_tensors(tmp_path):
    directory = tiny_model_dir(tmp_path / "m")
    tensors = load_file(str(directory / WEIGHTS_FILE))
    tensors.pop("pitch_head.2.bias")
    tensors["surprise"] = torch.zeros(3)
    save_file(tensors, str(directory / WEIGHTS_FILE))
    expect_model_error(directory, "missing 1 tensor(s), e.g. pitch_head.2.bias", "unexpected 1 tensor(s), e.g. surprise")


def test_wrong_dtype_and_non_finite_weights(tmp_path):
    directory = tiny_model_dir(tmp_path / "m")
    tensors = load_file(str(directory / WEIGHTS_FILE))
    tensors["in_proj.bias"] = tensors["in_proj.bias"].to(torch.int32)
    save_file(tensors, str(directory / WEIGHTS_FILE))
    expect_model_error(directory, "in_proj.bias has dtype torch.int32")
    tensors["in_proj.bias"] = torch.full_like(tensors["in_proj.weight"][:, 0], float("nan"))
    save_file(tensors, str(directory / WEIGHTS_FILE))
    expect_model_error(directory, "in_proj.bias contains NaN")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "not valid JSON"),
        ('{"format": "something-else"}', "not a livegen model config"),
        ('{"format": "livegen-model", "format_version": 1, "arch": "transformer"}', "unknown arch 'transformer'"),
        ('{"format": "livegen-model", "format_version": 1, "arch": "note-lstm", "config": {"hidden": -3}}', "hidden must be a positive integer"),
        ('{"format": "livegen-model", "format_version": 1, "arch": "note-lstm", "config": {"colour": 1}}', "unknown model config keys: colour"),
        ('{"format": "livegen-model", "format_version": 7, "arch": "note-lstm"}', "format_version 7 not supported"),
    ],
)
def test_bad_configs(tmp_path, text, fragment):
    directory = tiny_model_dir(tmp_path / "m")
    (directory / CONFIG_FILE).write_text(text)
    expect_model_error(directory, str(directory / CONFIG_FILE), fragment)


def test_missing_pieces(tmp_path):
    expect_model_error(tmp_path / "nowhere", "no such model file or folder")
    directory = tiny_model_dir(tmp_path / "m")
    (directory / WEIGHTS_FILE).unlink()
    expect_model_error(directory, "model weights not found")
    (directory / CONFIG_FILE).unlink()
    expect_model_error(directory, "model config not found")


def test_device_resolution():
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ModelError, match="not a device name"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda")
