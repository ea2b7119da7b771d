"""A result that cannot be allocated is a ``ValueError`` at trace time, never a process abort.

XLA CPU's failed allocation of a result aborted the interpreter (``Check
failed: buffer_.IsConcrete()``, SIGABRT) when the lazy array was read. The
three primitives' abstract evaluation, which every entry point passes, checks
the result's size against ``validate.memory_limit()`` (the host's physical
memory on CPU, the devices' ``bytes_limit`` where a backend reports one) and
what XLA can address, and names the shape and the bytes.

Most checks here run under ``jax.eval_shape``: nothing is allocated, so a
regression fails the test instead of the machine. The issue's reproducer runs
eagerly, in a child process.
"""

from __future__ import annotations

import math
import os
import re

import jax
import jax.numpy as jnp
import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi import ops
from jax_conv_bpi._src.base import validate

from .support import run_child

LIMIT, _ = validate.memory_limit()


def _sds(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def _refused(call, *args) -> str:
    """The message of the ValueError ``jax.eval_shape(call, *args)`` raises."""
    with pytest.raises(ValueError) as err:
        jax.eval_shape(call, *args)
    return str(err.value)


def _names_shape_and_bytes(msg: str, shape: tuple[int, ...], itemsize: int = 4) -> None:
    assert str(shape) in msg, msg
    assert f"{math.prod(shape) * itemsize:,} bytes" in msg, msg
    assert "cannot be allocated" in msg and "memory" in msg, msg


def test_the_limit_is_at_least_this_machines_physical_memory():
    """On CPU the host's memory (no device of this backend reports a ``bytes_limit``)."""
    phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert LIMIT >= phys > 2**20
    if jax.default_backend() == "cpu":
        assert LIMIT == phys


# Each entry point with a result of several TB, and the channels-first shape the message names.
_TOO_LARGE = {
    "conv_transpose 1-D": (  # the longest axis the gate takes (2**31 - 1), 1000 channels
        lambda y, w: jcb.conv_transpose(y, w, 2**30, "VALID", output_padding=2**30 - 2),
        (_sds(1, 4, 2), _sds(4, 1000, 1)),
        (1, 1000, 2**31 - 1),
    ),
    "conv_transpose 2-D": (
        lambda y, w: jcb.conv_transpose(y, w, 10**6, "VALID"),
        (_sds(1, 1, 2, 2), _sds(1, 1, 1, 1)),
        (1, 1, 2 * 10**6 - 10**6 + 1, 2 * 10**6 - 10**6 + 1),
    ),
    "conv_transpose 3-D": (
        lambda y, w: jcb.conv_transpose(y, w, 10**4, "VALID", output_padding=9999),
        (_sds(1, 1, 1, 1, 1), _sds(1, 1, 1, 1, 1)),
        (1, 1, 10**4, 10**4, 10**4),
    ),
    "conv2d_backprop_input NHWC": (
        lambda d, w: jcb.conv2d_backprop_input(
            d, w, (1, 10**6, 1, 10**6), stride=(10**6, 1), pad_mode="valid", data_format="NHWC"
        ),
        (_sds(1, 1, 1, 1), _sds(1, 1, 1, 10**6)),
        (1, 10**6, 10**6, 1),
    ),
    "Conv2D forward": (
        lambda x, w: jcb.Conv2D(1, 1, pad_mode="pad", pad=10**6)(x, w),
        (_sds(1, 1, 1, 1), _sds(1, 1, 1, 1)),
        (1, 1, 2 * 10**6 + 1, 2 * 10**6 + 1),
    ),
    "ops.conv1d forward": (
        lambda x, w: ops.conv1d(x, w, pad_mode="pad", padding=2**30 - 1),
        (_sds(1, 1, 1), _sds(2000, 1, 1)),
        (1, 2000, 2**31 - 1),
    ),
    "ops.conv3d forward": (
        lambda x, w: ops.conv3d(x, w, pad_mode="pad", padding=10**4),
        (_sds(1, 1, 1, 1, 1), _sds(1, 1, 1, 1, 1)),
        (1, 1, 20001, 20001, 20001),
    ),
    "ops.conv3d_transpose": (
        lambda d, w: ops.conv3d_transpose(d, w, stride=10**4, pad_mode="valid"),
        (_sds(1, 1, 1, 1, 1), _sds(1, 1, 1, 1, 1)),
        (1, 1, 10**4, 10**4, 10**4),
    ),
    "conv2d_backprop_filter": (  # the weight gradient: a (1, 1, 10**6, 10**6) kernel of a large (abstract) input
        lambda d, x: jcb.conv2d_backprop_filter(d, x, (1, 1, 10**6, 10**6)),
        (_sds(1, 1, 1, 1), _sds(1, 1, 10**6, 10**6)),
        (1, 1, 10**6, 10**6),
    ),
}


@pytest.mark.parametrize("name", sorted(_TOO_LARGE))
def test_every_entry_point_refuses_a_result_too_large_at_trace_time(name):
    """Under ``jax.eval_shape`` and when ``jax.jit`` lowers it (nothing allocated either way)."""
    call, args, shape = _TOO_LARGE[name]
    assert math.prod(shape) * 4 > LIMIT  # the case is what it claims
    _names_shape_and_bytes(_refused(call, *args), shape)
    with pytest.raises(ValueError) as err:
        jax.jit(call).lower(*args)
    _names_shape_and_bytes(str(err.value), shape)


def test_the_primitives_refuse_what_xla_cannot_address():
    """More than 2**63 bytes, each primitive bound directly (the gates' per-dimension limit does not apply)."""
    big = 2**40
    assert big * big * 4 > validate.XLA_MAX_BYTES
    one = _sds(1, 1, 1, 1)
    geom = jcb.ConvGeometry(
        x_shape=(1, 1, big, big), w_shape=(1, 1, 1, 1), y_shape=(1, 1, 1, 1),
        stride=(big, big), dilation=(1, 1), padding=((0, 0), (0, 0)),
    )  # fmt: skip
    msg = _refused(lambda y, w: jcb.backprop_input_p.bind(y, w, geom=geom), one, one)
    _names_shape_and_bytes(msg, (1, 1, big, big))
    assert msg.startswith("conv_backprop_input: the result (the input, channels-first)"), msg
    padded = geom.replace(x_shape=(1, 1, 1, 1), y_shape=(1, 1, 2 * big + 1, 2 * big + 1), stride=(1, 1),
                          padding=((big, big), (big, big)))  # fmt: skip
    msg = _refused(lambda x, w: jcb.conv_p.bind(x, w, geom=padded), one, one)
    _names_shape_and_bytes(msg, (1, 1, 2 * big + 1, 2 * big + 1))
    assert msg.startswith("conv_forward: the result (the output (dout), channels-first)"), msg
    filt = geom.replace(w_shape=(1, 1, big, big), stride=(1, 1))
    msg = _refused(lambda y, x: jcb.backprop_filter_p.bind(y, x, geom=filt), one, _sds(1, 1, big, big))
    _names_shape_and_bytes(msg, (1, 1, big, big))
    assert msg.startswith("conv_backprop_filter: the result (the weight, channels-first)"), msg


def test_the_check_reads_the_result_dtype():
    """float16 halves the bytes: a result just above the limit in float32 fits in float16."""
    side = math.isqrt(LIMIT // 4)  # (side + 1)**2 elements: above the limit as float32, about half of it as float16

    def call(y, w):
        return jcb.conv_transpose(y, w, side, "VALID")  # y of 2 x 2 pixels: (side + 1) x (side + 1)

    assert 2 * (side + 1) ** 2 <= LIMIT < 4 * (side + 1) ** 2
    out = jax.eval_shape(call, _sds(1, 1, 2, 2, dtype=jnp.float16), _sds(1, 1, 1, 1, dtype=jnp.float16))
    assert out.shape == (1, 1, side + 1, side + 1) and out.dtype == jnp.float16
    _names_shape_and_bytes(_refused(call, _sds(1, 1, 2, 2), _sds(1, 1, 1, 1)), (1, 1, side + 1, side + 1))


def test_vmap_checks_the_batched_result_and_refuses_nothing_that_fits():
    """The batch rule re-binds on the full geometry: the check sees the batched shape."""
    side = math.isqrt(LIMIT // 4 // 8)  # one result of about 1/8 of the limit: 2 fit, 64 do not

    def one(y):
        return jcb.conv_transpose(y, jnp.ones((1, 1, 1, 1)), side, "VALID")

    out = jax.eval_shape(jax.vmap(one), _sds(2, 1, 1, 2, 2))
    assert out.shape == (2, 1, 1, side + 1, side + 1)
    msg = _refused(jax.vmap(one), _sds(64, 1, 1, 2, 2))
    _names_shape_and_bytes(msg, (64, 1, side + 1, side + 1))  # the vmapped axis folded into the batch N


def test_results_that_fit_are_computed():
    """The check costs nothing where the result fits (a large stride with a small input)."""
    out = jcb.conv2d_backprop_input(jnp.ones((1, 1, 1, 1)), jnp.ones((1, 1, 1, 1)), (1, 1, 3000, 3), stride=(3000, 3))
    assert out.shape == (1, 1, 3000, 3) and float(out.sum()) == 1.0


_REPRO = r"""
import jax.numpy as jnp
import jax_conv_bpi as jcb
try:
    r = jcb.conv2d_backprop_input(jnp.ones((1, 1, 1, 1)), jnp.ones((1, 1, 1, 1000000)), (1, 1000000, 1, 1000000),
                                  stride=(1000000, 1), pad_mode="valid", data_format="NHWC")
    print("RETURNED", np.asarray(r).shape)
except Exception as e:
    print("RAISED", type(e).__name__, e)
"""


def test_the_issues_reproducer_raises_instead_of_aborting():
    """Eagerly, as the user ran it: a ValueError, a clean exit, no SIGABRT (a negative return code)."""
    proc = run_child(_REPRO, 120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert proc.stdout.startswith("RAISED ValueError conv_backprop_input: "), proc.stdout
    assert "(1, 1000000, 1000000, 1)" in proc.stdout and "4,000,000,000,000 bytes" in proc.stdout, proc.stdout
    assert re.search(r"more than .*memory \([\d,]+ bytes\)", proc.stdout), proc.stdout


def test_the_limit_is_the_devices_memory_where_they_report_it(monkeypatch):
    """A GPU/TPU backend reports ``bytes_limit`` per device: the limit is their sum where it exceeds the host's."""

    class Device:
        platform = "gpu"

        def memory_stats(self):
            return {"bytes_limit": 10**15}

    monkeypatch.setattr(jax, "devices", lambda: [Device(), Device()])
    validate.memory_limit.cache_clear()
    try:
        limit, what = validate.memory_limit()
    finally:
        validate.memory_limit.cache_clear()  # the real devices' limit on the next call
    assert limit == 2 * 10**15 and what == "the memory of the 2 gpu device(s) together"
