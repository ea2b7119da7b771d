"""Checkpoint files: recognising a file's format by its content, and writing a file atomically.

A file is recognised as safetensors (an 8-byte little-endian header length,
then a JSON header) or else as ``.ckpt``; a few other formats, and files
encrypted by MindSpore's ``enc_key``, are named in the error.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from jax_conv_bpi._src.mindspore.checkpoint import ckpt_format, errors, safetensors_format

__all__ = ["decode", "write_atomically"]

# The first 4 bytes (a little-endian int32) of a file encrypted by MindSpore's ``enc_key`` (its
# utils/crypto.h: GCM_MAGIC_NUM, CBC_MAGIC_NUM).
_CIPHER_MAGIC = {0x7F3A5ED8: "AES-GCM", 0x7F3A5ED9: "AES-CBC / SM4-CBC"}

_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors format's own limit on the JSON header


def decode(data: bytes, source: str) -> dict[str, np.ndarray | str]:
    """The entries of the checkpoint file ``source`` (its bytes ``data``), either format, or a ValueError."""
    if not data:
        raise errors.not_a_checkpoint(source, "the file is empty")
    if len(data) >= 4 and struct.unpack("<I", data[:4])[0] in _CIPHER_MAGIC:
        mode = _CIPHER_MAGIC[struct.unpack("<I", data[:4])[0]]
        raise errors.not_a_checkpoint(
            source,
            f"it is encrypted (MindSpore's enc_key, {mode}); decrypt it with MindSpore first "
            "(mindspore.load_checkpoint(path, dec_key=...), then mindspore.save_checkpoint without enc_key)",
        )
    if len(data) >= 9 and data[8:9] == b"{" and struct.unpack("<Q", data[:8])[0] <= _SAFETENSORS_MAX_HEADER:
        return safetensors_format.decode_safetensors(data, source)
    other = _other_format(data)
    if other:
        raise errors.not_a_checkpoint(source, f"it looks like {other}")
    return ckpt_format.decode_ckpt(data, source)


# What to do with a PyTorch file: convert its state dict to NumPy, then load that dict by name.
_TORCH_RECIPE = (
    "convert it with PyTorch: `state = torch.load(path, map_location='cpu')` (a checkpoint that wraps the "
    "weights: its 'state_dict' or 'model' entry), `params = {name: t.float().numpy() if t.dtype == torch.bfloat16 "
    "else t.numpy() for name, t in state.items()}`, then `jax_conv_bpi.load_param_into_net(model, params, "
    "name_map=...)` to match PyTorch's names to the module's (or save params with jax_conv_bpi.save_checkpoint "
    "first); see docs/porting.md, 'Layers and checkpoints'"
)
_NPZ_RECIPE = "load it with `params = dict(numpy.load(path))`, then `jax_conv_bpi.load_param_into_net(model, params)`"


def _other_format(data: bytes) -> str:
    """A few common formats, named so that the error says what the file is and how to load it."""
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        # torch.save's archive holds <folder>/data.pkl; the central directory, at the end, lists every member.
        if b"data.pkl" in data[:4096] or b"data.pkl" in data[-65536:]:
            return f"a PyTorch file (torch.save's ZIP archive), not a MindSpore checkpoint; {_TORCH_RECIPE}"
        return (
            "a ZIP archive (a NumPy .npz file, a PyTorch .pt/.pth file, ...), not a MindSpore checkpoint; "
            f"for an .npz file {_NPZ_RECIPE}; for a PyTorch file {_TORCH_RECIPE}"
        )
    if data.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file (one array), not a MindSpore checkpoint; pass `{name: numpy.load(path)}` instead"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return (
            "a Python pickle (e.g. a legacy PyTorch file), not a MindSpore checkpoint (and unpickling runs code: "
            f"open only a trusted file); for a PyTorch file {_TORCH_RECIPE}"
        )
    if data.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (e.g. Keras .h5), not a MindSpore checkpoint"
    if data.startswith(b"\x1f\x8b"):
        return "a gzip file, not a MindSpore checkpoint"
    head = data[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if text and all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return "a text file, not a MindSpore checkpoint"
    return ""


def write_atomically(target: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write to a new temporary file beside ``target``, then rename it over ``target``."""
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as f:
            write(f)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
