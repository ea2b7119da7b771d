"""MindSpore's parameter initialisers for the ``nn`` layers, drawn with JAX's random numbers.

MindSpore's random streams cannot be reproduced; its distributions can
(MindSpore 2.10's, checked against statistics of its initialised
parameters in the golden tests):

* ``None`` (the default) draws ``U(-b, b)`` with ``b = 1 / sqrt(fan_in)`` for the
  weight (MindSpore's ``HeUniform(negative_slope=sqrt(5))``) and the **same**
  ``b`` for the bias. ``fan_in = weight.shape[1] * prod(weight.shape[2:])`` on
  MindSpore's weight layout, so for the transposed layers it counts
  ``C_out / group`` (a MindSpore quirk, kept).
* A name, looked up lower-cased (``'Normal'`` and ``'NORMAL'`` are ``'normal'``),
  without stripping spaces; the table ``_NAMED`` below.
* A number (``bool`` included): that constant.
* An array (JAX or NumPy) of the parameter's shape; the 1-D layers take a 3-D
  weight array and insert MindSpore's unit axis.
* A JAX initializer, ``init(key, shape, dtype) -> array`` (``jax.nn.initializers``).

Values are drawn in float32 and then cast to the parameter dtype, as MindSpore
does for float16 layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_conv_bpi._src.base.validate import is_array

__all__ = ["Init", "initial_value"]

Init = None | str | float | int | bool | jax.Array | np.ndarray | Callable[..., Any]


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _uniform(key, shape, bound):
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _normal(key, shape, std):
    return std * jax.random.normal(key, shape, jnp.float32)


def _orthogonal(key, shape, _fan_in, _fan_out):
    flat = (shape[0], math.prod(shape[1:]))
    return jax.nn.initializers.orthogonal()(key, flat, jnp.float32).reshape(shape)


def _dirac(_key, shape, _fan_in, _fan_out):
    w = np.zeros(shape, np.float32)
    centre = tuple(k // 2 for k in shape[2:])
    for i in range(min(shape[0], shape[1])):
        w[(i, i, *centre)] = 1.0
    return jnp.asarray(w)


# name -> (needs a fan, draw(key, shape, fan_in, fan_out) in float32)
_NAMED: dict[str, tuple[bool, Callable[..., jax.Array]]] = {
    "zeros": (False, lambda k, s, fi, fo: jnp.zeros(s, jnp.float32)),
    "ones": (False, lambda k, s, fi, fo: jnp.ones(s, jnp.float32)),
    "normal": (False, lambda k, s, fi, fo: _normal(k, s, 0.01)),
    "uniform": (False, lambda k, s, fi, fo: _uniform(k, s, 0.07)),
    # N(0, 0.01^2) truncated to the absolute interval [-2, 2] (200 sigma: in effect untruncated)
    "truncatednormal": (False, lambda k, s, fi, fo: 0.01 * jax.random.truncated_normal(k, -200.0, 200.0, s)),
    "xavier_uniform": (True, lambda k, s, fi, fo: _uniform(k, s, math.sqrt(6.0 / (fi + fo)))),
    "xavier_normal": (True, lambda k, s, fi, fo: _normal(k, s, math.sqrt(2.0 / (fi + fo)))),
    "he_uniform": (True, lambda k, s, fi, fo: _uniform(k, s, math.sqrt(6.0 / fi))),
    "he_normal": (True, lambda k, s, fi, fo: _normal(k, s, math.sqrt(2.0 / fi))),
    # quirk variance_scaling_default_samples_uniform: MindSpore's default branch samples U(-a, a)
    "variancescaling": (True, lambda k, s, fi, fo: _uniform(k, s, math.sqrt(3.0 / fi))),
    "orthogonal": (True, _orthogonal),
    "dirac": (True, _dirac),
}
_ALIASES = {
    "zero": "zeros",
    "one": "ones",
    "xavieruniform": "xavier_uniform",
    "xaviernormal": "xavier_normal",
    "heuniform": "he_uniform",
    "henormal": "he_normal",
}
NAMES = tuple(sorted([*_NAMED, *_ALIASES]))


def initial_value(
    op: str,
    name: str,
    init: Any,
    shape: tuple[int, ...],
    dtype: Any,
    key: jax.Array,
    *,
    default_bound: float,
    array_shape: tuple[int, ...] | None = None,
) -> jax.Array:
    """The initial value of parameter ``name`` (``weight`` / ``bias``) of layer ``op``.

    ``default_bound``: ``b`` of the default ``U(-b, b)``. ``array_shape``: the
    shape an array ``init`` must have when it differs from ``shape`` (the 1-D
    layers' 3-D weight); such an array is reshaped to ``shape``.
    """
    arg = f"{name}_init"
    if init is None:
        value = _uniform(key, shape, default_bound)
    elif isinstance(init, str):
        value = _named(op, arg, init, shape, key)
    elif isinstance(init, (bool, int, float, np.integer, np.floating)):
        value = jnp.full(shape, float(init), jnp.float32)
    elif is_array(init):
        want = array_shape or shape
        if tuple(init.shape) != want:
            extra = ""
            if array_shape is not None and tuple(init.shape) == shape:
                extra = f" (this layer takes the {len(want)}-D weight without MindSpore's unit axis)"
            raise ValueError(f"{op}: '{arg}' must have shape {want}, got an array of shape {tuple(init.shape)}{extra}")
        if (
            not jnp.issubdtype(init.dtype, jnp.floating)
            and init.dtype != np.bool_
            and not np.issubdtype(init.dtype, np.integer)
        ):
            raise TypeError(f"{op}: '{arg}' must be a real array, got dtype {init.dtype}")
        return jnp.asarray(init).reshape(shape).astype(dtype)
    elif callable(init):
        value = jnp.asarray(init(key, shape, jnp.float32))
        if value.shape != shape:
            raise ValueError(f"{op}: '{arg}' (a callable) returned shape {value.shape}, expected {shape}")
    else:
        raise TypeError(
            f"{op}: '{arg}' must be None, an initializer name, a number, a JAX/NumPy array or a JAX initializer "
            f"callable, got {type(init).__name__}"
        )
    return value.astype(dtype)


def _named(op: str, arg: str, init: str, shape: tuple[int, ...], key: jax.Array) -> jax.Array:
    lowered = init.lower()
    lowered = _ALIASES.get(lowered, lowered)
    if lowered == "identity":
        raise ValueError(f"{op}: '{arg}'={init!r}: the identity initializer only fills 2-D tensors, got shape {shape}")
    if lowered == "sparse":
        raise TypeError(f"{op}: '{arg}'={init!r}: the sparse initializer needs a sparsity; pass an array instead")
    if lowered not in _NAMED:
        raise ValueError(
            f"{op}: '{arg}'={init!r} is not an initializer name; known (any letter case, no spaces): {', '.join(NAMES)}"
        )
    needs_fan, draw = _NAMED[lowered]
    if needs_fan and len(shape) < 2:
        raise ValueError(
            f"{op}: '{arg}'={init!r} needs fan_in / fan_out, which a {len(shape)}-D parameter of shape {shape} does "
            f"not have; use 'zeros', 'ones', 'normal', 'uniform', 'truncatednormal', a number or an array"
        )
    fan_in, fan_out = _fans(shape) if len(shape) >= 2 else (0, 0)
    return draw(key, shape, fan_in, fan_out)
