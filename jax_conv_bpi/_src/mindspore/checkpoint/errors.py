"""The error a file that cannot be read as a MindSpore checkpoint raises, whatever its format."""

from __future__ import annotations

__all__ = ["not_a_checkpoint"]


def not_a_checkpoint(source: str, why: str) -> ValueError:
    """The ``ValueError`` for the file ``source``, saying ``why`` it cannot be read."""
    return ValueError(f"{source!r} is not a readable MindSpore checkpoint: {why}")
