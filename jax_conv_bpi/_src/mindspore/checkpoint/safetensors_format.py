"""The ``.safetensors`` format as MindSpore writes it: reading and writing with the ``safetensors`` package.

MindSpore writes the tensors in name order with metadata ``{"format": "ms"}``
and, for ``crc_check=True``, a ``crc_num`` metadata entry: the CRC-32 of each
name and its bytes, in name order.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable

import numpy as np

from jax_conv_bpi._src.mindspore.checkpoint import dtypes, errors, optional

__all__ = ["decode_safetensors", "safetensors_bytes"]


def decode_safetensors(data: bytes, source: str) -> dict[str, np.ndarray | str]:
    """The tensors of the safetensors file ``source`` (its bytes ``data``), or a ValueError saying what is wrong."""
    safetensors = optional.require("safetensors", "safetensors")
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise errors.not_a_checkpoint(
            source,
            f"it is a truncated safetensors file (a {header_len}-byte header announced, {len(data) - 8} bytes follow)",
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
        views = safetensors.deserialize(data)
    except Exception as e:  # safetensors' SafetensorError, a JSON error, ...
        raise errors.not_a_checkpoint(
            source, f"it is a damaged or truncated safetensors file ({type(e).__name__}: {e})"
        ) from e
    metadata = header.get("__metadata__") or {}
    result: dict[str, np.ndarray | str] = {}
    crc = 0
    for name, view in sorted(views, key=lambda item: item[0]):  # MindSpore reads sorted(f.keys())
        if name in metadata:  # MindSpore's marker of a dtype safetensors has not, e.g. "Int4" (qint4x2)
            raise errors.not_a_checkpoint(
                source, f"entry {name!r} has MindSpore dtype {metadata[name]!r}, not supported"
            )
        if view["dtype"] not in dtypes.SAFETENSORS_DTYPES:
            raise errors.not_a_checkpoint(
                source,
                f"entry {name!r} has safetensors dtype {view['dtype']!r}; the supported ones are "
                f"{', '.join(sorted(dtypes.SAFETENSORS_DTYPES))}",
            )
        array = np.frombuffer(bytes(view["data"]), dtypes.np_dtype(dtypes.SAFETENSORS_DTYPES[view["dtype"]]))
        array = array.reshape(view["shape"]).copy()
        result[name] = array
        crc = zlib.crc32(array.tobytes(), zlib.crc32(name.encode("utf-8"), crc))
    if "crc_num" in metadata and str(crc) != str(metadata["crc_num"]):
        raise errors.not_a_checkpoint(
            source, f"its CRC check failed (stored {metadata['crc_num']}, computed {crc}): the file is damaged"
        )
    if not result:
        raise errors.not_a_checkpoint(source, "the safetensors file holds no tensors")
    return result


def safetensors_bytes(entries: Iterable[tuple[str, np.ndarray | str]], crc_check: bool) -> bytes:
    """The safetensors file of ``entries`` as MindSpore writes it (a ``str`` entry is a TypeError)."""
    numpy_io = optional.require("safetensors.numpy", "safetensors")
    tensors: dict[str, np.ndarray] = {}
    for name, value in entries:
        if isinstance(value, str):
            raise TypeError(f"save_checkpoint: entry {name!r} is a str, which a safetensors file cannot hold")
        tensors[name] = value
    if not tensors:
        return numpy_io.save({})
    metadata = {"format": "ms"}
    if crc_check:
        crc = 0
        for name in sorted(tensors):  # MindSpore: crc32 of each name and its bytes, in name order
            crc = zlib.crc32(tensors[name].tobytes(), zlib.crc32(name.encode("utf-8"), crc))
        metadata["crc_num"] = str(crc)
    return numpy_io.save({name: tensors[name] for name in sorted(tensors)}, metadata=metadata)
