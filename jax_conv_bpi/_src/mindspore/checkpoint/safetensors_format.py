"""The ``.safetensors`` format as MindSpore writes it: reading and writing with the ``safetensors`` package.

MindSpore writes the tensors in name order with metadata ``{"format": "ms"}``
and, for ``crc_check=True``, a ``crc_num`` metadata entry: the CRC-32 of each
name and its bytes, in name order.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Iterable
from typing import TypeGuard

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
    except Exception as e:  # a JSON error, bytes that are not UTF-8, ...
        raise errors.not_a_checkpoint(
            source, f"it is a damaged or truncated safetensors file (its JSON header: {type(e).__name__}: {e})"
        ) from e
    _check_header(header, len(data) - 8 - header_len, source)
    try:
        views = safetensors.deserialize(data)
    except Exception as e:  # safetensors' SafetensorError, ...
        raise errors.not_a_checkpoint(
            source, f"it is a damaged or truncated safetensors file ({type(e).__name__}: {e})"
        ) from e
    metadata = header.get("__metadata__") or {}
    result: dict[str, np.ndarray | str] = {}
    crc = 0
    for name, view in sorted(views, key=lambda item: item[0]):  # MindSpore reads sorted(f.keys())
        dtype = dtypes.np_dtype(dtypes.SAFETENSORS_DTYPES[view["dtype"]])
        array = np.frombuffer(bytes(view["data"]), dtype).reshape(view["shape"]).copy()
        result[name] = array
        crc = zlib.crc32(array.tobytes(), zlib.crc32(name.encode("utf-8"), crc))
    if "crc_num" in metadata and str(crc) != str(metadata["crc_num"]):
        raise errors.not_a_checkpoint(
            source, f"its CRC check failed (stored {metadata['crc_num']}, computed {crc}): the file is damaged"
        )
    if not result:
        raise errors.not_a_checkpoint(source, "the safetensors file holds no tensors")
    return result


def _check_header(header: object, body_len: int, source: str) -> None:
    """What the safetensors package accepts but no checkpoint holds, or what it reports without naming the entry.

    Names must be non-empty valid UTF-8, each entry's dtype known, its shape a
    list of dims NumPy can hold, and its ``data_offsets`` a range inside the
    data whose length is the shape's byte size. (Overlaps and gaps between the
    ranges are left to the package.)
    """
    if not isinstance(header, dict):
        raise errors.not_a_checkpoint(
            source, f"its safetensors header is a JSON {type(header).__name__}, not an object"
        )
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise errors.not_a_checkpoint(source, "its safetensors header's __metadata__ is not an object of strings")
    for index, (name, info) in enumerate(header.items()):
        if name == "__metadata__":
            continue
        name = errors.check_name(source, name, f"header entry {index + 1} of {len(header)}")
        entry = f"entry {name!r}"
        if metadata and name in metadata:  # MindSpore's marker of a dtype safetensors has not, e.g. "Int4" (qint4x2)
            raise errors.not_a_checkpoint(source, f"{entry} has MindSpore dtype {metadata[name]!r}, not supported")
        if not isinstance(info, dict):
            raise errors.not_a_checkpoint(
                source, f"{entry} of the header is a JSON {type(info).__name__}, not an object"
            )
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in dtypes.SAFETENSORS_DTYPES:
            raise errors.not_a_checkpoint(
                source,
                f"{entry} has safetensors dtype {dtype!r}; the supported ones are "
                f"{', '.join(sorted(dtypes.SAFETENSORS_DTYPES))}",
            )
        if not _ints(shape):
            raise errors.not_a_checkpoint(source, f"{entry} has shape {shape!r}, not a list of ints")
        if not (_ints(offsets) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= body_len):
            raise errors.not_a_checkpoint(
                source,
                f"{entry} has data_offsets {offsets!r}, not [start, end] with 0 <= start <= end <= {body_len} "
                "(the bytes after the header): the file is truncated or corrupt",
            )
        itemsize = dtypes.np_dtype(dtypes.SAFETENSORS_DTYPES[dtype]).itemsize
        errors.check_shape(source, entry, shape, itemsize)
        expected = math.prod(shape) * itemsize
        if offsets[1] - offsets[0] != expected:
            raise errors.not_a_checkpoint(
                source,
                f"{entry} ({dtype}, shape {shape}) has {offsets[1] - offsets[0]} bytes of data where its shape "
                f"needs {expected}: the file is truncated or corrupt",
            )


def _ints(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


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
