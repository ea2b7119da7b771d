"""MindSpore checkpoints (``.ckpt`` and ``.safetensors``) for Flax NNX modules and plain dicts.

Three functions with MindSpore's names and return values, plus one helper:

* :func:`load_checkpoint` reads a file written by ``mindspore.save_checkpoint``
  (either format, recognised by its content) into ``{name: numpy array}``;
* :func:`load_param_into_net` assigns such a dict to a module's variables by
  name and returns ``(param_not_load, ckpt_not_load)``;
* :func:`save_checkpoint` writes a module or a dict in a file MindSpore loads;
* :func:`parameters_dict` lists a module's variables under the names the three
  use.

The layout is ``shared/spec/mindspore-checkpoint.md`` (observed with MindSpore
2.10): a ``.ckpt`` file is a concatenation of protobuf ``Checkpoint`` messages,
one per tensor (or per 512 MiB chunk of one), decoded here with the
``protobuf`` package from a descriptor built at run time (so no generated
``_pb2`` module ties the code to a protoc version); a ``.safetensors`` file is
read and written with the ``safetensors`` package. Both packages are in the
optional extra ``pip install 'jax_conv_bpi[nn]'`` and imported only when a
function here needs them (so do flax and ml_dtypes).

Names: a module's variables are named by their attribute path joined by ``.``;
an ``nnx.Sequential`` contributes only its index (its ``layers`` attribute is
skipped), lists and tuples their index, dicts their key, so MindSpore's
``SequentialCell`` names (``body.0.weight``) match an ``nnx.Sequential``
attribute ``body``. The order is MindSpore's ``Cell.parameters_and_names()``
order: a module's own variables (in attribute assignment order) before those of
its children (in attribute order, a sequence in index order), depth first, a
variable shared by two paths once, under its first name. Every ``nnx.Variable``
is included (``nnx.Param``, ``nnx.BatchStat``, ...: MindSpore saves
non-trainable parameters such as BatchNorm's moving statistics too) except
random-number state (``nnx.RngState``: keys and counters) and sown
intermediates (``nnx.Intermediate``).
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import secrets
import struct
import sys
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_checkpoint", "load_param_into_net", "parameters_dict", "save_checkpoint"]

_INSTALL_HINT = "pip install 'jax_conv_bpi[nn]'"

# MindSpore's chunk size for big tensors: SLICE_SIZE (512 * 1024 KB) * 1024 bytes = 512 MiB. A tensor of more
# bytes is written as several consecutive records with the same tag and the full dims.
_CHUNK_BYTES = 1024 * 512 * 1024

# The ``crc_check=True`` trailer: these 7 bytes, then the CRC-32 of everything before them as a 10-byte
# big-endian integer (mindspore/train/serialization.py: binascii.crc32 over the serialized messages).
_CRC_MARK = b"crc_num"
_CRC_TRAILER = len(_CRC_MARK) + 10

# The first 4 bytes (a little-endian int32) of a file encrypted by MindSpore's ``enc_key`` (its
# utils/crypto.h: GCM_MAGIC_NUM, CBC_MAGIC_NUM).
_CIPHER_MAGIC = {0x7F3A5ED8: "AES-GCM", 0x7F3A5ED9: "AES-CBC / SM4-CBC"}

_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors format's own limit on the JSON header

# MindSpore's tensor_type strings (str(mindspore dtype)) <-> NumPy dtypes; "BFloat16" is ml_dtypes.bfloat16.
_NUMPY_OF_TENSOR_TYPE = {
    "Bool": "bool",
    "Int8": "<i1",
    "Int16": "<i2",
    "Int32": "<i4",
    "Int64": "<i8",
    "UInt8": "<u1",
    "UInt16": "<u2",
    "UInt32": "<u4",
    "UInt64": "<u8",
    "Float16": "<f2",
    "Float32": "<f4",
    "Float64": "<f8",
    "BFloat16": "bfloat16",
}
_SAFETENSORS_DTYPES = {
    "BOOL": "bool",
    "I8": "<i1",
    "I16": "<i2",
    "I32": "<i4",
    "I64": "<i8",
    "U8": "<u1",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
    "F16": "<f2",
    "F32": "<f4",
    "F64": "<f8",
    "BF16": "bfloat16",
}

# load_param_into_net(strict_load=False) converts between two dtypes of one of these groups, as MindSpore's
# _type_convert does (unsigned integers and bool are never converted).
_FLOAT_GROUP = ("float16", "float32", "float64", "bfloat16")
_INT_GROUP = ("int8", "int16", "int32", "int64")


# ---------------------------------------------------------------------------
# Optional dependencies
# ---------------------------------------------------------------------------


def _require(module: str, package: str):
    try:
        parts = module.split(".")
        for depth in range(1, len(parts)):  # the parents first: a blocked parent with a cached child still fails
            importlib.import_module(".".join(parts[:depth]))
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"jax_conv_bpi's MindSpore checkpoint functions need the '{package}' package: {_INSTALL_HINT}"
        ) from e


def _nnx():
    return _require("flax.nnx", "flax")


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        return np.dtype(_require("ml_dtypes", "ml_dtypes").bfloat16)
    return np.dtype(name)


@functools.cache
def _checkpoint_message():
    """The ``Checkpoint`` message class, from a descriptor of MindSpore's checkpoint.proto built here.

    A private descriptor pool and package keep it apart from MindSpore's own generated module, should
    both be imported in one process.
    """
    _require("google.protobuf", "protobuf")
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


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


class _Checkpoint(dict):
    """What :func:`load_checkpoint` returns: a dict that remembers its file, for error messages."""

    source: str = ""


def load_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray | str]:
    """Read a MindSpore checkpoint, ``.ckpt`` or ``.safetensors``, into ``{name: array}``.

    The format is recognised by the file's content, not its name: a safetensors
    file starts with an 8-byte little-endian header length and a JSON header, a
    ``.ckpt`` file is a sequence of protobuf ``Checkpoint`` records. Both hold
    what ``mindspore.save_checkpoint`` writes; the arrays are NumPy arrays with
    the stored shape and dtype, bit for bit (``BFloat16`` as
    ``ml_dtypes.bfloat16``, a 0-d parameter as a 0-d array). As with MindSpore,
    a string entry (``append_dict={"epoch_name": "x"}``) comes back as a Python
    ``str``. Entries are in file order for a ``.ckpt`` file and in name order
    for a safetensors file (MindSpore's orders). A tensor MindSpore split into
    512 MiB chunks comes back whole. A ``crc_check=True`` trailer (``.ckpt``) or
    ``crc_num`` metadata entry (safetensors) is verified.

    Every problem is a ``ValueError`` naming the file: an empty file, a file of
    another format (``.npz``, a PyTorch archive, text, ...), a file encrypted
    with MindSpore's ``enc_key`` (decrypt it with MindSpore first), a truncated
    or corrupt one (a tensor whose byte count disagrees with its dims, a failed
    CRC, records that are not a checkpoint's), an unknown ``tensor_type``, or a
    ``MapParameter`` entry, which is not supported. A ``.ckpt`` file cut exactly
    between two records cannot be told from a shorter checkpoint unless it has
    a CRC trailer: :func:`load_param_into_net` then reports the missing names.

    Needs ``protobuf`` (``.ckpt``) or ``safetensors``: ``pip install 'jax_conv_bpi[nn]'``.

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> import jax_conv_bpi as jcb
      >>> path = os.path.join(tempfile.mkdtemp(), "tiny.ckpt")
      >>> jcb.save_checkpoint({"head.weight": np.ones((2, 3), np.float32), "epoch_name": "e1"}, path)
      >>> params = jcb.load_checkpoint(path)
      >>> {name: getattr(value, "shape", value) for name, value in params.items()}
      {'head.weight': (2, 3), 'epoch_name': 'e1'}
      >>> params["head.weight"].dtype
      dtype('float32')
    """
    source = os.fspath(path)
    with open(source, "rb") as f:
        data = f.read()
    result = _Checkpoint(_decode(data, source))
    result.source = source
    return result


def _not_a_checkpoint(source: str, why: str) -> ValueError:
    return ValueError(f"{source!r} is not a readable MindSpore checkpoint: {why}")


def _decode(data: bytes, source: str) -> dict[str, np.ndarray | str]:
    if not data:
        raise _not_a_checkpoint(source, "the file is empty")
    if len(data) >= 4 and struct.unpack("<I", data[:4])[0] in _CIPHER_MAGIC:
        mode = _CIPHER_MAGIC[struct.unpack("<I", data[:4])[0]]
        raise _not_a_checkpoint(
            source,
            f"it is encrypted (MindSpore's enc_key, {mode}); decrypt it with MindSpore first "
            "(mindspore.load_checkpoint(path, dec_key=...), then mindspore.save_checkpoint without enc_key)",
        )
    if len(data) >= 9 and data[8:9] == b"{" and struct.unpack("<Q", data[:8])[0] <= _SAFETENSORS_MAX_HEADER:
        return _decode_safetensors(data, source)
    other = _other_format(data)
    if other:
        raise _not_a_checkpoint(source, f"it looks like {other}")
    if data[0] != 0x0A:
        raise _not_a_checkpoint(
            source,
            f"a .ckpt file starts with byte 0x0a (a protobuf Checkpoint.value record), this one with 0x{data[0]:02x}; "
            "it is corrupt, encrypted (MindSpore's enc_key: decrypt it with MindSpore first) or of another format",
        )
    try:
        return _decode_ckpt(data, source)
    except ValueError:
        raise
    except Exception as e:  # protobuf's DecodeError, a tag that is not UTF-8, ...
        raise _not_a_checkpoint(
            source,
            f"it cannot be parsed as one ({type(e).__name__}: {e}); it is corrupt or truncated, encrypted "
            "(MindSpore's enc_key: decrypt it with MindSpore first) or of another format",
        ) from e


def _other_format(data: bytes) -> str:
    """A few common formats, named so that the error says what the file is."""
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return "a ZIP archive (a NumPy .npz file, a PyTorch .pt/.pth file, ...), not a MindSpore checkpoint"
    if data.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file, not a MindSpore checkpoint"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (e.g. a legacy PyTorch file), not a MindSpore checkpoint"
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


def _decode_ckpt(data: bytes, source: str) -> dict[str, np.ndarray | str]:
    if data[-_CRC_TRAILER:-10] == _CRC_MARK and len(data) > _CRC_TRAILER:
        stored, data = int.from_bytes(data[-10:], "big"), data[:-_CRC_TRAILER]
        computed = zlib.crc32(data)
        if stored != computed:
            raise _not_a_checkpoint(
                source, f"its CRC check failed (stored {stored:#010x}, computed {computed:#010x}): the file is damaged"
            )
    message = _checkpoint_message()()
    message.ParseFromString(data)
    unknown = _unknown_field_numbers(message)
    if unknown:
        raise _not_a_checkpoint(source, f"it holds records (field numbers {unknown}) a Checkpoint message has not")
    if not message.value:
        raise _not_a_checkpoint(source, "it holds no entries")

    # Consecutive records with one tag are chunks of one tensor: [tag, tensor_type, dims, [contents]].
    entries: list[list[Any]] = []
    for value in message.value:
        tag = value.tag
        kind = value.WhichOneof("value")
        if kind == "maptensor":
            raise _not_a_checkpoint(
                source, f"entry {tag!r} is a MapParameter (MapTensorProto), which jax_conv_bpi does not support"
            )
        if kind is None:
            raise _not_a_checkpoint(source, f"entry {tag!r} holds no tensor")
        tensor = value.tensor
        unknown = _unknown_field_numbers(value) + _unknown_field_numbers(tensor)
        if unknown:
            raise _not_a_checkpoint(source, f"entry {tag!r} holds records (field numbers {unknown}) it cannot have")
        tensor_type, dims = tensor.tensor_type, list(tensor.dims)
        if entries and entries[-1][0] == tag:
            if entries[-1][1] != tensor_type or entries[-1][2] != dims:
                raise _not_a_checkpoint(
                    source,
                    f"the chunks of entry {tag!r} disagree: {entries[-1][1]} {entries[-1][2]} and {tensor_type} {dims}",
                )
            entries[-1][3].append(tensor.tensor_content)
        else:
            entries.append([tag, tensor_type, dims, [tensor.tensor_content]])

    result: dict[str, np.ndarray | str] = {}
    for tag, tensor_type, dims, chunks in entries:
        if tag in result:
            raise _not_a_checkpoint(source, f"entry {tag!r} appears twice")
        content = b"".join(chunks)
        if tensor_type == "str":
            # numpy's '<U' buffer (UTF-32-LE code points), trailing NULs dropped as numpy does.
            if len(content) % 4:
                raise _not_a_checkpoint(source, f"str entry {tag!r} has {len(content)} bytes, not a multiple of 4")
            try:
                result[tag] = content.decode("utf-32-le").rstrip("\x00")
            except UnicodeDecodeError as e:
                raise _not_a_checkpoint(source, f"str entry {tag!r} is not UTF-32: {e}") from e
            continue
        if tensor_type not in _NUMPY_OF_TENSOR_TYPE:
            raise _not_a_checkpoint(
                source,
                f"entry {tag!r} has tensor_type {tensor_type!r}; the known ones are "
                f"{', '.join(sorted(_NUMPY_OF_TENSOR_TYPE))} and str",
            )
        dtype = _np_dtype(_NUMPY_OF_TENSOR_TYPE[tensor_type])
        if any(d < 0 for d in dims):
            raise _not_a_checkpoint(source, f"entry {tag!r} has negative dims {dims}")
        if dims == [0] and len(content) == dtype.itemsize:
            dims = []  # MindSpore reads dims [0] as a scalar (its loader: `if dims == [0]: dims = []`)
        expected = math.prod(dims) * dtype.itemsize
        if len(content) != expected:
            raise _not_a_checkpoint(
                source,
                f"entry {tag!r} ({tensor_type}, dims {dims}) has {len(content)} bytes of data where its dims "
                f"need {expected}: the file is truncated or corrupt",
            )
        result[tag] = np.frombuffer(content, dtype).reshape(dims).copy()
    return result


def _decode_safetensors(data: bytes, source: str) -> dict[str, np.ndarray | str]:
    safetensors = _require("safetensors", "safetensors")
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise _not_a_checkpoint(
            source,
            f"it is a truncated safetensors file (a {header_len}-byte header announced, {len(data) - 8} bytes follow)",
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
        views = safetensors.deserialize(data)
    except Exception as e:  # safetensors' SafetensorError, a JSON error, ...
        raise _not_a_checkpoint(
            source, f"it is a damaged or truncated safetensors file ({type(e).__name__}: {e})"
        ) from e
    metadata = header.get("__metadata__") or {}
    result: dict[str, np.ndarray | str] = {}
    crc = 0
    for name, view in sorted(views, key=lambda item: item[0]):  # MindSpore reads sorted(f.keys())
        if name in metadata:  # MindSpore's marker of a dtype safetensors has not, e.g. "Int4" (qint4x2)
            raise _not_a_checkpoint(source, f"entry {name!r} has MindSpore dtype {metadata[name]!r}, not supported")
        if view["dtype"] not in _SAFETENSORS_DTYPES:
            raise _not_a_checkpoint(
                source,
                f"entry {name!r} has safetensors dtype {view['dtype']!r}; the supported ones are "
                f"{', '.join(sorted(_SAFETENSORS_DTYPES))}",
            )
        array = np.frombuffer(bytes(view["data"]), _np_dtype(_SAFETENSORS_DTYPES[view["dtype"]]))
        result[name] = array.reshape(view["shape"]).copy()
        crc = zlib.crc32(result[name].tobytes(), zlib.crc32(name.encode("utf-8"), crc))
    if "crc_num" in metadata and str(crc) != str(metadata["crc_num"]):
        raise _not_a_checkpoint(
            source, f"its CRC check failed (stored {metadata['crc_num']}, computed {crc}): the file is damaged"
        )
    if not result:
        raise _not_a_checkpoint(source, "the safetensors file holds no tensors")
    return result


# ---------------------------------------------------------------------------
# Module traversal
# ---------------------------------------------------------------------------


def _get_value(variable):
    return variable.get_value() if hasattr(variable, "get_value") else variable.value


def _set_value(variable, value) -> None:
    if hasattr(variable, "set_value"):
        variable.set_value(value)
    else:  # flax < 0.12
        variable.value = value


def _named_variables(module) -> list[tuple[str, Any]]:
    """``(name, nnx.Variable)`` pairs in MindSpore's ``parameters_and_names()`` order (module docstring)."""
    nnx = _nnx()
    skipped = tuple(t for t in (getattr(nnx, "RngState", None), getattr(nnx, "Intermediate", None)) if t)
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def items(node):
        if isinstance(node, nnx.Module):
            return [(k, v) for k, v in vars(node).items() if not k.startswith(("_pytree__", "_object__"))]
        if isinstance(node, Mapping):
            return [(str(k), v) for k, v in node.items()]
        return [(str(i), v) for i, v in enumerate(node)]

    def visit(node, prefix: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        children = []
        for key, value in items(node):
            if isinstance(value, nnx.Variable):
                if not isinstance(value, skipped) and id(value) not in seen:
                    seen.add(id(value))
                    found.append((prefix + key, value))
            elif isinstance(value, (nnx.Module, list, tuple, Mapping)):
                transparent = key == "layers" and isinstance(node, nnx.Sequential)
                children.append((value, prefix if transparent else f"{prefix}{key}."))
        for child, child_prefix in children:
            visit(child, child_prefix)

    visit(module, "")
    return found


def _check_module(module, function: str) -> None:
    nnx = _nnx()
    if not isinstance(module, nnx.Module):
        raise TypeError(f"{function}: the module must be a flax.nnx.Module, got {type(module).__name__}")


def parameters_dict(module) -> dict[str, np.ndarray]:
    """A module's variables as ``{name: numpy array}``, named and ordered as MindSpore names a Cell's parameters.

    These are the names :func:`load_param_into_net` matches and
    :func:`save_checkpoint` writes, in the order it writes them: the attribute
    path joined by ``.``; an ``nnx.Sequential`` contributes only its index; a
    module's own variables come before its children's. Every ``nnx.Variable``
    is included (``nnx.Param``, ``nnx.BatchStat``, ...) except random-number
    state and sown intermediates; a variable reachable by two paths appears
    once. The arrays are host copies. Needs flax: ``pip install 'jax_conv_bpi[nn]'``.

    Example:
      >>> from flax import nnx
      >>> import jax_conv_bpi as jcb
      >>> net = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(3, 1, rngs=nnx.Rngs(1)))
      >>> {name: value.shape for name, value in jcb.parameters_dict(net).items()}
      {'0.kernel': (2, 3), '0.bias': (3,), '2.kernel': (3, 1), '2.bias': (1,)}
    """
    _check_module(module, "parameters_dict")
    return {name: np.asarray(_get_value(variable)) for name, variable in _named_variables(module)}


# ---------------------------------------------------------------------------
# Loading into a module
# ---------------------------------------------------------------------------


def load_param_into_net(module, params: Mapping[str, Any], strict_load: bool = False) -> tuple[list[str], list[str]]:
    """Assign ``params`` (e.g. from :func:`load_checkpoint`) to a module's variables by name, as MindSpore does.

    Returns ``(param_not_load, ckpt_not_load)``: the names of the module's
    variables that got no value, and the names in ``params`` that matched no
    variable (both in order). Names are those of :func:`parameters_dict`:
    ``nnx.Sequential`` attribute ``body`` holds ``body.0.weight``, ... .

    As ``mindspore.load_param_into_net``:

    * a name matches exactly; with ``strict_load=False`` (the default), when some
      variables got no value, MindSpore's prefix rule then tries to load them
      from names that end with theirs (a checkpoint of a wrapped network,
      ``network.body.0.weight``, loads into ``body.0.weight``);
    * ``strict_load=False`` converts between dtypes of one kind (float16,
      float32, float64 and bfloat16 among themselves; int8 to int64 among
      themselves) to the variable's dtype; ``strict_load=True`` converts
      nothing and uses exact names only;
    * a stored shape that is the variable's shape followed by 1s is reshaped
      (MindSpore's GE rule, e.g. ``(12, 2048, 1, 1)`` into ``(12, 2048)``).

    Any other shape or dtype mismatch raises ``ValueError`` naming the parameter,
    both shapes and dtypes and the checkpoint file (MindSpore raises
    RuntimeError). Everything is checked before anything is assigned, so an
    error leaves the module unchanged. A value keeps the sharding of the array
    it replaces. Deliberate differences from MindSpore: a name loaded through
    the prefix rule is not listed in ``ckpt_not_load`` (MindSpore still lists
    it), and a ``str`` entry whose name matches a variable is an error (MindSpore
    skips it silently, reporting it nowhere).

    Example (the spec's: one name matches, one variable missing, one extra entry):
      >>> import numpy as np
      >>> from flax import nnx
      >>> import jax_conv_bpi as jcb
      >>> class Net(nnx.Module):
      ...     def __init__(self):
      ...         self.body = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
      ...         self.head = nnx.Linear(3, 1, use_bias=False, rngs=nnx.Rngs(1))
      >>> net = Net()
      >>> jcb.load_param_into_net(net, {"body.0.bias": np.ones(3, np.float32), "foo": np.zeros(2)})
      (['body.0.kernel', 'head.kernel'], ['foo'])
      >>> net.body.layers[0].bias[...]
      Array([1., 1., 1.], dtype=float32)
    """
    _check_module(module, "load_param_into_net")
    if not isinstance(params, Mapping):
        raise TypeError(f"load_param_into_net: params must be a dict of name -> array, got {type(params).__name__}")
    if not isinstance(strict_load, bool):
        raise TypeError(f"load_param_into_net: strict_load must be a bool, got {type(strict_load).__name__}")
    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"load_param_into_net: the names in params must be str, got {type(key).__name__}")
        if not (isinstance(value, str) or _is_array_like(value)):
            raise TypeError(
                f"load_param_into_net: params[{key!r}] must be an array or a str, got {type(value).__name__}"
            )
    source = getattr(params, "source", "")
    where = f"the checkpoint {source!r}" if source else "params"

    named = _named_variables(module)
    plan: list[tuple[str, Any, str]] = []  # (variable name, variable, params key)
    param_not_load: list[str] = []
    for name, variable in named:
        if name in params:
            plan.append((name, variable, name))
        else:
            param_not_load.append(name)
    if param_not_load and not strict_load:
        plan += _prefix_matches(named, param_not_load, params)
    used = {key for _, _, key in plan}
    ckpt_not_load = [key for key in params if key not in used]

    values = [
        _conformed(name, _get_value(variable), params[key], key, where, strict_load) for name, variable, key in plan
    ]
    import jax

    for (_, variable, _), value in zip(plan, values):
        old = _get_value(variable)
        if isinstance(old, jax.Array):
            value = jax.device_put(value, old.sharding)
        elif not isinstance(old, np.ndarray):  # e.g. jax.ShapeDtypeStruct of an nnx.eval_shape module
            value = jax.numpy.asarray(value)
        _set_value(variable, value)
    return param_not_load, ckpt_not_load


def _is_array_like(value) -> bool:
    return isinstance(value, (np.ndarray, np.generic)) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__array__")
    )


def _prefix_matches(named, param_not_load: list[str], params: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """MindSpore's ``_load_dismatch_prefix_params``: load ``prefix + name`` for a prefix found by suffix match.

    The first not-loaded name that some key ends with gives a prefix; every
    not-loaded variable whose ``prefix + name`` is a key is then loaded; repeated
    until no key ends with a remaining name. ``param_not_load`` shrinks in place.
    """
    matches = []
    while param_not_load:
        prefix = None
        for name in param_not_load:
            key = next((k for k in params if k.endswith(name) and k != name), None)
            if key is not None:
                prefix = key[: -len(name)]
                break
        if prefix is None:
            break
        for name, variable in named:
            if name in param_not_load and prefix + name in params:
                matches.append((name, variable, prefix + name))
                param_not_load.remove(name)
    return matches


def _conformed(name: str, old, new, key: str, where: str, strict_load: bool) -> np.ndarray:
    """``new`` as an array of ``old``'s shape and dtype under MindSpore's rules, or a ValueError."""
    old_shape, old_dtype = tuple(old.shape), np.dtype(old.dtype)
    entry = f"{key!r} in {where}"
    if isinstance(new, str):
        raise ValueError(
            f"load_param_into_net: parameter {name!r} of the module ({old_dtype}, shape {old_shape}) "
            f"cannot take the str entry {entry}"
        )
    new = np.asarray(new)
    if new.shape != old_shape:
        extra = new.shape[len(old_shape) :]
        if new.shape[: len(old_shape)] == old_shape and extra and all(d == 1 for d in extra):
            new = new.reshape(old_shape)  # MindSpore's _special_process_par
        else:
            raise ValueError(
                f"load_param_into_net: shape mismatch for parameter {name!r}: the module has shape {old_shape} "
                f"({old_dtype}), {entry} has shape {new.shape} ({new.dtype})"
            )
    if new.dtype != old_dtype:
        pair = {old_dtype.name, new.dtype.name}
        if not strict_load and (pair <= set(_FLOAT_GROUP) or pair <= set(_INT_GROUP)):
            new = new.astype(old_dtype)
        else:
            rule = (
                "strict_load=True converts no dtype"
                if strict_load
                else "only float16/float32/float64/bfloat16 among themselves and int8..int64 among themselves "
                "are converted"
            )
            raise ValueError(
                f"load_param_into_net: dtype mismatch for parameter {name!r}: the module has {old_dtype} "
                f"(shape {old_shape}), {entry} has {new.dtype} ({rule})"
            )
    return new


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

_FORMATS = ("ckpt", "safetensors")


def save_checkpoint(module_or_dict, path: str | os.PathLike, format: str = "ckpt", *, crc_check: bool = False) -> None:
    """Write a module's variables, or a dict of arrays, in a file ``mindspore.load_checkpoint`` reads.

    ``module_or_dict``: a ``flax.nnx.Module`` (its :func:`parameters_dict`, in
    that order) or a dict ``{name: value}`` (in its order; values NumPy or JAX
    arrays, ``nnx.Variable``s, Python ``bool``/``int``/``float`` stored as
    MindSpore stores ``append_dict`` scalars, Bool/Int64/Float32 0-d, or ``str``,
    ``.ckpt`` only). ``format``: ``"ckpt"`` (MindSpore's default) or
    ``"safetensors"``. ``crc_check=True`` adds MindSpore's CRC-32 (a ``.ckpt``
    trailer, a safetensors ``crc_num`` metadata entry).

    A ``.ckpt`` file is written exactly as MindSpore 2.10 writes it: one
    protobuf ``Checkpoint`` message per tensor (``tag`` = name, ``dims`` as
    unpacked varints, ``tensor_type`` such as ``"Float32"``, ``tensor_content``
    the little-endian buffer), a tensor of more than 512 MiB split into
    consecutive messages of 512 MiB chunks with the same tag and full dims. A
    safetensors file is written by ``safetensors.numpy`` with metadata
    ``{"format": "ms"}``. Either goes to a temporary file in the same folder,
    then renamed over ``path``. Differences from MindSpore's writer: ``path`` is
    used as given (MindSpore appends ``.ckpt``/``.safetensors`` when missing; its
    loader wants that extension), the file is not made read-only, and a
    zero-size array is written as one record with no data (MindSpore writes no
    record for it).

    Needs ``protobuf`` or ``safetensors`` (and flax for a module): ``pip install 'jax_conv_bpi[nn]'``.

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> import jax_conv_bpi as jcb
      >>> folder = tempfile.mkdtemp()
      >>> params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": 7}
      >>> jcb.save_checkpoint(params, os.path.join(folder, "a.ckpt"))
      >>> jcb.save_checkpoint(params, os.path.join(folder, "a.safetensors"), format="safetensors")
      >>> a, b = (jcb.load_checkpoint(os.path.join(folder, n)) for n in ("a.ckpt", "a.safetensors"))
      >>> a["step"], b["step"].dtype, bool((a["w"] == b["w"]).all())
      (array(7), dtype('int64'), True)
    """
    if not isinstance(format, str) or format not in _FORMATS:
        raise ValueError(f"save_checkpoint: format must be 'ckpt' or 'safetensors', got {format!r}")
    if not isinstance(crc_check, bool):
        raise TypeError(f"save_checkpoint: crc_check must be a bool, got {type(crc_check).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save_checkpoint: path must be a str or os.PathLike, got {type(path).__name__}")
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"save_checkpoint: {os.fspath(path)!r} is a directory, not a file name")
    entries = _entries_to_save(module_or_dict)
    if format == "ckpt":
        Checkpoint = _checkpoint_message()  # noqa: N806 - a message class
        _write_atomically(target, lambda f: _write_ckpt(f, entries, Checkpoint, crc_check))
    else:
        blob = _safetensors_bytes(entries, crc_check)
        _write_atomically(target, lambda f: f.write(blob))


def _entries_to_save(obj) -> list[tuple[str, np.ndarray | str]]:
    nnx = sys.modules.get("flax.nnx")  # a module can only be an nnx.Module if flax.nnx is imported
    if nnx is not None and isinstance(obj, nnx.Module):
        return [(name, _saveable(name, _get_value(variable))) for name, variable in _named_variables(obj)]
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"save_checkpoint: expected a flax.nnx.Module or a dict of name -> array, got {type(obj).__name__}"
        )
    entries = []
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"save_checkpoint: the names must be str, got {type(name).__name__} ({name!r})")
        if nnx is not None and isinstance(value, nnx.Variable):
            value = _get_value(value)
        entries.append((name, _saveable(name, value)))
    return entries


def _saveable(name: str, value) -> np.ndarray | str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return np.array(value, np.bool_)
    if isinstance(value, int):
        return np.array(value, np.int64)  # MindSpore: Tensor(int) is Int64
    if isinstance(value, float):
        return np.array(value, np.float32)  # MindSpore: Tensor(float) is Float32
    if not _is_array_like(value):
        raise TypeError(
            f"save_checkpoint: entry {name!r} must be an array, a bool/int/float or a str, got {type(value).__name__}"
        )
    array = np.asarray(value)
    if array.dtype.kind == "U" and array.ndim == 0:
        return str(array)
    if _tensor_type(array.dtype) is None:
        raise TypeError(
            f"save_checkpoint: entry {name!r} has dtype {array.dtype}, which a MindSpore checkpoint cannot hold "
            f"(supported: bool, int8..int64, uint8..uint64, float16, float32, float64, bfloat16)"
        )
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    return np.array(array, dtype=array.dtype.newbyteorder("<"), order="C", copy=None)


def _tensor_type(dtype: np.dtype) -> str | None:
    for tensor_type, name in _NUMPY_OF_TENSOR_TYPE.items():
        if name == "bfloat16":
            if dtype.name == "bfloat16":
                return tensor_type
        elif dtype == np.dtype(name) or (dtype.kind != "b" and dtype.newbyteorder("<") == np.dtype(name)):
            return tensor_type
    return None


def _write_ckpt(f, entries, Checkpoint, crc_check: bool) -> None:  # noqa: N803 - a message class
    crc = 0
    for name, value in entries:
        if isinstance(value, str):
            dims, tensor_type = [0], "str"
            text = np.array(value)
            content = text.astype(text.dtype.newbyteorder("<")).tobytes()
        else:
            dims, tensor_type, content = list(value.shape), _tensor_type(value.dtype), value.tobytes()
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


def _safetensors_bytes(entries, crc_check: bool) -> bytes:
    numpy_io = _require("safetensors.numpy", "safetensors")
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


def _write_atomically(target: Path, write) -> None:
    """Write to a new temporary file beside ``target``, then rename it over ``target``."""
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as f:
            write(f)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
