import dataclasses
import json
import pickle
import resource
import struct
import typing

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from factories import TINY_CONFIG, melody, tiny_model, tiny_model_dir
from livegen.errors import LivegenError, ModelError
from livegen.model.checkpoint import ARCHITECTURES, CONFIG_FILE, MAX_DIMENSION, WEIGHTS_FILE, load_model, save_model
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


# --- configs that lie, generated from the config dataclasses --------------------------------------

WRONG = {int: ["32", 32.0, True, None, [32], {"n": 32}], float: ["0.1", True, None, [0.1], float("nan"), float("inf")],
         bool: ["yes", 1, 0, None], str: [5, True, None, ["linear"]]}


def config_leaves(cls, prefix="config"):
    """(path of keys, type) of every field of an architecture's config, nested ones included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield (*prefix.split("."), f.name), dict
            yield from config_leaves(kind, f"{prefix}.{f.name}")
        else:
            yield (*prefix.split("."), f.name), kind


def lying_configs():
    cases = []
    for arch, (config_cls, _) in ARCHITECTURES.items():
        for keys, kind in config_leaves(config_cls):
            for value in WRONG.get(kind, ["x", 3, [1]]):
                cases.append((arch, keys, value))
            if kind is int:
                cases.append((arch, keys, MAX_DIMENSION + 1))
    return cases


def model_dir_of(arch, directory):
    config_cls, model_cls = ARCHITECTURES[arch]
    small = TINY_CONFIG if arch == "note-lstm" else config_cls(hidden=8, window=4)
    return save_model(model_cls(small).eval(), directory)


@pytest.mark.parametrize("arch, keys, value", lying_configs(), ids=lambda v: str(v)[:24])
def test_every_config_key_with_a_wrong_type_names_the_key(tmp_path, arch, keys, value):
    directory = model_dir_of(arch, tmp_path / "m")
    config = json.loads((directory / CONFIG_FILE).read_text())
    target = config
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    expect_model_error(directory, str(directory / CONFIG_FILE), "invalid model config", ".".join(keys))


@pytest.mark.parametrize("config, fragment", [
    ({"config": []}, "config must be an object"),
    ({"config": None}, "config must be an object"),
    ({"arch": ["note-lstm"]}, "unknown arch ['note-lstm']"),
    ({"arch": None}, "unknown arch None"),
    ({"format_version": True}, "format_version True not supported"),
    ({"format_version": "1"}, "format_version '1' not supported"),
])
def test_config_fields_of_the_wrong_kind(tmp_path, config, fragment):
    directory = tiny_model_dir(tmp_path / "m")
    data = json.loads((directory / CONFIG_FILE).read_text())
    (directory / CONFIG_FILE).write_text(json.dumps({**data, **config}))
    expect_model_error(directory, fragment)


@pytest.mark.parametrize("content", [b"\xff\xfe{", b"[" * 100_000, b"", b"null", b'"text"'])
def test_config_files_that_are_not_json_objects(tmp_path, content):
    directory = tiny_model_dir(tmp_path / "m")
    (directory / CONFIG_FILE).write_bytes(content)
    expect_model_error(directory, str(directory / CONFIG_FILE))


def test_a_config_that_claims_a_huge_model_allocates_nothing_before_the_weights_disagree(tmp_path):
    directory = tiny_model_dir(tmp_path / "m")
    config = json.loads((directory / CONFIG_FILE).read_text())
    config["config"].update(hidden=MAX_DIMENSION, layers=1)  # a real build: 4 * 16384^2 floats, over 4 GB
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    expect_model_error(directory, "weights do not match the config")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB


# --- weights files that lie -----------------------------------------------------------------------


def test_weights_that_are_a_folder_or_whose_header_points_past_the_end(tmp_path):
    directory = tiny_model_dir(tmp_path / "m")
    weights = directory / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(struct.pack("<Q", len(data) * 10) + data[8:])
    expect_model_error(directory, "not a valid safetensors file", f"header length {len(data) * 10} points past the end")
    weights.write_bytes(struct.pack("<Q", 2**64 - 1) + data[8:])
    expect_model_error(directory, "not a valid safetensors file", "points past the end")
    weights.write_bytes(b"\x01\x00")
    expect_model_error(directory, "2 bytes, too short")
    weights.unlink()
    weights.mkdir()
    expect_model_error(directory, f"{weights}: is a directory")


def test_every_pickle_protocol_is_named_and_never_run(tmp_path):
    directory = tiny_model_dir(tmp_path / "m")
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        (directory / WEIGHTS_FILE).write_bytes(pickle.dumps({"w": Exploit()}, protocol=protocol))
        expect_model_error(directory, "not a valid safetensors file", *(["pickle"] if protocol >= 2 else []))
    torch.save({"w": torch.zeros(2)}, directory / WEIGHTS_FILE)
    expect_model_error(directory, "pickle or torch.save file")
    assert not marker.exists()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_load_as_the_model_dtype(tmp_path, dtype):
    directory = tiny_model_dir(tmp_path / "m")
    tensors = {k: v.to(dtype) for k, v in load_file(str(directory / WEIGHTS_FILE)).items()}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    model = load_model(directory, device="cpu")
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bool, torch.int8, torch.uint8, torch.int64, torch.float8_e4m3fn])
def test_non_float_dtypes_are_refused(tmp_path, dtype):
    directory = tiny_model_dir(tmp_path / "m")
    tensors = load_file(str(directory / WEIGHTS_FILE))
    tensors["in_pitch.weight"] = tensors["in_pitch.weight"].to(dtype)
    save_file(tensors, str(directory / WEIGHTS_FILE))
    expect_model_error(directory, f"in_pitch.weight has dtype {dtype}")


def test_infinite_weights_are_refused(tmp_path):
    directory = tiny_model_dir(tmp_path / "m")
    tensors = load_file(str(directory / WEIGHTS_FILE))
    tensors["in_pitch.weight"][3, 1] = float("-inf")
    save_file(tensors, str(directory / WEIGHTS_FILE))
    expect_model_error(directory, "in_pitch.weight contains NaN or infinite values")


@pytest.fixture(scope="module")
def weights_bytes(tmp_path_factory):
    return (tiny_model_dir(tmp_path_factory.mktemp("w") / "m") / WEIGHTS_FILE).read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1, exclude_max=True), flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                                      st.integers(0, 255)), max_size=4))
def test_truncated_or_flipped_weights_load_or_fail_clearly(tmp_path, weights_bytes, cut, flips):
    """Header bytes flipped or the file cut anywhere: a ModelError, never another exception."""
    directory = tmp_path / "fuzz"
    if not directory.exists():
        tiny_model_dir(directory)
    data = bytearray(weights_bytes)
    header_end = 8 + struct.unpack("<Q", weights_bytes[:8])[0]
    for where, value in flips:
        data[int(where * header_end)] = value
    if flips:
        (directory / WEIGHTS_FILE).write_bytes(bytes(data))
    else:
        (directory / WEIGHTS_FILE).write_bytes(weights_bytes[: int(cut * len(weights_bytes))])
    try:
        model = load_model(directory, device="cpu")
    except ModelError as exc:
        assert str(directory) in str(exc) and "\n" not in str(exc)
    else:
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


# --- the commands that load models ----------------------------------------------------------------


def test_generate_and_eval_refuse_bad_models_with_one_line(tmp_path, capsys):
    from livegen.cli import main
    from livegen.notes import Track, write_midi

    primer = tmp_path / "primer.mid"
    write_midi(primer, [Track("p", melody(40))])
    lying = tiny_model_dir(tmp_path / "lying")
    config = json.loads((lying / CONFIG_FILE).read_text())
    config["config"]["tokens"] = "bins"
    (lying / CONFIG_FILE).write_text(json.dumps(config))
    pickled = tiny_model_dir(tmp_path / "pickled")
    torch.save(tiny_model().state_dict(), pickled / WEIGHTS_FILE)
    for directory, fragment in [(lying, "config.tokens = 'bins': expected an object"), (pickled, "pickle")]:
        for argv in (["generate", str(primer), "-o", str(tmp_path / "o.mid"), "--model", str(directory)],
                     ["eval", str(directory), "--data", str(primer), "--no-cache", "--workers", "0", "--quiet"]):
            assert main(argv) == 2
            lines = capsys.readouterr().err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"livegen {argv[0]}: error: {directory}") and fragment in lines[0]
    assert not (tmp_path / "o.mid").exists()


@pytest.mark.parametrize("counts", ["[1]", "[" * 100_000, None, '{"format": "livegen-markov", "format_version": 1, "tables": 5}'])
def test_eval_refuses_a_broken_markov_folder_with_one_line(tmp_path, capsys, counts):
    from livegen.cli import main
    from livegen.model.markov import COUNTS_FILE, MarkovModel
    from livegen.notes import Track, write_midi

    primer = tmp_path / "primer.mid"
    write_midi(primer, [Track("p", melody(40))])
    directory = MarkovModel().save(tmp_path / "markov-model")
    (directory / COUNTS_FILE).unlink()
    if counts is None:
        (directory / COUNTS_FILE).mkdir()
    else:
        (directory / COUNTS_FILE).write_text(counts)
    assert main(["eval", str(directory), "--data", str(primer), "--no-cache", "--workers", "0", "--quiet"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"livegen eval: error: {directory}")
