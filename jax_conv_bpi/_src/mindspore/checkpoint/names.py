"""Checkpoint names: mapping a checkpoint's names onto a module's, and telling the user what did not match.

:func:`rename` applies the ``name_map`` / ``strip_prefix`` / ``add_prefix``
options of ``load_checkpoint`` and ``load_param_into_net``; :func:`notify`
emits a mismatch both as a ``UserWarning`` and as a record of the
``jax_conv_bpi`` logger; :func:`shown` abbreviates a long list of names for a
message.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["LOGGER", "NameMap", "check_options", "notify", "rename", "shown"]

LOGGER = logging.getLogger("jax_conv_bpi")
# A library's logger: records reach the handlers the application configures, and without any, logging's
# last-resort handler does not print them a second time beside the warning.
LOGGER.addHandler(logging.NullHandler())

NameMap = Mapping[str, str | None] | Callable[[str], str | None]

V = TypeVar("V")

# How many names a warning or an error message lists before it says "... and N more".
_SHOWN = 8


def shown(names: list[str], limit: int = _SHOWN) -> str:
    """``names`` as a Python list, cut after ``limit`` entries with the number left out."""
    if len(names) <= limit:
        return repr(names)
    return f"{names[:limit]!r}"[:-1] + f", ... and {len(names) - limit} more]"


def notify(message: str, stacklevel: int) -> None:
    """``message`` as a ``UserWarning`` (pointing ``stacklevel`` frames up) and a WARNING of the ``jax_conv_bpi`` logger."""
    LOGGER.warning("%s", message)
    warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)


def check_options(function: str, name_map: Any, strip_prefix: Any, add_prefix: Any) -> None:
    """A TypeError naming ``function`` and the option unless the three options have their types."""
    if name_map is not None and not isinstance(name_map, Mapping) and not callable(name_map):
        raise TypeError(
            f"{function}: name_map must be a dict (checkpoint name -> new name, or None to drop the entry) or a "
            f"function of a name returning the new name or None, got {type(name_map).__name__}"
        )
    if isinstance(name_map, Mapping):
        for key, value in name_map.items():
            if not isinstance(key, str):
                raise TypeError(f"{function}: the keys of name_map must be str, got {type(key).__name__} ({key!r})")
            if value is not None and not isinstance(value, str):
                raise TypeError(
                    f"{function}: name_map[{key!r}] must be a str (the new name) or None (drop the entry), "
                    f"got {type(value).__name__}"
                )
    for option, value in (("strip_prefix", strip_prefix), ("add_prefix", add_prefix)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{function}: {option} must be a str or None, got {type(value).__name__}")


def rename(
    params: Mapping[str, V],
    function: str,
    name_map: NameMap | None = None,
    strip_prefix: str | None = None,
    add_prefix: str | None = None,
    stacklevel: int = 2,
) -> tuple[dict[str, V], dict[str, str]]:
    """``params`` under new names, and ``{new name: name in params}``; unchanged when no option is given.

    Each name goes through three steps, in this order: ``strip_prefix`` is
    removed from the names that start with it (the others are kept), then
    ``add_prefix`` is put in front of every name, then ``name_map`` gives the
    final name (a dict maps the names it has as keys and keeps the others; a
    function maps every name; ``None`` drops the entry). Two entries that end
    with one name, or a name that ends empty, are a ``ValueError`` naming
    them; a ``name_map`` dict key that no name becomes, or a ``strip_prefix``
    that starts no name, is reported through :func:`notify` (``stacklevel``
    frames above the caller).
    """
    check_options(function, name_map, strip_prefix, add_prefix)
    if name_map is None and not strip_prefix and not add_prefix:
        return dict(params), {name: name for name in params}
    renamed: dict[str, V] = {}
    origin: dict[str, str] = {}
    stripped = 0
    seen: set[str] = set()  # the names name_map was given
    for name, value in params.items():
        new: Any = name
        if strip_prefix and new.startswith(strip_prefix):
            new = new[len(strip_prefix) :]
            stripped += 1
        if add_prefix:
            new = add_prefix + new
        seen.add(new)
        if isinstance(name_map, Mapping):
            new = name_map.get(new, new)
        elif name_map is not None:
            given = new
            new = name_map(given)
            if new is not None and not isinstance(new, str):
                raise TypeError(
                    f"{function}: name_map({given!r}) returned {type(new).__name__} ({new!r}); it must return the "
                    "new name (a str) or None to drop the entry"
                )
        if new is None:
            continue
        if not new:
            raise ValueError(
                f"{function}: the checkpoint name {name!r} becomes the empty name (strip_prefix={strip_prefix!r}, "
                "then name_map); give it a name in name_map, or None to drop it"
            )
        if new in origin:
            raise ValueError(
                f"{function}: the checkpoint names {origin[new]!r} and {name!r} both become {new!r} "
                f"(strip_prefix={strip_prefix!r}, add_prefix={add_prefix!r}, then name_map); map one of them "
                "elsewhere in name_map, or to None to drop it"
            )
        renamed[new] = value
        origin[new] = name
    notes = []
    if isinstance(name_map, Mapping):
        unknown = [key for key in name_map if key not in seen]
        if unknown:
            notes.append(
                f"{len(unknown)} name_map key(s) are no name of the checkpoint (after strip_prefix/add_prefix): "
                f"{shown(unknown)}"
            )
    if strip_prefix and not stripped:
        notes.append(f"strip_prefix={strip_prefix!r} starts none of its {len(params)} names")
    if notes:
        notify(f"{function}: {'; '.join(notes)} (its names: {shown(list(params))})", stacklevel + 1)
    return renamed, origin
