"""MindSpore checkpoints: load_checkpoint, save_checkpoint, load_param_into_net, parameters_dict.

Against MindSpore's own files (``shared/golden/networks/dcgan_g/model.ckpt`` and
``model.safetensors``, written by ``mindspore.save_checkpoint``): loading them
gives golden.npz's ``param.<name>`` bit for bit, and saving those parameters
gives the two files byte for byte (the strongest check of tags, types, order and
encoding). Then round trips of every dtype, the 512 MiB chunking (with the chunk
size patched small), the CRC trailer, MindSpore's load_param_into_net rules, the
naming traversal of NNX modules, and every bad-file case.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
import zlib

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi._src.mindspore.checkpoint import ckpt_format

from .support import GOLDEN_DIR, needs_golden, skip_without_golden

pytest.importorskip("google.protobuf", reason="the nn extra is not installed: pip install 'jax_conv_bpi[nn]'")
pytest.importorskip("safetensors", reason="the nn extra is not installed: pip install 'jax_conv_bpi[nn]'")
nnx = pytest.importorskip("flax.nnx", reason="the nn extra is not installed: pip install 'jax_conv_bpi[nn]'")

DCGAN = GOLDEN_DIR / "networks" / "dcgan_g"


@pytest.fixture(scope="module")
def golden():
    """(net.json, golden.npz, model.ckpt bytes, model.safetensors bytes) of dcgan_g."""
    skip_without_golden()
    net = json.loads((DCGAN / "net.json").read_text())
    return (
        net,
        np.load(DCGAN / "golden.npz"),
        (DCGAN / "model.ckpt").read_bytes(),
        (DCGAN / "model.safetensors").read_bytes(),
    )


def records(data: bytes):
    """The file's Checkpoint.value records as (tag, dims, tensor_type, content length), via the library's message."""
    message = ckpt_format.checkpoint_message()()
    message.ParseFromString(data)
    return [(v.tag, list(v.tensor.dims), v.tensor.tensor_type, len(v.tensor.tensor_content)) for v in message.value]


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------
# MindSpore's files
# ---------------------------------------------------------------------------


@needs_golden
@pytest.mark.parametrize("name", ["model.ckpt", "model.safetensors"])
def test_golden_files_load_bit_exactly(golden, name):
    net, z, _, _ = golden
    params = jcb.load_checkpoint(DCGAN / name)
    names = [p["name"] for p in net["parameters"]]
    expected_order = names if name.endswith(".ckpt") else sorted(names)  # file order; safetensors: name order
    assert list(params) == expected_order
    for p in net["parameters"]:
        value = params[p["name"]]
        assert isinstance(value, np.ndarray) and value.flags.writeable
        assert value.shape == tuple(p["shape"]) and value.dtype == np.dtype(p["dtype"])
        assert same_bits(value, z[f"param.{p['name']}"]), p["name"]


@needs_golden
def test_golden_ckpt_records_are_the_specs(golden):
    net, _, ckpt, _ = golden
    check = net["checkpoint_check"]["ckpt"]
    recs = records(ckpt)
    assert len(ckpt) == check["file_size"] and len(recs) == check["num_values"]
    assert [r[0] for r in recs] == check["tags_in_order"]
    assert {r[2] for r in recs} == set(check["tensor_types"])
    shapes = {p["name"]: p["shape"] for p in net["parameters"]}
    assert all(dims == shapes[tag] and size == 4 * int(np.prod(dims)) for tag, dims, _, size in recs)


@needs_golden
@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_saving_the_golden_parameters_reproduces_mindspores_file_byte_for_byte(golden, tmp_path, fmt):
    _, z, ckpt, safetensors = golden
    params = jcb.load_checkpoint(DCGAN / "model.ckpt")  # in MindSpore's parameter order
    path = tmp_path / f"model.{fmt}"
    jcb.save_checkpoint(params, path, format=fmt)
    assert path.read_bytes() == (ckpt if fmt == "ckpt" else safetensors)
    assert os.listdir(tmp_path) == [path.name], "a temporary file was left behind"
    # From golden.npz's arrays (not the loaded ones) too.
    from_npz = {name: z[f"param.{name}"] for name in params}
    jcb.save_checkpoint(from_npz, path, format=fmt)  # overwrites
    assert path.read_bytes() == (ckpt if fmt == "ckpt" else safetensors)


@needs_golden
def test_golden_safetensors_header(golden):
    net, _, _, safetensors = golden
    header_len = int.from_bytes(safetensors[:8], "little")
    header = json.loads(safetensors[8 : 8 + header_len])
    check = net["checkpoint_check"]["safetensors"]
    assert header_len == check["header_bytes"] and header.pop("__metadata__") == check["metadata"] == {"format": "ms"}
    assert list(header) == check["keys_in_header_order"]


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


def _all_kinds(rng) -> dict:
    out = {
        "f32_4d": rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
        "f16": rng.standard_normal((3, 7)).astype(np.float16),
        "bf16": rng.standard_normal((5, 2)).astype(ml_dtypes.bfloat16),
        "f64": rng.standard_normal(4),
        "scalar_f32": np.float32(-1.5),
        "scalar_0d": np.array(3, np.int32),
        "bool": rng.random((2, 2)) > 0.5,
        "nan_inf": np.array([np.nan, np.inf, -np.inf, -0.0], np.float32),
    }
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        info = np.iinfo(dtype)
        out[np.dtype(dtype).name] = np.array([info.min, 0, 1, info.max], dtype)
    return out


@pytest.mark.parametrize("fmt", ["ckpt", "safetensors"])
def test_round_trip_is_bit_exact_for_every_dtype(tmp_path, fmt):
    params = _all_kinds(np.random.default_rng(0))
    path = tmp_path / f"all.{fmt}"
    jcb.save_checkpoint(params, path, format=fmt)
    back = jcb.load_checkpoint(path)
    assert list(back) == (list(params) if fmt == "ckpt" else sorted(params))
    for name, value in params.items():
        assert same_bits(back[name], value), name


def test_ckpt_records_tensor_types_and_scalars(tmp_path):
    params = {"a": np.ones((2, 3), np.float16), "b": np.zeros((), ml_dtypes.bfloat16), "i": 5, "x": 0.5, "t": True}
    params["s"] = "hello"
    jcb.save_checkpoint(params, tmp_path / "a.ckpt")
    data = (tmp_path / "a.ckpt").read_bytes()
    # append_dict's encodings (spec 1.3): int -> Int64 [], float -> Float32 [], bool -> Bool [], str -> "str" [0]
    assert records(data) == [
        ("a", [2, 3], "Float16", 12),
        ("b", [], "BFloat16", 2),
        ("i", [], "Int64", 8),
        ("x", [], "Float32", 4),
        ("t", [], "Bool", 1),
        ("s", [0], "str", 20),
    ]
    back = jcb.load_checkpoint(tmp_path / "a.ckpt")
    assert back["s"] == "hello" and isinstance(back["s"], str)  # as MindSpore: a str entry comes back a str
    assert same_bits(back["i"], np.int64(5)) and same_bits(back["x"], np.float32(0.5))
    assert same_bits(back["t"], np.bool_(True))


@pytest.mark.parametrize("text", ["", "é€😀 mixed", "a" * 300])
def test_str_entries_round_trip(tmp_path, text):
    jcb.save_checkpoint({"w": np.ones(2, np.float32), "name": text, "u": np.array(text)}, tmp_path / "s.ckpt")
    back = jcb.load_checkpoint(tmp_path / "s.ckpt")
    assert back["name"] == text and back["u"] == text


def test_jax_arrays_variables_and_big_endian_inputs_are_saved_as_little_endian(tmp_path):
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    params = {"jax": jnp.arange(4, dtype=jnp.bfloat16), "var": nnx.Param(jnp.ones(3)), "big": big}
    for fmt in ("ckpt", "safetensors"):
        jcb.save_checkpoint(params, tmp_path / f"x.{fmt}", format=fmt)
        back = jcb.load_checkpoint(tmp_path / f"x.{fmt}")
        assert same_bits(back["jax"], np.arange(4, dtype=ml_dtypes.bfloat16))
        assert same_bits(back["var"], np.ones(3, np.float32))
        assert same_bits(back["big"], big.astype("<f4"))


def test_zero_size_array_round_trips(tmp_path):
    jcb.save_checkpoint({"empty": np.zeros((0, 3), np.float32), "w": np.ones(1, np.float32)}, tmp_path / "z.ckpt")
    back = jcb.load_checkpoint(tmp_path / "z.ckpt")
    assert same_bits(back["empty"], np.zeros((0, 3), np.float32))


# ---------------------------------------------------------------------------
# Big tensors: chunks of 512 MiB (patched small)
# ---------------------------------------------------------------------------


def test_chunk_size_is_mindspores():
    assert ckpt_format._CHUNK_BYTES == 512 * 1024 * 1024


def test_big_tensors_are_split_like_mindspore(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_format, "_CHUNK_BYTES", 64)
    params = {
        "before": np.ones(3, np.float32),
        "big": np.arange(50, dtype=np.float32).reshape(5, 10),  # 200 bytes: chunks 64, 64, 64, 8
        "exact": np.arange(16, dtype=np.float32),  # 64 bytes: one record (split only above the size)
        "after": np.arange(4, dtype=np.int8),
    }
    jcb.save_checkpoint(params, tmp_path / "big.ckpt", crc_check=True)
    data = (tmp_path / "big.ckpt").read_bytes()
    assert records(data[:-17]) == [
        ("before", [3], "Float32", 12),
        ("big", [5, 10], "Float32", 64),
        ("big", [5, 10], "Float32", 64),
        ("big", [5, 10], "Float32", 64),
        ("big", [5, 10], "Float32", 8),
        ("exact", [16], "Float32", 64),
        ("after", [4], "Int8", 4),
    ]
    monkeypatch.setattr(ckpt_format, "_CHUNK_BYTES", 512 * 1024 * 1024)  # the reader does not need the size
    back = jcb.load_checkpoint(tmp_path / "big.ckpt")
    assert list(back) == list(params) and all(same_bits(back[k], v) for k, v in params.items())


def _file_of(values) -> bytes:
    """A .ckpt file of hand-made records ``(tag, dims, tensor_type, content)`` through the library's message class."""
    out = b""
    for tag, dims, tensor_type, content in values:
        message = ckpt_format.checkpoint_message()()
        record = message.value.add()
        record.tag = tag
        record.tensor.dims.extend(dims)
        record.tensor.tensor_type = tensor_type
        record.tensor.tensor_content = content
        out += message.SerializeToString()
    return out


def test_chunks_that_disagree_or_fall_short_are_errors(tmp_path):
    path = tmp_path / "c.ckpt"
    path.write_bytes(_file_of([("w", [4], "Float32", b"\0" * 8), ("w", [4], "Float16", b"\0" * 8)]))
    with pytest.raises(ValueError, match=r"c\.ckpt.*chunks of entry 'w' disagree"):
        jcb.load_checkpoint(path)
    path.write_bytes(_file_of([("w", [4], "Float32", b"\0" * 8), ("v", [1], "Float32", b"\0" * 4)]))
    with pytest.raises(ValueError, match=r"c\.ckpt.*'w'.*8 bytes.*need 16.*truncated"):
        jcb.load_checkpoint(path)
    path.write_bytes(_file_of([("w", [1], "Float32", b"\0" * 4), ("v", [1], "Float32", b"\0" * 4)] * 2))
    with pytest.raises(ValueError, match="entry 'w' appears twice"):
        jcb.load_checkpoint(path)


def test_dims_zero_with_one_element_is_a_scalar_as_in_mindspore(tmp_path):
    (tmp_path / "d.ckpt").write_bytes(_file_of([("s", [0], "Int64", np.int64(9).tobytes())]))
    assert same_bits(jcb.load_checkpoint(tmp_path / "d.ckpt")["s"], np.int64(9))


# ---------------------------------------------------------------------------
# CRC (mindspore/train/serialization.py: crc_check=True)
# ---------------------------------------------------------------------------


def test_ckpt_crc_trailer_is_mindspores_and_is_verified(tmp_path):
    params = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float32)}
    jcb.save_checkpoint(params, tmp_path / "plain.ckpt")
    jcb.save_checkpoint(params, tmp_path / "crc.ckpt", crc_check=True)
    plain, crc = (tmp_path / "plain.ckpt").read_bytes(), (tmp_path / "crc.ckpt").read_bytes()
    # 'crc_num' + a 10-byte big-endian CRC-32 of the messages before it (spec 1.4)
    assert crc[: len(plain)] == plain and crc[len(plain) : len(plain) + 7] == b"crc_num" and len(crc) == len(plain) + 17
    assert int.from_bytes(crc[-10:], "big") == zlib.crc32(plain)
    back = jcb.load_checkpoint(tmp_path / "crc.ckpt")
    assert all(same_bits(back[k], v) for k, v in params.items())
    damaged = bytearray(crc)
    damaged[len(plain) - 2] ^= 0x01  # a bit of the last tensor's data: still parses, values differ
    (tmp_path / "damaged.ckpt").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"damaged\.ckpt.*CRC check failed"):
        jcb.load_checkpoint(tmp_path / "damaged.ckpt")


def test_safetensors_crc_metadata_is_mindspores_and_is_verified(tmp_path):
    params = {"w": np.arange(6, dtype=np.float32), "a": np.ones(2, np.int32)}
    path = tmp_path / "crc.safetensors"
    jcb.save_checkpoint(params, path, format="safetensors", crc_check=True)
    data = path.read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    expected = 0
    for name in sorted(params):  # MindSpore: crc32(name) then crc32(bytes) per name, in name order
        expected = zlib.crc32(params[name].tobytes(), zlib.crc32(name.encode(), expected))
    assert header["__metadata__"] == {"format": "ms", "crc_num": str(expected)}
    assert all(same_bits(jcb.load_checkpoint(path)[k], v) for k, v in params.items())
    damaged = bytearray(data)
    damaged[-1] ^= 0x40
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"crc\.safetensors.*CRC check failed"):
        jcb.load_checkpoint(path)


# ---------------------------------------------------------------------------
# Bad files: a clear ValueError naming the file, never a crash or a partial load
# ---------------------------------------------------------------------------


def _expect_unreadable(path, match: str = ""):
    with pytest.raises(ValueError, match="not a readable MindSpore checkpoint") as info:
        jcb.load_checkpoint(path)
    assert str(path) in str(info.value)
    if match:
        assert match in str(info.value), str(info.value)
    return str(info.value)


def test_empty_file(tmp_path):
    (tmp_path / "e.ckpt").write_bytes(b"")
    _expect_unreadable(tmp_path / "e.ckpt", "empty")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_as_an_encrypted_file_would_look(tmp_path, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if seed == 0:
        data = b"\x0a" + data[1:]  # the first byte of a real checkpoint: protobuf must reject the rest
    (tmp_path / "r.ckpt").write_bytes(data)
    message = _expect_unreadable(tmp_path / "r.ckpt")
    assert "encrypted" in message and "decrypt it with MindSpore first" in message


@pytest.mark.parametrize("magic", [0x7F3A5ED8, 0x7F3A5ED9])
def test_mindspore_encrypted_header_is_named(tmp_path, magic):
    data = magic.to_bytes(4, "little") + np.random.default_rng(1).bytes(1000)
    (tmp_path / "enc.ckpt").write_bytes(data)
    _expect_unreadable(tmp_path / "enc.ckpt", "it is encrypted (MindSpore's enc_key")


@needs_golden
def test_truncated_golden_ckpt(golden, tmp_path):
    _, _, ckpt, _ = golden
    boundaries, offset = set(), 0
    for tag, dims, tensor_type, size in records(ckpt):
        offset += len(_file_of([(tag, dims, tensor_type, b"\0" * size)]))
        boundaries.add(offset)
    assert offset == len(ckpt)
    path = tmp_path / "cut.ckpt"
    for cut in [1, 2, 5, 20, 100, 1000, 8200, 8213, 40000, len(ckpt) // 2, len(ckpt) - 50, len(ckpt) - 1]:
        assert cut not in boundaries
        path.write_bytes(ckpt[:cut])
        _expect_unreadable(path)
    # Cut exactly between records: a valid shorter checkpoint (no CRC to tell); the missing names are reported.
    first = min(boundaries)
    path.write_bytes(ckpt[:first])
    assert list(jcb.load_checkpoint(path)) == ["body.0.weight"]


@needs_golden
def test_truncated_golden_safetensors(golden, tmp_path):
    _, _, _, safetensors = golden
    path = tmp_path / "cut.safetensors"
    for cut in [1, 7, 8, 9, 100, 503, 504, 505, 2000, len(safetensors) // 2, len(safetensors) - 1]:
        path.write_bytes(safetensors[:cut])
        _expect_unreadable(path)


@needs_golden
def test_flipped_bytes_in_a_tensor_length(golden, tmp_path):
    _, _, ckpt, _ = golden
    # The first record: 0a <len varint> 0a <tag len> tag 12 <tensor len varint> 08 10 08 20 08 04 08 04 12 07 'Float32'
    # 1a <content len varint: 16*32*4*4*4 = 32768 bytes = 80 80 02> ...
    content_len_at = ckpt.index(b"Float32\x1a") + len(b"Float32\x1a")
    assert ckpt[content_len_at : content_len_at + 3] == b"\x80\x80\x02"
    path = tmp_path / "flip.ckpt"
    for position in (content_len_at, content_len_at + 1):
        for flip in (0x01, 0x02, 0x40, 0x7F, 0xFF):
            data = bytearray(ckpt)
            data[position] ^= flip
            path.write_bytes(bytes(data))
            _expect_unreadable(path)
    # The outer record's length and the tensor message's length too.
    for position in (1, ckpt.index(b"\x12", 3) + 1):
        data = bytearray(ckpt)
        data[position] ^= 0x01
        path.write_bytes(bytes(data))
        _expect_unreadable(path)


@needs_golden
def test_corrupt_safetensors_header(golden, tmp_path):
    _, _, _, safetensors = golden
    path = tmp_path / "bad.safetensors"
    data = bytearray(safetensors)
    data[8 + 1] = ord("}")  # '{}__metadata__"...': breaks the JSON
    path.write_bytes(bytes(data))
    _expect_unreadable(path, "damaged or truncated safetensors")
    data = bytearray(safetensors)
    at = safetensors.index(b"data_offsets")  # make an offset point past the end
    data[at + 15] = ord("9")
    path.write_bytes(bytes(data))
    _expect_unreadable(path)


def test_other_formats(tmp_path):
    np.savez(tmp_path / "a.npz", w=np.ones(3))
    np.save(tmp_path / "a.npy", np.ones(3))
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:  # PyTorch's torch.save layout: a zip of data.pkl ...
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
        z.writestr("archive/version", "3\n")
    (tmp_path / "legacy.pth").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    (tmp_path / "notes.ckpt").write_text("this is a text file\nnot a checkpoint\n")
    (tmp_path / "weights.json").write_text(json.dumps({"w": [1, 2, 3]}))
    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    cases = {
        "a.npz": "ZIP archive",
        "a.npy": "NumPy .npy",
        "model.pt": "a PyTorch file",
        "legacy.pth": "pickle",
        "notes.ckpt": "text file",
        "weights.json": "text file",
        "x.h5": "HDF5",
    }
    for name, what in cases.items():
        _expect_unreadable(tmp_path / name, what)


def test_unknown_tensor_type_map_tensor_and_stray_records(tmp_path):
    path = tmp_path / "u.ckpt"
    path.write_bytes(_file_of([("w", [2], "Float32", b"\0" * 8), ("r", [], "random_op", b"xyz")]))
    _expect_unreadable(path, "entry 'r' (record 2 of 2) has tensor_type 'random_op'")
    message = ckpt_format.checkpoint_message()()
    record = message.value.add()
    record.tag = "table"
    record.maptensor.tensor.add(dims=[2], tensor_type="int64", tensor_content=b"\0" * 16)
    path.write_bytes(message.SerializeToString())
    _expect_unreadable(path, "MapParameter")
    path.write_bytes(_file_of([("w", [2], "Float32", b"\0" * 8)]) + b"\x10\x05")  # field 2, varint: not a Checkpoint's
    _expect_unreadable(path, "field numbers [2]")
    path.write_bytes(_file_of([("w", [2], "Float32", b"\0" * 8)]) + b"\x0a\x03\x0a\x01w")  # a Value without a tensor
    _expect_unreadable(path, "holds no tensor")
    path.write_bytes(_file_of([("w", [-2], "Float32", b"")]))
    _expect_unreadable(path, "negative dims")


def test_missing_file_and_directory():
    with pytest.raises(FileNotFoundError):
        jcb.load_checkpoint("/nonexistent/model.ckpt")


# ---------------------------------------------------------------------------
# save_checkpoint's arguments and atomic write
# ---------------------------------------------------------------------------


def test_save_checkpoint_validates_its_arguments(tmp_path):
    params = {"w": np.ones(2, np.float32)}
    with pytest.raises(ValueError, match=r"format must be 'ckpt' or 'safetensors', got 'pt'"):
        jcb.save_checkpoint(params, tmp_path / "a.pt", format="pt")
    with pytest.raises(TypeError, match="nnx.Module or a dict"):
        jcb.save_checkpoint([np.ones(2)], tmp_path / "a.ckpt")
    with pytest.raises(TypeError, match="names must be str"):
        jcb.save_checkpoint({1: np.ones(2)}, tmp_path / "a.ckpt")
    with pytest.raises(TypeError, match="entry 'w' must be an array"):
        jcb.save_checkpoint({"w": [1.0, 2.0]}, tmp_path / "a.ckpt")
    with pytest.raises(TypeError, match="entry 'c' has dtype complex64"):
        jcb.save_checkpoint({"c": np.ones(2, np.complex64)}, tmp_path / "a.ckpt")
    with pytest.raises(TypeError, match="entry 's' is a str, which a safetensors file cannot hold"):
        jcb.save_checkpoint({"s": "x"}, tmp_path / "a.safetensors", format="safetensors")
    with pytest.raises(TypeError, match="crc_check must be a bool"):
        jcb.save_checkpoint(params, tmp_path / "a.ckpt", crc_check=1)
    with pytest.raises(TypeError, match="path must be a str"):
        jcb.save_checkpoint(params, 3)
    with pytest.raises(IsADirectoryError):
        jcb.save_checkpoint(params, tmp_path)
    assert os.listdir(tmp_path) == []


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.ckpt"
    jcb.save_checkpoint({"w": np.ones(2, np.float32)}, path)
    before = path.read_bytes()

    def broken(f, entries, message, crc_check):
        f.write(b"\x0a\x05partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_format, "write_ckpt", broken)
    with pytest.raises(OSError, match="disk full"):
        jcb.save_checkpoint({"w": np.zeros(2, np.float32)}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.ckpt"]


# ---------------------------------------------------------------------------
# Names and order of a module's variables
# ---------------------------------------------------------------------------


class Layer(nnx.Module):
    """weight then bias, as MindSpore's layers assign them."""

    def __init__(self, n_in, n_out, has_bias, seed=0):
        key = jax.random.key(seed)
        self.weight = nnx.Param(jax.random.normal(key, (n_out, n_in)))
        self.bias = nnx.Param(jnp.zeros(n_out)) if has_bias else None

    def __call__(self, x):
        y = x @ self.weight[...].T
        return y if self.bias is None else y + self.bias[...]


class Net(nnx.Module):
    def __init__(self):
        self.body = nnx.Sequential(Layer(4, 3, False), jax.nn.relu, Layer(3, 2, True, seed=1))
        self.head = Layer(2, 1, True, seed=2)


def test_names_follow_mindspore_sequentialcell_and_order():
    names = list(jcb.parameters_dict(Net()))
    assert names == ["body.0.weight", "body.2.weight", "body.2.bias", "head.weight", "head.bias"]


def test_own_variables_come_before_children_and_shared_ones_appear_once():
    class Block(nnx.Module):
        def __init__(self):
            self.inner = Layer(2, 2, True)
            self.scale = nnx.Param(jnp.ones(()))  # assigned after the child, listed before it (MindSpore)
            self.stats = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
            self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(1))  # its RNG state is not a parameter
            self.tied = self.inner  # the same module under a second name
            self.many = nnx.List([Layer(2, 2, False), Layer(2, 2, False)])
            self.table = nnx.Dict({"b": nnx.Param(jnp.zeros(1)), "a": nnx.Param(jnp.ones(1))})

    params = jcb.parameters_dict(Block())
    assert list(params) == [
        "scale",
        "inner.weight",
        "inner.bias",
        "stats.mean",
        "stats.var",
        "stats.scale",
        "stats.bias",
        "many.0.weight",
        "many.1.weight",
        "table.b",
        "table.a",
    ]
    assert all(isinstance(v, np.ndarray) for v in params.values())


def test_save_checkpoint_of_a_module_loads_into_a_fresh_one(tmp_path):
    net = Net()
    for fmt in ("ckpt", "safetensors"):
        jcb.save_checkpoint(net, tmp_path / f"net.{fmt}", format=fmt)
        params = jcb.load_checkpoint(tmp_path / f"net.{fmt}")
        if fmt == "ckpt":
            assert list(params) == list(jcb.parameters_dict(net))
        fresh = Net()
        for layer in (fresh.body.layers[0], fresh.body.layers[2], fresh.head):
            layer.weight[...] = jnp.zeros_like(layer.weight[...])
        assert jcb.load_param_into_net(fresh, params) == ([], [])
        for name, value in jcb.parameters_dict(net).items():
            assert same_bits(jcb.parameters_dict(fresh)[name], value)


# ---------------------------------------------------------------------------
# load_param_into_net: MindSpore's rules
# ---------------------------------------------------------------------------


def test_load_param_into_net_return_values_are_the_specs_example():
    class Small(nnx.Module):
        def __init__(self):
            self.body = nnx.Sequential(Layer(3, 2, True))
            self.head = Layer(2, 1, False)

    net = Small()
    before = jcb.parameters_dict(net)
    with pytest.warns(UserWarning, match=r"2 of the module's 3 variables.*'body.0.weight', 'head.weight'.*\['foo'\]"):
        result = jcb.load_param_into_net(net, {"body.0.bias": np.full(2, 7, np.float32), "foo": np.zeros(1)})
    assert result == (["body.0.weight", "head.weight"], ["foo"])
    after = jcb.parameters_dict(net)
    assert same_bits(after["body.0.bias"], np.full(2, 7, np.float32))
    assert same_bits(after["body.0.weight"], before["body.0.weight"])


def test_shape_mismatch_names_parameter_shapes_and_file_and_loads_nothing(tmp_path):
    net = Net()
    params = jcb.parameters_dict(net)
    good = {k: v + 1 for k, v in params.items()}
    bad = dict(good, **{"head.weight": np.zeros((1, 3), np.float32)})
    jcb.save_checkpoint(bad, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError) as info:
        jcb.load_param_into_net(net, jcb.load_checkpoint(tmp_path / "bad.ckpt"))
    message = str(info.value)
    for part in ("'head.weight'", "(1, 2)", "(1, 3)", "float32", str(tmp_path / "bad.ckpt")):
        assert part in message, message
    assert all(same_bits(jcb.parameters_dict(net)[k], v) for k, v in params.items()), "a partial load happened"
    with pytest.raises(ValueError, match=r"'head.weight'.*\(1, 2\).*params has shape \(1, 3\)"):
        jcb.load_param_into_net(net, bad)  # a plain dict: no file to name


def test_dtype_rules_of_strict_load():
    class One(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros(3, jnp.float32))
            self.n = nnx.Variable(jnp.zeros(2, jnp.int32))
            self.m = nnx.Variable(jnp.zeros(2, jnp.uint8))

    net = One()
    # strict_load=False converts float <-> float and int <-> int, as MindSpore's _type_convert
    result = jcb.load_param_into_net(
        net, {"w": np.array([1, 2, 3], np.float16), "n": np.array([4, 5], np.int64), "m": np.ones(2, np.uint8)}
    )
    assert result == ([], [])
    assert same_bits(net.w[...], np.array([1, 2, 3], np.float32)) and same_bits(net.n[...], np.array([4, 5], np.int32))
    for values in ({"w": np.ones(3, np.int32)}, {"n": np.ones(2, np.float32)}, {"m": np.ones(2, np.int8)}):
        name = next(iter(values))
        with pytest.raises(ValueError, match=f"dtype mismatch for parameter '{name}'"):
            jcb.load_param_into_net(net, values)
    with pytest.raises(ValueError, match=r"dtype mismatch for parameter 'w'.*float32.*float16.*strict_load=True"):
        jcb.load_param_into_net(net, {"w": np.ones(3, np.float16)}, strict_load=True)
    assert same_bits(net.w[...], np.array([1, 2, 3], np.float32))
    bf16 = np.array([0.5, 1, 2], ml_dtypes.bfloat16)
    with pytest.warns(UserWarning, match=r"2 of the module's 3 variables were not loaded.*\['n', 'm'\]"):
        jcb.load_param_into_net(net, {"w": bf16})
    assert same_bits(net.w[...], np.array([0.5, 1, 2], np.float32))


def test_prefix_rule_of_non_strict_load(caplog):
    net = Net()
    wrapped = {f"network.{k}": v + 1 for k, v in jcb.parameters_dict(net).items()}  # e.g. a TrainOneStepCell's names
    expected = {k[len("network.") :]: v for k, v in wrapped.items()}
    with pytest.warns(UserWarning, match="5 of the module's 5 variables were not loaded"):
        assert jcb.load_param_into_net(Net(), wrapped, strict_load=True) == (list(expected), list(wrapped))
    with pytest.warns(UserWarning, match=r"all 5 variables of the module were loaded; 1 of the 6 entries.*\['extra'\]"):
        param_not_load, ckpt_not_load = jcb.load_param_into_net(net, dict(wrapped, extra=np.ones(1)))
    assert param_not_load == [] and ckpt_not_load == ["extra"]  # (MindSpore would still list the network.* names)
    with caplog.at_level(logging.INFO, logger="jax_conv_bpi"):
        assert jcb.load_param_into_net(Net(), wrapped) == ([], [])
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "load_param_into_net: loaded 5 variables through the prefix(es) ['network.']"
    ]
    assert all(same_bits(jcb.parameters_dict(net)[k], v) for k, v in expected.items())


def test_trailing_ones_are_reshaped_as_mindspore_does():
    net = Net()
    weight = np.arange(2, dtype=np.float32).reshape(1, 2, 1, 1)
    with pytest.warns(UserWarning, match="4 of the module's 5 variables were not loaded"):
        assert jcb.load_param_into_net(net, {"head.weight": weight})[1] == []
    assert same_bits(net.head.weight[...], weight.reshape(1, 2))
    with pytest.raises(ValueError, match="shape mismatch"):
        jcb.load_param_into_net(net, {"head.weight": weight.reshape(2, 1, 1)})


def test_load_param_into_net_validates_its_arguments():
    net = Net()
    with pytest.raises(TypeError, match="flax.nnx.Module"):
        jcb.load_param_into_net({"a": 1}, {})
    with pytest.raises(TypeError, match="params must be a dict"):
        jcb.load_param_into_net(net, [("head.weight", np.ones((1, 2)))])
    with pytest.raises(TypeError, match="strict_load must be a bool"):
        jcb.load_param_into_net(net, {}, strict_load=1)
    with pytest.raises(TypeError, match="names in params must be str"):
        jcb.load_param_into_net(net, {0: np.ones(1)})
    with pytest.raises(TypeError, match=r"params\['head.weight'\] must be an array or a str"):
        jcb.load_param_into_net(net, {"head.weight": [[1.0, 2.0]]})
    with pytest.raises(ValueError, match="cannot take the str entry"):
        jcb.load_param_into_net(net, {"head.weight": "text"})
    with pytest.raises(TypeError, match="flax.nnx.Module"):
        jcb.parameters_dict(object())


def test_loading_keeps_sharding_and_fills_an_abstract_module():
    net = Net()
    params = {k: v * 2 for k, v in jcb.parameters_dict(net).items()}
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    jcb.load_param_into_net(net, params)
    assert net.head.weight[...].sharding == sharding
    abstract = nnx.eval_shape(Net)
    assert jcb.load_param_into_net(abstract, params) == ([], [])
    assert isinstance(abstract.head.weight[...], jax.Array)
    assert same_bits(abstract.head.weight[...], params["head.weight"])


# ---------------------------------------------------------------------------
# A mismatch is never silent: the warning, the log record, strict=True
# ---------------------------------------------------------------------------


class Port(nnx.Module):
    """A network whose checkpoint came from a PyTorch nn.Sequential (names 0.*, 2.*)."""

    def __init__(self):
        self.up = Layer(2, 3, True)
        self.out = Layer(3, 1, True, seed=1)


def _sequential_names() -> dict[str, np.ndarray]:
    """Port's parameters under nn.Sequential's names, each a distinct constant."""
    return {
        "0.weight": np.full((3, 2), 1, np.float32),
        "0.bias": np.full(3, 2, np.float32),
        "2.weight": np.full((1, 3), 3, np.float32),
        "2.bias": np.full(1, 4, np.float32),
    }


def test_a_checkpoint_whose_names_match_nothing_warns_and_logs_both_lists(tmp_path, caplog):
    path = tmp_path / "torch_names.safetensors"
    jcb.save_checkpoint(_sequential_names(), path, format="safetensors")
    net = Port()
    before = jcb.parameters_dict(net)
    with caplog.at_level(logging.WARNING, logger="jax_conv_bpi"), pytest.warns(UserWarning) as caught:
        result = jcb.load_param_into_net(net, jcb.load_checkpoint(path), strict_load=True)
    assert result == (["up.weight", "up.bias", "out.weight", "out.bias"], ["0.bias", "0.weight", "2.bias", "2.weight"])
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("load_param_into_net: 4 of the module's 4 variables were not loaded"), message
    for part in ("'up.weight', 'up.bias', 'out.weight', 'out.bias'", "4 of the 4 entries", str(path)):
        assert part in message, message
    for part in ("'0.bias', '0.weight', '2.bias', '2.weight'", "strip_prefix=", "name_map=", "strict=True"):
        assert part in message, message
    assert caught[0].filename == __file__  # the warning points at the caller's line
    records = [r for r in caplog.records if r.name == "jax_conv_bpi"]
    assert [(r.levelno, r.getMessage()) for r in records] == [(logging.WARNING, message)]
    assert all(same_bits(jcb.parameters_dict(net)[k], v) for k, v in before.items())


def test_everything_matched_is_silent(caplog):
    net = Net()
    params = jcb.parameters_dict(Net())
    with caplog.at_level(logging.DEBUG, logger="jax_conv_bpi"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jcb.load_param_into_net(net, params, strict=True) == ([], [])
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_long_lists_are_cut_in_the_message_but_complete_in_the_return_value():
    extra = {f"optimizer.moment.{i}": np.zeros(1, np.float32) for i in range(30)}
    with pytest.warns(UserWarning) as caught:
        _, unused = jcb.load_param_into_net(Net(), dict(jcb.parameters_dict(Net()), **extra))
    assert unused == list(extra)
    message = str(caught[0].message)
    assert "30 of the 35 entries of params were not used" in message
    assert "'optimizer.moment.7', ... and 22 more]" in message and "'optimizer.moment.8'" not in message


def test_strict_true_names_missing_and_unexpected_and_loads_nothing():
    net = Net()
    before = jcb.parameters_dict(net)
    params = {"head.weight": np.full((1, 2), 5, np.float32), "0.bias": np.zeros(3, np.float32)}
    for strict_load in (False, True):
        with pytest.raises(ValueError) as info:
            jcb.load_param_into_net(net, params, strict_load, strict=True)
        message = str(info.value)
        assert message.startswith("load_param_into_net(strict=True): the module and params do not match"), message
        expected_missing = "missing (variables with no entry, 4): ['body.0.weight', 'body.2.weight', 'body.2.bias', "
        assert expected_missing + "'head.bias']" in message, message
        assert "unexpected (entries matching no variable, 1): ['0.bias']" in message, message
        assert "name_map=" in message
    assert all(same_bits(jcb.parameters_dict(net)[k], v) for k, v in before.items()), "a partial load happened"
    with pytest.raises(TypeError, match="strict must be a bool, got int"):
        jcb.load_param_into_net(net, params, strict=1)


# ---------------------------------------------------------------------------
# Loading a checkpoint with other names: name_map, strip_prefix, add_prefix
# ---------------------------------------------------------------------------


def _loaded(net) -> dict[str, np.ndarray]:
    return jcb.parameters_dict(net)


def test_name_map_dict_loads_other_names():
    net = Port()
    rename = {"0.weight": "up.weight", "0.bias": "up.bias", "2.weight": "out.weight", "2.bias": "out.bias"}
    assert jcb.load_param_into_net(net, _sequential_names(), strict=True, name_map=rename) == ([], [])
    assert same_bits(_loaded(net)["up.weight"], np.full((3, 2), 1, np.float32))
    assert same_bits(_loaded(net)["out.bias"], np.full(1, 4, np.float32))


def test_name_map_function_and_none_drop_entries():
    net = Port()
    params = dict(_sequential_names(), **{"epoch_num": np.array(3), "optimizer.step": np.array(1)})

    def rename(name):
        if not name[0].isdigit():
            return None  # dropped: not loaded, not reported
        index, rest = name.split(".", 1)
        return {"0": "up", "2": "out"}[index] + "." + rest

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jcb.load_param_into_net(net, params, name_map=rename) == ([], [])
    assert same_bits(_loaded(net)["out.weight"], np.full((1, 3), 3, np.float32))


def test_prefix_options_then_name_map_in_that_order():
    net = Net()
    saved = {  # a checkpoint of a wrapper whose body was saved under "network." and whose head is called fc
        "network.0.weight": np.full((3, 4), 1, np.float32),
        "network.2.weight": np.full((2, 3), 2, np.float32),
        "network.2.bias": np.full(2, 3, np.float32),
        "network.fc.weight": np.full((1, 2), 4, np.float32),
        "network.fc.bias": np.full(1, 5, np.float32),
    }
    # strip "network.", then add "body.", then name_map (keys spelled after the prefixes, values final).
    rename = {"body.fc.weight": "head.weight", "body.fc.bias": "head.bias"}
    result = jcb.load_param_into_net(
        net, saved, strict_load=True, strict=True, strip_prefix="network.", add_prefix="body.", name_map=rename
    )
    assert result == ([], [])
    expected = {"body.0.weight": 1, "body.2.weight": 2, "body.2.bias": 3, "head.weight": 4, "head.bias": 5}
    assert {k: float(v.flat[0]) for k, v in _loaded(net).items()} == expected
    # ckpt_not_load and the warning keep the names of params.
    with pytest.warns(UserWarning) as caught:
        _, unused = jcb.load_param_into_net(Net(), saved, strict_load=True, strip_prefix="network.")
    assert unused == list(saved) and "'network.0.weight'" in str(caught[0].message)


def test_a_renamed_entry_of_the_wrong_shape_is_named_as_in_the_file(tmp_path):
    path = tmp_path / "wrapped.ckpt"
    jcb.save_checkpoint({"net.head.weight": np.zeros((1, 3), np.float32)}, path)
    with pytest.raises(ValueError) as info:
        jcb.load_param_into_net(Net(), jcb.load_checkpoint(path), strip_prefix="net.")
    message = str(info.value)
    assert "'net.head.weight' (renamed 'head.weight') in the checkpoint" in message and str(path) in message


def test_load_checkpoint_takes_the_same_options(tmp_path):
    path = tmp_path / "w.ckpt"
    jcb.save_checkpoint({"network.a": np.ones(1, np.float32), "network.b": np.ones(2, np.float32), "step": 3}, path)
    params = jcb.load_checkpoint(path, strip_prefix="network.", add_prefix="m.", name_map={"m.step": None})
    assert list(params) == ["m.a", "m.b"] and same_bits(params["m.b"], np.ones(2, np.float32))
    params = jcb.load_checkpoint(path, name_map=lambda name: name.upper())
    assert list(params) == ["NETWORK.A", "NETWORK.B", "STEP"]
    with pytest.warns(UserWarning, match=r"load_checkpoint: strip_prefix='model\.' starts none of its 3 names"):
        jcb.load_checkpoint(path, strip_prefix="model.")


def test_renaming_mistakes_are_errors_or_warnings():
    params = {"a.w": np.ones(1), "b.w": np.ones(1)}
    net = Net()
    with pytest.raises(ValueError, match=r"'a\.w' and 'b\.w' both become 'w'"):
        jcb.load_param_into_net(net, params, name_map=lambda name: "w")
    with pytest.raises(ValueError, match=r"'a\.w' becomes the empty name"):
        jcb.load_param_into_net(net, {"a.w": np.ones(1)}, strip_prefix="a.w")
    with pytest.raises(TypeError, match=r"name_map\('a\.w'\) returned int"):
        jcb.load_param_into_net(net, params, name_map=lambda name: 3)
    with pytest.raises(TypeError, match=r"name_map\['a\.w'\] must be a str .* or None"):
        jcb.load_param_into_net(net, params, name_map={"a.w": 1})
    with pytest.raises(TypeError, match="name_map must be a dict .* or a function"):
        jcb.load_param_into_net(net, params, name_map=["a.w"])
    with pytest.raises(TypeError, match="strip_prefix must be a str or None, got bytes"):
        jcb.load_param_into_net(net, params, strip_prefix=b"a.")
    with pytest.raises(TypeError, match="add_prefix must be a str or None, got int"):
        jcb.load_checkpoint(__file__, add_prefix=1)
    with pytest.warns(UserWarning) as caught:
        jcb.load_param_into_net(net, params, name_map={"c.w": "head.weight", "a.w": None, "b.w": None})
    assert [str(w.message).split(" (its names")[0] for w in caught] == [
        "load_param_into_net: 1 name_map key(s) are no name of the checkpoint (after strip_prefix/add_prefix): ['c.w']",
        "load_param_into_net: 5 of the module's 5 variables were not loaded (they keep their values): "
        "['body.0.weight', 'body.2.weight', 'body.2.bias', 'head.weight', 'head.bias']. If the names differ by a "
        "prefix or a renaming, pass strip_prefix=, add_prefix= or name_map= (a dict or a function; None drops an "
        "entry); strict=True makes a mismatch an error. The two lists are the return value (param_not_load, "
        "ckpt_not_load).",
    ]


# ---------------------------------------------------------------------------
# Names and sizes a file may declare but no checkpoint holds
# ---------------------------------------------------------------------------


def test_a_ckpt_name_that_is_not_utf8_is_refused_naming_the_record(tmp_path):
    path = tmp_path / "model.ckpt"
    jcb.save_checkpoint({"body.0.weight": np.ones((2, 3), np.float32)}, path)
    data = bytearray(path.read_bytes())
    assert data[4:8] == b"body"
    data[6] ^= 0x80  # the flip: "bo\xe4y.0.weight"
    path.write_bytes(bytes(data))
    _expect_unreadable(path, "the name of record 1 of 1 is not valid UTF-8 (b'bo\\xe4y.0.weight'")
    data = _file_of([("w", [1], "Float32", b"\0" * 4), ("zz", [1], "Float32", b"\0" * 4)])
    assert data.count(b"zz") == 1
    path.write_bytes(data.replace(b"zz", b"\xc3\x28"))
    _expect_unreadable(path, "the name of record 2 of 2 is not valid UTF-8")


def test_a_ckpt_record_without_a_name_or_with_an_empty_one_is_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    without_tag = ckpt_format.checkpoint_message()()
    tensor = without_tag.value.add().tensor  # no tag: proto2's required field left out
    tensor.dims.append(2)
    tensor.tensor_type = "Float32"
    tensor.tensor_content = b"\0" * 8
    path.write_bytes(_file_of([("w", [1], "Float32", b"\0" * 4)]) + without_tag.SerializePartialToString())
    _expect_unreadable(path, "record 2 of 2 has no name (its required tag field is missing)")
    path.write_bytes(_file_of([("", [1], "Float32", b"\0" * 4)]))
    _expect_unreadable(path, "record 1 of 1 has an empty name")


@pytest.mark.parametrize(
    ("dims", "why"),
    [
        ([0, 2**62], "declares dims [0, 4611686018427387904]"),
        ([2**40, 2**40], "more than an array can address"),
        ([1] * 65, "has 65 dims; an array has at most 64"),
        ([2**63 - 1, 0], "more than an array can address"),
    ],
)
def test_ckpt_dims_no_array_can_have_name_the_file_and_tensor(tmp_path, dims, why):
    path = tmp_path / "huge.ckpt"
    path.write_bytes(_file_of([("w", [1], "Float32", b"\0" * 4), ("big", dims, "Float32", b"")]))
    message = _expect_unreadable(path, why)
    assert "entry 'big' (record 2 of 2)" in message, message


def test_a_dim_of_2_to_the_63_is_a_negative_int64(tmp_path):
    path = tmp_path / "neg.ckpt"
    varint_2_63 = bytes([0x80] * 9 + [0x01])  # 2**63 on the wire, -2**63 as the int64 field reads it
    tensor = b"\x08\x00\x08" + varint_2_63 + b"\x12\x07Float32\x1a\x00"
    value = b"\x0a\x01w\x12" + bytes([len(tensor)]) + tensor
    path.write_bytes(b"\x0a" + bytes([len(value)]) + value)
    _expect_unreadable(path, "entry 'w' (record 1 of 1) has negative dims [0, -9223372036854775808]")


def _safetensors_of(header: dict, body: bytes) -> bytes:
    """A safetensors file written by hand: 8-byte little-endian header length, JSON header, data."""
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


def test_safetensors_names_and_sizes_are_checked_naming_the_entry(tmp_path):
    path = tmp_path / "h.safetensors"
    good = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    path.write_bytes(_safetensors_of({"w": good}, np.arange(2, dtype="<f4").tobytes()))
    assert same_bits(jcb.load_checkpoint(path)["w"], np.arange(2, dtype=np.float32))  # the hand-made file is valid
    cases = [
        ({"": good}, "header entry 1 of 1 has an empty name"),
        ({"\ud800": good}, "the name of header entry 1 of 1 is not valid UTF-8"),
        ({"w": dict(good, shape=[0, 2**62])}, "entry 'w' declares dims [0, 4611686018427387904]"),
        ({"w": dict(good, shape=[1] * 70, data_offsets=[0, 4])}, "entry 'w' has 70 dims"),
        ({"w": dict(good, shape=[-1])}, "entry 'w' has negative dims [-1]"),
        ({"w": dict(good, shape=[3])}, "entry 'w' (F32, shape [3]) has 8 bytes of data where its shape needs 12"),
        ({"w": dict(good, data_offsets=[0, 80])}, "entry 'w' has data_offsets [0, 80], not [start, end]"),
        ({"w": dict(good, data_offsets=[8, 0])}, "entry 'w' has data_offsets [8, 0]"),
        ({"w": dict(good, shape="2")}, "entry 'w' has shape '2', not a list of ints"),
        ({"w": dict(good, dtype="F8_E4M3")}, "entry 'w' has safetensors dtype 'F8_E4M3'"),
        ({"w": 5}, "entry 'w' of the header is a JSON int, not an object"),
        ({"__metadata__": {"format": 1}, "w": good}, "__metadata__ is not an object of strings"),
    ]
    for header, why in cases:
        path.write_bytes(_safetensors_of(header, np.arange(2, dtype="<f4").tobytes()))
        _expect_unreadable(path, why)


def test_a_pytorch_file_is_named_with_the_way_to_convert_it(tmp_path):
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as z:  # torch.save's layout: <folder>/data.pkl, data/0, ...
        z.writestr("model/data.pkl", pickle.dumps({"w": 1}))
        z.writestr("model/data/0", b"\0" * 16)
    message = _expect_unreadable(path, "a PyTorch file (torch.save's ZIP archive)")
    for part in ("torch.load(path, map_location='cpu')", ".numpy()", "load_param_into_net", "name_map="):
        assert part in message, message
    assert "docs/porting.md, 'Layers and checkpoints'" in message
    np.savez(tmp_path / "a.npz", w=np.ones(3))
    assert "dict(numpy.load(path))" in _expect_unreadable(tmp_path / "a.npz", "ZIP archive")


# ---------------------------------------------------------------------------
# The optional extra
# ---------------------------------------------------------------------------


def test_importing_the_package_does_not_import_the_nn_extra():
    code = (
        "import sys, jax_conv_bpi\n"
        "bad = [m for m in ('flax', 'google.protobuf', 'safetensors', 'optax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.parametrize("missing", ["google.protobuf", "safetensors"])
def test_a_missing_extra_says_how_to_install_it(tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    ckpt_format.checkpoint_message.cache_clear()
    try:
        fmt = "ckpt" if missing == "google.protobuf" else "safetensors"
        with pytest.raises(ImportError, match=r"pip install 'jax_conv_bpi\[nn\]'"):
            jcb.save_checkpoint({"w": np.ones(1, np.float32)}, tmp_path / f"a.{fmt}", format=fmt)
    finally:
        monkeypatch.undo()
        ckpt_format.checkpoint_message.cache_clear()
