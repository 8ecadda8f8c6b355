import json
import struct
from dataclasses import asdict

import numpy as np
import pytest
from tinygrad import Tensor

from edgevit import weights
from edgevit.errors import EdgeViTError
from edgevit.model import ViTConfig

SMALL = ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32)


@pytest.fixture
def small_file(tmp_path):
    from tinygrad.nn.state import get_state_dict

    from edgevit.model import ViT

    model = ViT(SMALL)
    path = tmp_path / "w.safetensors"
    meta = {"config": asdict(SMALL), "preprocess": {"mean": 0.1, "std": 0.3}}
    weights.save(path, get_state_dict(model), meta)
    return path, {k: v.numpy() for k, v in get_state_dict(model).items()}


def test_save_then_load_is_exact_and_rebuilds_the_model(small_file):
    path, original = small_file
    opened = weights.ModelFile.open(path)
    model, header = opened.build(), opened.header
    assert model.config == SMALL and header.metadata["preprocess"] == {"mean": 0.1, "std": 0.3}
    from tinygrad.nn.state import get_state_dict

    loaded = {k: v.numpy() for k, v in get_state_dict(model).items()}
    assert loaded.keys() == original.keys()
    for k in original:
        assert np.array_equal(loaded[k], original[k]), k


def test_other_safetensors_readers_see_string_metadata(small_file):
    path, _ = small_file
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + n])["__metadata__"]
    assert all(isinstance(v, str) for v in meta.values()) and meta["format"] == "edgevit"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-4], "truncated weights file"),
        (lambda b: b + b"\0" * 4, "oversized weights file"),
        (lambda b: b[:5], "not a safetensors file"),
        (lambda b: struct.pack("<Q", 2**40) + b[8:], "header length"),
        (lambda b: b[:8] + b"{" * 4 + b[12:], "corrupt safetensors header"),
        (lambda b: b"\x00" * len(b), "corrupt safetensors header"),
    ],
)
def test_damaged_files_are_refused_by_name(small_file, mutate, message):
    path, _ = small_file
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(EdgeViTError, match=message) as e:
        weights.ModelFile.open(path)
    assert str(path) in str(e.value)


def test_foreign_safetensors_is_not_taken_for_edgevit(tmp_path):
    from tinygrad.nn.state import safe_save

    safe_save({"w": Tensor.ones(3).contiguous()}, str(tmp_path / "other.safetensors"))
    with pytest.raises(EdgeViTError, match="not an EdgeViT weights file"):
        weights.ModelFile.open(tmp_path / "other.safetensors")


def test_tensors_that_do_not_match_the_config_are_refused(small_file, tmp_path):
    path, original = small_file
    header = weights.read_header(path)
    meta = dict(header.metadata, config=asdict(ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32)))
    other = tmp_path / "mismatch.safetensors"
    weights.save(other, {k: Tensor(v) for k, v in original.items()}, meta)
    with pytest.raises(EdgeViTError, match=r"do not match the config.*missing blocks\.1\."):
        weights.ModelFile.open(other)
    meta = dict(header.metadata, config=asdict(ViTConfig(dim=16, depth=1, heads=2, mlp_dim=64)))
    weights.save(other, {k: Tensor(v) for k, v in original.items()}, meta)
    with pytest.raises(EdgeViTError, match=r"blocks\.0\.mlp\.fc1\.weight is \(32, 16\) but the config needs \(64, 16\)"):
        weights.ModelFile.open(other)


def test_missing_file_and_directory_are_clear(tmp_path):
    with pytest.raises(EdgeViTError, match="no such file"):
        weights.ModelFile.open(tmp_path / "absent.safetensors")
    with pytest.raises(EdgeViTError, match="is a directory"):
        weights.ModelFile.open(tmp_path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "w.bin"
    target.write_bytes(b"good")

    def half_then_crash(tmp):
        tmp.write_bytes(b"ha")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        weights.atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]
    weights.atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1
