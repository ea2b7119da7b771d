"""MindSpore checkpoints (``.ckpt`` and ``.safetensors``) for Flax NNX modules and plain dicts.

Three functions with MindSpore's names and return values, plus one helper:

* :func:`load_checkpoint` reads a file written by ``mindspore.save_checkpoint``
  (either format, recognised by its content) into ``{name: numpy array}``;
* :func:`load_param_into_net` assigns such a dict to a module's variables by
  name (optionally renamed) and returns ``(param_not_load, ckpt_not_load)``,
  warning when either is not empty;
* :func:`save_checkpoint` writes a module or a dict in a file MindSpore loads;
* :func:`parameters_dict` lists a module's variables under the names the three
  use.

The layout, as MindSpore 2.10 writes it: a ``.ckpt`` file is a concatenation of protobuf ``Checkpoint`` messages,
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

The package's modules, one concern each: :mod:`.api` (these four functions;
``parameters_dict`` and ``load_param_into_net`` are defined in
:mod:`.modules`, the NNX traversal and MindSpore's loading rules),
:mod:`.files` (recognising a file's format, atomic writes), :mod:`.ckpt_format`
(the protobuf message, ``.ckpt`` records, chunks and CRC),
:mod:`.safetensors_format`, :mod:`.names` (renaming entries, mismatch
warnings), :mod:`.dtypes` (MindSpore's, safetensors' and NumPy's dtype
names), :mod:`.optional` (the lazily imported extra) and :mod:`.errors` (the
error of an unreadable file, and the checks of names and sizes both formats
share).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jax_conv_bpi._src.mindspore.checkpoint import ckpt_format, dtypes, files, modules, names, safetensors_format
from jax_conv_bpi._src.mindspore.checkpoint.modules import load_param_into_net, parameters_dict

__all__ = ["load_checkpoint", "load_param_into_net", "parameters_dict", "save_checkpoint"]


class _Checkpoint(dict):
    """What :func:`load_checkpoint` returns: a dict that remembers its file, for error messages."""

    source: str = ""


def load_checkpoint(
    path: str | os.PathLike,
    *,
    name_map: Mapping[str, str | None] | Callable[[str], str | None] | None = None,
    strip_prefix: str | None = None,
    add_prefix: str | None = None,
) -> dict[str, np.ndarray | str]:
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
    Names must be non-empty and valid UTF-8, and a tensor's dims must describe
    an array NumPy can hold; any other file is refused the same way, naming
    the entry (and, in a ``.ckpt`` file, the record's index). A PyTorch file
    (``torch.save``) is recognised, and the error shows how to convert it.

    ``strip_prefix``, ``add_prefix`` and ``name_map`` rename the entries as
    :func:`load_param_into_net` does (in that order: the prefix options, then
    ``name_map``; ``None`` from ``name_map`` drops an entry), for code that
    assigns the arrays itself (``nnx.update``, ...); a collision is a
    ``ValueError``, a ``name_map`` key or ``strip_prefix`` that matches no name
    a warning.

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
      >>> list(jcb.load_checkpoint(path, add_prefix="model.", name_map={"model.epoch_name": None}))
      ['model.head.weight']
    """
    names.check_options("load_checkpoint", name_map, strip_prefix, add_prefix)
    source = os.fspath(path)
    with open(source, "rb") as f:
        data = f.read()
    entries = files.decode(data, source)
    if name_map is not None or strip_prefix or add_prefix:
        entries, _ = names.rename(entries, "load_checkpoint", name_map, strip_prefix, add_prefix, stacklevel=2)
    result = _Checkpoint(entries)
    result.source = source
    return result


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
        Checkpoint = ckpt_format.checkpoint_message()  # noqa: N806 - a message class
        files.write_atomically(target, lambda f: ckpt_format.write_ckpt(f, entries, Checkpoint, crc_check))
    else:
        blob = safetensors_format.safetensors_bytes(entries, crc_check)
        files.write_atomically(target, lambda f: f.write(blob))


def _entries_to_save(obj: Any) -> list[tuple[str, np.ndarray | str]]:
    nnx = sys.modules.get("flax.nnx")  # a module can only be an nnx.Module if flax.nnx is imported
    if nnx is not None and isinstance(obj, nnx.Module):
        return [(name, _saveable(name, modules.get_value(variable))) for name, variable in modules.named_variables(obj)]
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"save_checkpoint: expected a flax.nnx.Module or a dict of name -> array, got {type(obj).__name__}"
        )
    entries = []
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"save_checkpoint: the names must be str, got {type(name).__name__} ({name!r})")
        if nnx is not None and isinstance(value, nnx.Variable):
            value = modules.get_value(value)
        entries.append((name, _saveable(name, value)))
    return entries


def _saveable(name: str, value: Any) -> np.ndarray | str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return np.array(value, np.bool_)
    if isinstance(value, int):
        return np.array(value, np.int64)  # MindSpore: Tensor(int) is Int64
    if isinstance(value, float):
        return np.array(value, np.float32)  # MindSpore: Tensor(float) is Float32
    if not dtypes.is_array_like(value):
        raise TypeError(
            f"save_checkpoint: entry {name!r} must be an array, a bool/int/float or a str, got {type(value).__name__}"
        )
    array = np.asarray(value)
    if array.dtype.kind == "U" and array.ndim == 0:
        return str(array)
    if dtypes.tensor_type(array.dtype) is None:
        raise TypeError(
            f"save_checkpoint: entry {name!r} has dtype {array.dtype}, which a MindSpore checkpoint cannot hold "
            f"(supported: bool, int8..int64, uint8..uint64, float16, float32, float64, bfloat16)"
        )
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    return np.array(array, dtype=array.dtype.newbyteorder("<"), order="C", copy=None)
