"""The ``.ckpt`` format: MindSpore's protobuf ``Checkpoint`` message, reading and writing its records, the CRC.

A ``.ckpt`` file is a concatenation of ``Checkpoint`` messages, one per tensor
(or per 512 MiB chunk of one), optionally followed by a CRC-32 trailer
(``crc_check=True``). The message class comes from a descriptor of
MindSpore's ``checkpoint.proto`` built here at run time with the ``protobuf``
package, so no generated ``_pb2`` module ties the code to a protoc version.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Iterable
from typing import IO, Any

import numpy as np

from jax_conv_bpi._src.mindspore.checkpoint import dtypes, errors, optional

__all__ = ["checkpoint_message", "decode_ckpt", "write_ckpt"]

# MindSpore's chunk size for big tensors: SLICE_SIZE (512 * 1024 KB) * 1024 bytes = 512 MiB. A tensor of more
# bytes is written as several consecutive records with the same tag and the full dims.
_CHUNK_BYTES = 1024 * 512 * 1024

# The ``crc_check=True`` trailer: these 7 bytes, then the CRC-32 of everything before them as a 10-byte
# big-endian integer (mindspore/train/serialization.py: binascii.crc32 over the serialized messages).
_CRC_MARK = b"crc_num"
_CRC_TRAILER = len(_CRC_MARK) + 10


@functools.cache
def checkpoint_message() -> Any:
    """The ``Checkpoint`` message class, from a descriptor of MindSpore's checkpoint.proto built here.

    A private descriptor pool and package keep it apart from MindSpore's own generated module, should
    both be imported in one process. Typed ``Any``: its fields are made at run time, so a type checker
    cannot know them.
    """
    optional.require("google.protobuf", "protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    package = "jax_conv_bpi.mindspore"
    proto = descriptor_pb2.FileDescriptorProto(
        name="jax_conv_bpi/mindspore_checkpoint.proto", package=package, syntax="proto2"
    )
    tensor = proto.message_type.add(name="TensorProto")
    tensor.field.add(name="dims", number=1, label=field.LABEL_REPEATED, type=field.TYPE_INT64)  # not packed
    tensor.field.add(name="tensor_type", number=2, label=field.LABEL_REQUIRED, type=field.TYPE_STRING)
    tensor.field.add(name="tensor_content", number=3, label=field.LABEL_REQUIRED, type=field.TYPE_BYTES)

    def message_field(message, name: str, number: int, type_name: str, label: int, **extra) -> None:
        message.field.add(
            name=name, number=number, label=label, type=field.TYPE_MESSAGE, type_name=f".{package}.{type_name}", **extra
        )

    map_tensor = proto.message_type.add(name="MapTensorProto")
    message_field(map_tensor, "tensor", 1, "TensorProto", field.LABEL_REPEATED)
    checkpoint = proto.message_type.add(name="Checkpoint")
    value = checkpoint.nested_type.add(name="Value")
    value.oneof_decl.add(name="value")
    value.field.add(name="tag", number=1, label=field.LABEL_REQUIRED, type=field.TYPE_STRING)
    message_field(value, "tensor", 2, "TensorProto", field.LABEL_OPTIONAL, oneof_index=0)
    message_field(value, "maptensor", 3, "MapTensorProto", field.LABEL_OPTIONAL, oneof_index=0)
    message_field(checkpoint, "value", 1, "Checkpoint.Value", field.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Checkpoint"))


def _unknown_field_numbers(message) -> list[int]:
    """Field numbers of the records a parse kept as unknown (none in a MindSpore checkpoint)."""
    try:
        from google.protobuf.unknown_fields import UnknownFieldSet
    except ImportError:  # pragma: no cover - protobuf < 4.22, below the declared minimum
        return []
    return sorted({f.field_number for f in UnknownFieldSet(message)})


def decode_ckpt(data: bytes, source: str) -> dict[str, np.ndarray | str]:
    """The entries of the ``.ckpt`` file ``source`` (its bytes ``data``), or a ValueError saying what is wrong."""
    if data[0] != 0x0A:
        raise errors.not_a_checkpoint(
            source,
            f"a .ckpt file starts with byte 0x0a (a protobuf Checkpoint.value record), this one with 0x{data[0]:02x}; "
            "it is corrupt, encrypted (MindSpore's enc_key: decrypt it with MindSpore first) or of another format",
        )
    try:
        return _parse(data, source)
    except (errors.UnreadableCheckpoint, MemoryError):
        raise
    except Exception as e:  # protobuf's DecodeError, a tag that is not UTF-8, ...
        raise errors.not_a_checkpoint(
            source,
            f"it cannot be parsed as one ({type(e).__name__}: {e}); it is corrupt or truncated, encrypted "
            "(MindSpore's enc_key: decrypt it with MindSpore first) or of another format",
        ) from e


def _parse(data: bytes, source: str) -> dict[str, np.ndarray | str]:
    if data[-_CRC_TRAILER:-10] == _CRC_MARK and len(data) > _CRC_TRAILER:
        stored, data = int.from_bytes(data[-10:], "big"), data[:-_CRC_TRAILER]
        computed = zlib.crc32(data)
        if stored != computed:
            raise errors.not_a_checkpoint(
                source, f"its CRC check failed (stored {stored:#010x}, computed {computed:#010x}): the file is damaged"
            )
    message = checkpoint_message()()
    message.ParseFromString(data)
    unknown = _unknown_field_numbers(message)
    if unknown:
        raise errors.not_a_checkpoint(
            source, f"it holds records (field numbers {unknown}) a Checkpoint message has not"
        )
    if not message.value:
        raise errors.not_a_checkpoint(source, "it holds no entries")

    # Consecutive records with one tag are chunks of one tensor: [tag, tensor_type, dims, [contents], where].
    entries: list[list[Any]] = []
    total = len(message.value)
    for index, value in enumerate(message.value):
        where = f"record {index + 1} of {total}"
        if not value.HasField("tag"):
            raise errors.not_a_checkpoint(source, f"{where} has no name (its required tag field is missing)")
        tag = errors.check_name(source, value.tag, where)  # upb gives a tag that is not UTF-8 as bytes
        kind = value.WhichOneof("value")
        if kind == "maptensor":
            raise errors.not_a_checkpoint(
                source, f"entry {tag!r} is a MapParameter (MapTensorProto), which jax_conv_bpi does not support"
            )
        if kind is None:
            raise errors.not_a_checkpoint(source, f"entry {tag!r} ({where}) holds no tensor")
        tensor = value.tensor
        unknown = _unknown_field_numbers(value) + _unknown_field_numbers(tensor)
        if unknown:
            raise errors.not_a_checkpoint(
                source, f"entry {tag!r} ({where}) holds records (field numbers {unknown}) it cannot have"
            )
        tensor_type, dims = tensor.tensor_type, list(tensor.dims)
        if entries and entries[-1][0] == tag:
            if entries[-1][1] != tensor_type or entries[-1][2] != dims:
                raise errors.not_a_checkpoint(
                    source,
                    f"the chunks of entry {tag!r} disagree: {entries[-1][1]} {entries[-1][2]} and {tensor_type} "
                    f"{dims} ({where})",
                )
            entries[-1][3].append(tensor.tensor_content)
        else:
            entries.append([tag, tensor_type, dims, [tensor.tensor_content], where])

    result: dict[str, np.ndarray | str] = {}
    for tag, tensor_type, dims, chunks, where in entries:
        entry = f"entry {tag!r} ({where})"
        if tag in result:
            raise errors.not_a_checkpoint(source, f"entry {tag!r} appears twice (again in {where})")
        content = b"".join(chunks)
        if tensor_type == "str":
            # numpy's '<U' buffer (UTF-32-LE code points), trailing NULs dropped as numpy does.
            if len(content) % 4:
                raise errors.not_a_checkpoint(source, f"str {entry} has {len(content)} bytes, not a multiple of 4")
            try:
                result[tag] = content.decode("utf-32-le").rstrip("\x00")
            except UnicodeDecodeError as e:
                raise errors.not_a_checkpoint(source, f"str {entry} is not UTF-32: {e}") from e
            continue
        if tensor_type not in dtypes.NUMPY_OF_TENSOR_TYPE:
            raise errors.not_a_checkpoint(
                source,
                f"{entry} has tensor_type {tensor_type!r}; the known ones are "
                f"{', '.join(sorted(dtypes.NUMPY_OF_TENSOR_TYPE))} and str",
            )
        dtype = dtypes.np_dtype(dtypes.NUMPY_OF_TENSOR_TYPE[tensor_type])
        errors.check_shape(source, entry, dims, dtype.itemsize)
        if dims == [0] and len(content) == dtype.itemsize:
            dims = []  # MindSpore reads dims [0] as a scalar (its loader: `if dims == [0]: dims = []`)
        expected = math.prod(dims) * dtype.itemsize
        if len(content) != expected:
            raise errors.not_a_checkpoint(
                source,
                f"{entry} ({tensor_type}, dims {dims}) has {len(content)} bytes of data where its dims "
                f"need {expected}: the file is truncated or corrupt",
            )
        result[tag] = np.frombuffer(content, dtype).reshape(dims).copy()
    return result


def write_ckpt(
    f: IO[bytes],
    entries: Iterable[tuple[str, np.ndarray | str]],
    Checkpoint: Any,  # noqa: N803 - a message class
    crc_check: bool,
) -> None:
    """Write ``entries`` to ``f`` as MindSpore does: one message per tensor or 512 MiB chunk, then the CRC trailer."""
    crc = 0
    for name, value in entries:
        if isinstance(value, str):
            dims, tensor_type = [0], "str"
            text = np.array(value)
            content = text.astype(text.dtype.newbyteorder("<")).tobytes()
        else:
            dims, tensor_type, content = list(value.shape), dtypes.tensor_type(value.dtype), value.tobytes()
        for start in range(0, max(len(content), 1), _CHUNK_BYTES):
            message = Checkpoint()
            record = message.value.add()
            record.tag = name
            record.tensor.dims.extend(dims)
            record.tensor.tensor_type = tensor_type
            record.tensor.tensor_content = content[start : start + _CHUNK_BYTES]
            serialized = message.SerializeToString()
            crc = zlib.crc32(serialized, crc)
            f.write(serialized)
    if crc_check:
        f.write(_CRC_MARK + crc.to_bytes(10, "big"))
