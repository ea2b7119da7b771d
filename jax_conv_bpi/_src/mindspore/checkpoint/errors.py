"""The error a file that cannot be read as a MindSpore checkpoint raises, and the checks both formats share.

:func:`check_name` and :func:`check_shape` refuse what a file's bytes may
declare but no checkpoint holds: an empty name or one that is not valid
UTF-8, negative dims, more dims than NumPy allows, or a size NumPy cannot
address. Each error names the file and the entry.
"""

from __future__ import annotations

import math

__all__ = ["UnreadableCheckpoint", "check_name", "check_shape", "not_a_checkpoint"]

# NumPy's limits: at most 64 dims, and a byte size below 2**63 (``arr.size * itemsize``, the nonzero dims only).
_MAX_DIMS = 64
_MAX_BYTES = 2**63 - 1


class UnreadableCheckpoint(ValueError):
    """The ``ValueError`` of a file that is not a readable checkpoint; a subclass only so that the readers can tell
    their own diagnosis from an exception raised inside a library (which they wrap in one naming the file)."""


def not_a_checkpoint(source: str, why: str) -> UnreadableCheckpoint:
    """The ``ValueError`` for the file ``source``, saying ``why`` it cannot be read."""
    return UnreadableCheckpoint(f"{source!r} is not a readable MindSpore checkpoint: {why}")


def check_name(source: str, name: object, where: str) -> str:
    """``name`` if it is a non-empty str of valid UTF-8 (or such bytes, decoded), else the file's ValueError.

    ``where`` says which record or header entry holds it, e.g. ``"record 3 of 9"``.
    """
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError as e:
            raise not_a_checkpoint(
                source, f"the name of {where} is not valid UTF-8 ({name[:80]!r}: {e.reason} at byte {e.start})"
            ) from e
    if not isinstance(name, str):
        raise not_a_checkpoint(source, f"the name of {where} is a {type(name).__name__}, not a str")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate, e.g. "\\ud800" in a JSON header
        raise not_a_checkpoint(source, f"the name of {where} is not valid UTF-8 ({name[:80]!r}: {e.reason})") from e
    if not name:
        raise not_a_checkpoint(source, f"{where} has an empty name (a checkpoint entry needs one)")
    return name


def check_shape(source: str, entry: str, dims: list[int], itemsize: int) -> None:
    """A ValueError naming the file and ``entry`` unless ``dims`` describe an array NumPy can hold."""
    if any(d < 0 for d in dims):
        raise not_a_checkpoint(source, f"{entry} has negative dims {_dims(dims)}")
    if len(dims) > _MAX_DIMS:
        raise not_a_checkpoint(source, f"{entry} has {len(dims)} dims; an array has at most {_MAX_DIMS}")
    nbytes = math.prod(d for d in dims if d) * itemsize
    if nbytes > _MAX_BYTES:
        raise not_a_checkpoint(
            source,
            f"{entry} declares dims {_dims(dims)} ({nbytes} bytes without its zero dims): more than an array can "
            f"address (at most {_MAX_BYTES} bytes); the file is corrupt",
        )


def _dims(dims: list[int]) -> str:
    return str(dims) if len(dims) <= 16 else f"{dims[:16]}"[:-1] + f", ... ({len(dims)} dims)]"
