"""The native kernels give the same bits on every call, whatever the scheduling and the worker count.

The weight gradients reduce over blocks of pixels that several workers take from a shared counter;
the kernels sum them in slots fixed by the plan, in slot order (``native/src/plan.h``), so the
result depends on neither which worker ran a block, nor when it finished, nor how many workers
there were. Checked on one program holding the weight and input gradients of every native path
(1-D, 2-D and 3-D; the direct stride-1 weight gradient, the im2col one, the grouped one; the
forward kernel through the input gradients), each large enough for several workers:

* 50 repeated calls give bitwise-identical results;
* 8 Python threads calling it at once all get the single call's bits;
* child processes restricted to 1 and to 2 cores (``os.sched_setaffinity``: the kernels' ``threads``
  attribute and XLA's thread pool follow the usable cores) give the same bits as each other;
* the kernels called with 1-8 workers (their ``threads`` attribute) give the same bits, the
  weight gradients and the forward kernels (whose blocks, and so their sgemms' shapes, are the
  geometry's alone);
* the results match the float64 references to float32 rounding.

Skipped, saying why, where the native kernels are off (``jcb.native_status()``).
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.native import kernels

from .support import assert_close, geometry_nd, random_arrays, ref_conv, ref_filter, ref_input_grad, requires_cpu

pytestmark = [
    requires_cpu,
    pytest.mark.skipif(not kernels.load()[0], reason=f"native kernel off here: {kernels.load()[1]}"),
]


def _conv(rank: int, **kwargs):
    op = {1: jcb.ops.conv1d, 2: jcb.ops.conv2d, 3: jcb.ops.conv3d}[rank]
    return lambda x, w: op(x, w, **kwargs)


def _transpose_2d(y, w):
    # the input gradient of the geometry's convolution: its weight gradient is the convolution's, with
    # conv_transpose's y as the convolution's dout and the cotangent as its x
    return jcb.conv_transpose(y, w, 2, [(1, 1), (1, 1)], output_padding=1)


# Each case: the convolution's geometry (x, w and y as the weight-gradient kernel sees them), the
# function of (operand, w) and which native weight-gradient kernel it takes. All above the kernels'
# 2**24 FLOPs, so that several workers share them.
_CASES: dict[str, tuple[ConvGeometry, object, str]] = {
    "1d_direct": (geometry_nd(1, 48, 48, (2000,), 7, padding=3), _conv(1, pad_mode="pad", padding=3), "direct"),
    "1d_im2col": (
        geometry_nd(8, 16, 32, (1200,), 5, stride=2, padding=2),
        _conv(1, stride=2, pad_mode="pad", padding=2),
        "im2col",
    ),
    "2d_direct": (geometry_nd(4, 32, 32, (32, 32), 3, padding=1), _conv(2, pad_mode="pad", padding=1), "direct"),
    "2d_im2col": (
        geometry_nd(8, 16, 32, (64, 64), 3, stride=2, padding=1),
        _conv(2, stride=2, pad_mode="pad", padding=1),
        "im2col",
    ),
    "2d_conv_transpose": (geometry_nd(8, 16, 32, (48, 48), 3, stride=2, padding=1), _transpose_2d, "im2col"),
    "2d_depthwise": (
        geometry_nd(8, 64, 64, (48, 48), 3, padding=1, group=64),
        _conv(2, pad_mode="pad", padding=1, groups=64),
        "grouped",
    ),
    "3d_direct": (geometry_nd(2, 16, 16, (8, 16, 16), 3, padding=1), _conv(3, pad_mode="pad", padding=1), "direct"),
    "3d_im2col": (
        geometry_nd(4, 8, 16, (16, 16, 32), 3, stride=2, padding=1),
        _conv(3, stride=2, pad_mode="pad", padding=1),
        "im2col",
    ),
}
_TRANSPOSED = {"2d_conv_transpose"}  # fed the geometry's y (and its x as the cotangent)


def _operands(cid: str, seed: int) -> dict[str, np.ndarray]:
    g = _CASES[cid][0]
    x, w, y = random_arrays(seed, g.x_shape, g.w_shape, g.y_shape, dtype=np.float32)
    return {"x": y, "w": w, "ct": x} if cid in _TRANSPOSED else {"x": x, "w": w, "ct": y}


def _data() -> dict[str, dict[str, np.ndarray]]:
    return {cid: _operands(cid, k) for k, cid in enumerate(_CASES)}


def _gradients(data):
    """Per case, the gradients of sum(f(x, w) * ct) with respect to x and w, one program for all."""

    def loss(x, w, ct, f):
        return jnp.sum(f(x, w) * ct)

    return {cid: jax.grad(loss, argnums=(0, 1))(d["x"], d["w"], d["ct"], _CASES[cid][1]) for cid, d in data.items()}


_PROGRAM = jax.jit(_gradients)


def _run() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return jax.device_get(_PROGRAM(_DATA))


_DATA = _data()


def _assert_same_bits(got, want, what: str) -> None:
    for cid in _CASES:
        for name, a, b in zip(("dx", "dw"), got[cid], want[cid]):
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape, f"{what}, {cid} {name}"
            differ = int(np.count_nonzero(a.view(np.uint32) != b.view(np.uint32)))
            assert differ == 0, f"{what}, {cid} {name}: {differ} of {a.size} values differ in their bits"


def test_the_cases_take_every_native_weight_gradient():
    """Each case's weight gradient is a native kernel's custom call, of the kind the case names."""
    direct = kernels.direct(_CASES["2d_direct"][0], "weight_grad")  # False on CPUs without AVX-512
    for cid, (g, _, kind) in _CASES.items():
        assert jcb.cpu_paths(g, "float32")["backprop_filter"] == "native", cid
        assert 2 * np.prod(g.w_shape) * np.prod(g.y_shape) // g.y_shape[1] >= 1 << 24, cid  # several workers
        if kind != "grouped":
            assert kernels.direct(g, "weight_grad") == (direct and kind == "direct"), cid
    text = _PROGRAM.lower(_DATA).as_text()
    assert text.count(kernels.TARGET) == sum(kind != "grouped" for *_, kind in _CASES.values())
    assert text.count(kernels.GROUPED_TARGET) == 1
    assert text.count(kernels.FORWARD_TARGET) >= 3  # stride-1 input gradients by the forward kernel


def test_results_match_the_reference():
    got = _run()
    for cid, (g, _, _) in _CASES.items():
        d = {k: np.asarray(v, np.float64) for k, v in _DATA[cid].items()}
        dx, dw = got[cid]
        if cid in _TRANSPOSED:  # x is the convolution's y, ct its x
            assert_close(dx, ref_conv(g, d["ct"], d["w"]), f"{cid} dx", scale_atol=2e-5)
            assert_close(dw, ref_filter(g, d["x"], d["ct"]), f"{cid} dw", scale_atol=2e-5)
        else:
            assert_close(dx, ref_input_grad(g, d["ct"], d["w"]), f"{cid} dx", scale_atol=2e-5)
            assert_close(dw, ref_filter(g, d["ct"], d["x"]), f"{cid} dw", scale_atol=2e-5)


def test_repeated_calls_give_the_same_bits():
    first = _run()
    for k in range(49):
        _assert_same_bits(_run(), first, f"call {k + 2} of 50")


def test_concurrent_threads_give_the_same_bits():
    """8 Python threads run the program at once (XLA's pool shared among them): each gets the single call's bits."""
    single = _run()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        outs = list(pool.map(lambda _: _run(), range(24)))
    for k, got in enumerate(outs):
        _assert_same_bits(got, single, f"thread call {k}")


@pytest.mark.parametrize("kind", ["direct", "im2col", "grouped"])
def test_any_worker_count_gives_the_same_bits(kind):
    """The kernels' ``threads`` attribute (the most workers) changes nothing in the result."""
    call = kernels.grouped_weight_grad if kind == "grouped" else kernels.conv_weight_grad
    for cid, (g, _, case_kind) in _CASES.items():
        if case_kind != kind or cid in _TRANSPOSED:
            continue
        d = _DATA[cid]
        outs = {
            t: np.asarray(jax.jit(lambda a, b, t=t, g=g: call(a, b, geom=g, threads=t))(d["ct"], d["x"]))
            for t in (1, 2, 3, 5, 8)
        }
        for t, out in outs.items():
            differ = int(np.count_nonzero(out.view(np.uint32) != outs[1].view(np.uint32)))
            assert differ == 0, f"{cid}: {t} workers against 1: {differ} of {out.size} values differ in their bits"


# Forward kernels at several worker counts: strided 3-D through the patches (whose sgemms OpenBLAS
# rounded differently when their width followed the workers), 1-D through the patches, a direct
# 2-D one and a grouped one.
_FORWARD = {
    "3d_im2col": (geometry_nd(2, 32, 32, (16, 32, 32), 3, stride=2, padding=1), kernels.conv_forward),
    "1d_im2col": (geometry_nd(8, 64, 64, (3000,), 9, stride=2, padding=4), kernels.conv_forward),
    "2d_direct": (_CASES["2d_direct"][0], kernels.conv_forward),
    "2d_grouped": (_CASES["2d_depthwise"][0], kernels.grouped_forward),
}


@pytest.mark.parametrize("cid", sorted(_FORWARD))
def test_the_forward_kernels_at_any_worker_count(cid):
    g, call = _FORWARD[cid]
    assert 2 * np.prod(g.w_shape) * np.prod(g.y_shape) // g.y_shape[1] >= 1 << 24  # several workers
    x, w = random_arrays(3, g.x_shape, g.w_shape, dtype=np.float32)
    outs = {t: np.asarray(jax.jit(lambda a, b, t=t: call(a, b, geom=g, threads=t))(x, w)) for t in (1, 2, 3, 5, 8)}
    for t, out in outs.items():
        differ = int(np.count_nonzero(out.view(np.uint32) != outs[1].view(np.uint32)))
        assert differ == 0, f"{cid}: {t} workers against 1: {differ} of {out.size} values differ in their bits"
    assert_close(outs[1], ref_conv(g, x.astype(np.float64), w), cid, scale_atol=2e-5)


_CHILD = textwrap.dedent(
    """
    import os, sys
    os.sched_setaffinity(0, {cores})  # before jax starts: XLA's pool and the kernels' workers follow it
    import numpy as np
    from jax_conv_bpi._src.native import kernels
    from tests import test_native_determinism as t
    got = t._run()
    np.savez(sys.argv[1], threads=kernels._threads(),
             **{{f"{{cid}}.{{i}}": np.asarray(v) for cid, pair in got.items() for i, v in enumerate(pair)}})
    """
)


def _usable_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []


@pytest.mark.skipif(len(_usable_cores()) < 2, reason="needs 2 usable cores (os.sched_getaffinity) to compare 1 and 2")
def test_child_processes_on_one_and_two_cores_give_the_same_bits(tmp_path):
    root = Path(__file__).resolve().parents[1]
    results = {}
    for count in (1, 2):
        cores = set(_usable_cores()[:count])
        path = tmp_path / f"{count}.npz"
        code = _CHILD.format(cores=cores)
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=root, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        with np.load(path) as f:
            assert int(f["threads"]) == count, f"the child on {count} cores ran {int(f['threads'])} workers"
            results[count] = {cid: (f[f"{cid}.0"], f[f"{cid}.1"]) for cid in _CASES}
    _assert_same_bits(results[2], results[1], "2 cores against 1")
    if len(_usable_cores()) == 2:  # this process runs as the 2-core child did
        _assert_same_bits(_run(), results[2], "this process against the 2-core child")
