"""A Flax NNX module's variables under MindSpore's parameter names.

:func:`parameters_dict` lists them, :func:`load_param_into_net` assigns a
checkpoint's arrays to them with MindSpore's matching and conversion rules;
:func:`named_variables` is the traversal both (and ``save_checkpoint``) use.
The naming rules are in the overview of
:mod:`jax_conv_bpi._src.mindspore.checkpoint.api`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jax_conv_bpi._src.mindspore.checkpoint import dtypes, optional

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
        if not (isinstance(value, str) or dtypes.is_array_like(value)):
            raise TypeError(
                f"load_param_into_net: params[{key!r}] must be an array or a str, got {type(value).__name__}"
            )
    source = getattr(params, "source", "")
    where = f"the checkpoint {source!r}" if source else "params"

    named = named_variables(module)
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
        _conformed(name, get_value(variable), params[key], key, where, strict_load) for name, variable, key in plan
    ]
    import jax

    for (_, variable, _), value in zip(plan, values):
        old = get_value(variable)
        if isinstance(old, jax.Array):
            value = jax.device_put(value, old.sharding)
        elif not isinstance(old, np.ndarray):  # e.g. jax.ShapeDtypeStruct of an nnx.eval_shape module
            value = jax.numpy.asarray(value)
        _set_value(variable, value)
    return param_not_load, ckpt_not_load


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
