"""A Flax NNX module's variables under MindSpore's parameter names.

:func:`parameters_dict` lists them, :func:`load_param_into_net` assigns a
checkpoint's arrays to them with MindSpore's matching and conversion rules;
:func:`named_variables` is the traversal both (and ``save_checkpoint``) use.
The naming rules are in the overview of
:mod:`jax_conv_bpi._src.mindspore.checkpoint.api`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jax_conv_bpi._src.mindspore.checkpoint import dtypes, names, optional

__all__ = ["get_value", "load_param_into_net", "named_variables", "parameters_dict"]

# load_param_into_net(strict_load=False) converts between two dtypes of one of these groups, as MindSpore's
# _type_convert does (unsigned integers and bool are never converted).
_FLOAT_GROUP = ("float16", "float32", "float64", "bfloat16")
_INT_GROUP = ("int8", "int16", "int32", "int64")


# ---------------------------------------------------------------------------
# Module traversal
# ---------------------------------------------------------------------------


def get_value(variable):
    return variable.get_value() if hasattr(variable, "get_value") else variable.value


def _set_value(variable, value) -> None:
    if hasattr(variable, "set_value"):
        variable.set_value(value)
    else:  # flax < 0.12
        variable.value = value


def named_variables(module) -> list[tuple[str, Any]]:
    """``(name, nnx.Variable)`` pairs in MindSpore's ``parameters_and_names()`` order (see the api module)."""
    nnx = optional.nnx()
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
    nnx = optional.nnx()
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
    return {name: np.asarray(get_value(variable)) for name, variable in named_variables(module)}


# ---------------------------------------------------------------------------
# Loading into a module
# ---------------------------------------------------------------------------


def load_param_into_net(
    module,
    params: Mapping[str, Any],
    strict_load: bool = False,
    *,
    strict: bool = False,
    name_map: Mapping[str, str | None] | Callable[[str], str | None] | None = None,
    strip_prefix: str | None = None,
    add_prefix: str | None = None,
) -> tuple[list[str], list[str]]:
    """Assign ``params`` (e.g. from :func:`load_checkpoint`) to a module's variables by name, as MindSpore does.

    Returns MindSpore's ``(param_not_load, ckpt_not_load)``: the names of the
    module's variables that got no value (in the module's order), and the
    names in ``params`` that matched no variable (in ``params``' order, as
    spelled in ``params``). Names are those of :func:`parameters_dict`:
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

    A mismatch is never silent: when a variable is not loaded or an entry is
    not used, a ``UserWarning`` and a WARNING record of the ``jax_conv_bpi``
    logger name both lists (the first names of each, with their counts).
    ``strict=True`` (as PyTorch's ``load_state_dict(strict=True)``) makes it a
    ``ValueError`` naming the missing and the unexpected names instead, and
    loads nothing. ``strict`` and ``strict_load`` are independent.

    Names that differ: ``strip_prefix``, ``add_prefix`` and ``name_map``
    rename the entries of ``params`` before matching, in this order:
    ``strip_prefix`` is removed from the names that start with it (the others
    are kept), then ``add_prefix`` is put in front of every name, then
    ``name_map`` gives the final name: a dict ``{name: module's name}`` maps
    the names it has as keys (spelled after the prefix options) and keeps the
    others; a function of a name returns its new name; ``None`` as the new
    name drops the entry, which is then not reported as unused. Two entries
    renamed to one name are a ``ValueError``; a ``name_map`` key that no name
    becomes, or a ``strip_prefix`` that starts no name, gives a warning.
    ``ckpt_not_load`` and the messages keep the names of ``params``.
    :func:`load_checkpoint` takes the same three options.

    Any other shape or dtype mismatch raises ``ValueError`` naming the parameter,
    both shapes and dtypes and the checkpoint file (MindSpore raises
    RuntimeError). Everything is checked before anything is assigned, so an
    error leaves the module unchanged. A value keeps the sharding of the array
    it replaces. Deliberate differences from MindSpore: a name loaded through
    the prefix rule is not listed in ``ckpt_not_load`` (MindSpore still lists
    it), a ``str`` entry whose name matches a variable is an error (MindSpore
    skips it silently, reporting it nowhere), and the warning also names the
    unused entries (MindSpore logs only the count and names of the variables).

    Example (the spec's: one name matches, one variable missing, one extra entry):
      >>> import warnings
      >>> import numpy as np
      >>> from flax import nnx
      >>> import jax_conv_bpi as jcb
      >>> class Net(nnx.Module):
      ...     def __init__(self):
      ...         self.body = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
      ...         self.head = nnx.Linear(3, 1, use_bias=False, rngs=nnx.Rngs(1))
      >>> net = Net()
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     jcb.load_param_into_net(net, {"body.0.bias": np.ones(3, np.float32), "foo": np.zeros(2)})
      (['body.0.kernel', 'head.kernel'], ['foo'])
      >>> print(caught[0].message)  # doctest: +ELLIPSIS
      load_param_into_net: 2 of the module's 3 variables were not loaded (they keep their values): ['body.0.kernel', 'head.kernel']; 1 of the 2 entries of params were not used: ['foo']. ...
      >>> net.body.layers[0].bias[...]
      Array([1., 1., 1.], dtype=float32)

    A checkpoint of a wrapped network, under other names (``strict=True``:
    every variable must be loaded and every entry used):
      >>> saved = {"network.layer.0.bias": np.zeros(3, np.float32), "network.layer.0.kernel": np.ones((2, 3)),
      ...          "network.head.kernel": np.ones((3, 1), np.float32), "global_step": np.array(7)}
      >>> rename = {"layer.0.bias": "body.0.bias", "layer.0.kernel": "body.0.kernel", "global_step": None}
      >>> jcb.load_param_into_net(net, saved, strict=True, strip_prefix="network.", name_map=rename)
      ([], [])
      >>> float(net.head.kernel[...].sum())
      3.0
    """
    function = "load_param_into_net"
    _check_module(module, function)
    if not isinstance(params, Mapping):
        raise TypeError(f"{function}: params must be a dict of name -> array, got {type(params).__name__}")
    for option, value in (("strict_load", strict_load), ("strict", strict)):
        if not isinstance(value, bool):
            raise TypeError(f"{function}: {option} must be a bool, got {type(value).__name__}")
    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"{function}: the names in params must be str, got {type(key).__name__}")
        if not (isinstance(value, str) or dtypes.is_array_like(value)):
            raise TypeError(f"{function}: params[{key!r}] must be an array or a str, got {type(value).__name__}")
    source = getattr(params, "source", "")
    where = f"the checkpoint {source!r}" if source else "params"
    entries, origin = names.rename(params, function, name_map, strip_prefix, add_prefix, stacklevel=2)

    named = named_variables(module)
    plan: list[tuple[str, Any, str]] = []  # (variable name, variable, renamed key)
    param_not_load: list[str] = []
    for name, variable in named:
        if name in entries:
            plan.append((name, variable, name))
        else:
            param_not_load.append(name)
    if param_not_load and not strict_load:
        found = _prefix_matches(named, param_not_load, entries)
        if found:
            prefixes = sorted({key[: -len(name)] for name, _, key in found})
            names.LOGGER.info("%s: loaded %d variables through the prefix(es) %s", function, len(found), prefixes)
        plan += found
    used = {key for _, _, key in plan}
    ckpt_not_load = [origin[key] for key in entries if key not in used]

    if strict and (param_not_load or ckpt_not_load):
        raise ValueError(
            f"{function}(strict=True): the module and {where} do not match, nothing was loaded: "
            f"missing (variables with no entry, {len(param_not_load)}): {names.shown(param_not_load, 20)}; "
            f"unexpected (entries matching no variable, {len(ckpt_not_load)}): {names.shown(ckpt_not_load, 20)}. "
            f"{_RENAME_HINT}"
        )
    values = [
        _conformed(name, get_value(variable), entries[key], _entry(key, origin, where), strict_load)
        for name, variable, key in plan
    ]
    import jax

    for (_, variable, _), value in zip(plan, values):
        old = get_value(variable)
        if isinstance(old, jax.Array):
            value = jax.device_put(value, old.sharding)
        elif not isinstance(old, np.ndarray):  # e.g. jax.ShapeDtypeStruct of an nnx.eval_shape module
            value = jax.numpy.asarray(value)
        _set_value(variable, value)
    if param_not_load or ckpt_not_load:
        names.notify(_mismatch(function, where, len(named), param_not_load, len(entries), ckpt_not_load), 2)
    return param_not_load, ckpt_not_load


_RENAME_HINT = (
    "If the names differ by a prefix or a renaming, pass strip_prefix=, add_prefix= or name_map= (a dict or a "
    "function; None drops an entry)"
)


def _entry(key: str, origin: Mapping[str, str], where: str) -> str:
    """An entry as error messages name it: its name in ``params``, and its new name when renamed."""
    renamed = "" if origin[key] == key else f" (renamed {key!r})"
    return f"{origin[key]!r}{renamed} in {where}"


def _mismatch(function: str, where: str, n_variables: int, missing: list[str], n_entries: int, unused: list[str]):
    """The warning's text: what was not loaded, what was not used, and how to fix or silence it."""
    parts = []
    if missing:
        parts.append(
            f"{len(missing)} of the module's {n_variables} variables were not loaded (they keep their values): "
            f"{names.shown(missing)}"
        )
    else:
        parts.append(f"all {n_variables} variables of the module were loaded")
    if unused:
        parts.append(f"{len(unused)} of the {n_entries} entries of {where} were not used: {names.shown(unused)}")
    return (
        f"{function}: {'; '.join(parts)}. {_RENAME_HINT}; strict=True makes a mismatch an error. "
        "The two lists are the return value (param_not_load, ckpt_not_load)."
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


def _conformed(name: str, old, new, entry: str, strict_load: bool) -> np.ndarray:
    """``new`` (the ``entry`` of a checkpoint) as an array of ``old``'s shape and dtype under MindSpore's rules."""
    old_shape, old_dtype = tuple(old.shape), np.dtype(old.dtype)
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
