"""The optional native CPU kernels (the ``[native]`` extra) and the gate around them.

* the kernels themselves against the float64 references, ranks 1-3, on the
  ungrouped cases of ``support.ND_CASES`` and 2-D layers of the benchmark's
  kinds, with blocks small enough to take every way through them (whole
  samples packed side by side, one sgemm per sample, one sample split into
  output lines, one line per block; the forward's 1x1 input read in place),
  and larger problems shared by 1-5 workers: the weight gradient, the forward
  convolution, and the stride-1 input gradient as the forward of the flipped
  correlation;
* the dispatcher: a plain ``jax.jit`` of an ungrouped float32 convolution and
  of its gradients carries their custom calls, and ``grad``/``vmap`` through
  the library's ops still match the references; bfloat16, groups,
  ``jax.export`` and programs over several devices stay pure XLA;
* the plugin, in child processes: with no compiler on the ``PATH`` the
  kernels still load and run (nothing is compiled at run time); ``JCB_NATIVE=0``,
  a plugin that is not installed and one built for another jaxlib leave every
  program pure XLA and its results unchanged, the last with one warning.

The kernel tests skip, saying why, where the kernels are off (the
``jax_conv_bpi_native`` plugin not installed, no ``scipy-openblas32``:
``jcb.native_status()``); the gate and fallback tests run everywhere.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
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
from jax_conv_bpi._src.lowering import cpu_input_grad, dispatch
from jax_conv_bpi._src.native import kernels, rules

from .support import (
    ND_CASES,
    assert_close,
    geometry_nd,
    random_arrays,
    ref_conv,
    ref_filter,
    ref_input_grad,
    requires_cpu,
)

pytestmark = requires_cpu

needs_kernel = pytest.mark.skipif(not kernels.load()[0], reason=f"native kernel off here: {kernels.load()[1]}")

# 2-D layers of the benchmark's kinds, small: (n, c_in, c_out, spatial, kernel, stride, dilation, padding)
_TWO_D = {
    "s1_same_k3": geometry_nd(3, 5, 4, (40, 40), 3, padding=1),  # >= 1024 pixels per sample, contiguous runs
    "s1_same_d2": geometry_nd(2, 3, 6, (9, 33), 3, dilation=2, padding=2),
    "s2_k4_p1": geometry_nd(4, 6, 3, (12, 10), 4, stride=2, padding=1),
    "s5_gather": geometry_nd(2, 3, 2, (11, 23), (2, 3), stride=(2, 5), padding=((1, 0), (2, 2))),
    "k1_s1": geometry_nd(2, 7, 5, (6, 8), 1),
    "valid_crop": geometry_nd(1, 4, 4, (10, 12), 3, padding=((0, -1), (1, -2))),
    "k7_s2_p3": geometry_nd(2, 3, 8, (20, 20), 7, stride=2, padding=3),
}

_GRID = {
    **{f"1d_{cid}": c.geom for cid, c in ND_CASES[1].items() if c.geom.group == 1},
    **{f"2d_{cid}": g for cid, g in _TWO_D.items()},
    **{f"3d_{cid}": c.geom for cid, c in ND_CASES[3].items() if c.geom.group == 1},
}

# Scratch bounds: one line per block; a few lines or a sample; the default (many samples per block).
_BLOCKS = {"one_line": 4, "4KiB": 1 << 12, "default": kernels.BLOCK_BYTES}


def _data(geom: ConvGeometry, seed: int):
    return random_arrays(seed, geom.y_shape, geom.x_shape, dtype=np.float32)


# Each kernel's operands and float64 reference, by what it computes.
_ROLES = {
    "forward": (lambda g: (g.x_shape, g.w_shape), ref_conv),
    "input_grad": (lambda g: (g.y_shape, g.w_shape), ref_input_grad),
    "filter": (lambda g: (g.y_shape, g.x_shape), ref_filter),
}


def _check_kernel(kernel, grid: dict, role: str, what: str, **kwargs):
    """``kernel(a, b, geom=g, **kwargs)`` on every geometry of ``grid`` in one jitted program, against the reference."""
    shapes, reference = _ROLES[role]
    data = {cid: random_arrays(k, *shapes(g), dtype=np.float32) for k, (cid, g) in enumerate(grid.items())}
    program = jax.jit(lambda args: {cid: kernel(a, b, geom=grid[cid], **kwargs) for cid, (a, b) in args.items()})
    outs = jax.device_get(program(data))
    for cid, g in grid.items():
        a, b = (np.asarray(v, np.float64) for v in data[cid])
        assert_close(outs[cid], reference(g, a, b), f"{cid}, {what}", scale_atol=2e-5)


@needs_kernel
@pytest.mark.parametrize("block", sorted(_BLOCKS))
def test_kernel_matches_the_reference(block):
    _check_kernel(kernels.conv_weight_grad, _GRID, "filter", f"block {block}", block_bytes=_BLOCKS[block])


# Problems above the kernel's kMinParallelFlops (2**24), so several workers share them: whole samples
# packed per block, one sgemm per sample, one sample's lines split among the workers, 3-D.
_PARALLEL = {
    "packed": geometry_nd(64, 32, 16, (14, 14), 3, padding=1),
    "per_sample": geometry_nd(6, 16, 16, (40, 40), 3, padding=1),
    "one_sample": geometry_nd(1, 16, 16, (64, 64), 3, padding=1),
    "3d": geometry_nd(2, 8, 8, (10, 24, 24), 3, stride=(1, 2, 1), padding=1),
}


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("block", ["4KiB", "default"])
def test_workers_share_the_blocks(threads, block):
    """Any number of workers, fewer or more than the blocks, sums to the reference."""
    for cid, g in _PARALLEL.items():
        flops = 2 * np.prod(g.w_shape) * np.prod(g.y_shape) // g.y_shape[1]
        assert flops >= 1 << 24, cid  # large enough to be shared
    what = f"{threads} workers, block {block}"
    _check_kernel(kernels.conv_weight_grad, _PARALLEL, "filter", what, block_bytes=_BLOCKS[block], threads=threads)


@needs_kernel
@pytest.mark.parametrize("block", sorted(_BLOCKS))
def test_forward_kernel_matches_the_reference(block):
    """The forward convolution on the grid, whole and with every block size; the 1x1 cases read x in place."""
    _check_kernel(kernels.conv_forward, _GRID, "forward", f"block {block}", block_bytes=_BLOCKS[block])


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_forward_workers_share_the_blocks(threads):
    _check_kernel(kernels.conv_forward, _PARALLEL, "forward", f"{threads} workers", threads=threads)


# Grouped with few channels per group (the grouped weight-gradient kernel): the grouped cases of
# support.ND_CASES, 2-D depthwise under each stride case, and one large enough for several workers.
_GROUPED = {
    **{f"{r}d_{cid}": c.geom for r in (1, 3) for cid, c in ND_CASES[r].items() if c.geom.group > 1},
    "2d_depthwise_s2": geometry_nd(3, 6, 6, (13, 12), 3, stride=2, padding=1, group=6),
    "2d_multiplier_s1_d2": geometry_nd(2, 4, 8, (9, 17), 3, dilation=2, padding=((2, 1), (2, 2)), group=4),
    "2d_s3_crop": geometry_nd(2, 6, 3, (11, 16), (2, 3), stride=3, padding=((1, -1), (0, 2)), group=3),
    "2d_depthwise_parallel": geometry_nd(8, 64, 64, (48, 48), 3, padding=1, group=64),  # 21 MFLOP
}


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_grouped_forward_kernel(threads):
    _check_kernel(kernels.grouped_forward, _GROUPED, "forward", f"{threads} workers", threads=threads)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_grouped_weight_gradient_kernel(threads):
    assert {s for g in _GROUPED.values() for s in g.stride} >= {1, 2, 3}
    assert any(g.ndim == 3 for g in _GROUPED.values()) and any(g.ndim == 1 for g in _GROUPED.values())
    _check_kernel(kernels.grouped_weight_grad, _GROUPED, "filter", f"{threads} workers", threads=threads)


# Stride-1 layers the kernels compute directly on AVX-512 CPUs (DirectFits, DirectGradFits). The
# forward: lines of one vector (16 output channels per register block, 13 of them used) and of 2 + 1
# vectors (blocks of 14 for 27 channels: a full and a partial block; of 12 for 12 channels), input
# channels in 3 chunks (70 x 3 x 40 floats of input lines). The weight gradient (16 input channels or more): 70, 33 and 20 input
# channels (5, 3 and 2 vectors: blocks of 2 and of 1, padded lanes), 7, 9, 12 and 48 output channels
# (partial and whole blocks of 12). Both: dilation with uneven and cropping padding, 3-D, and a long
# 1-D line split among workers.
_DIRECT = {
    "one_vector": geometry_nd(3, 4, 13, (9, 14), 3, padding=1),
    "three_vectors": geometry_nd(2, 6, 27, (7, 40), 3, padding=1),
    "chunks": geometry_nd(2, 70, 12, (6, 40), 3, padding=1),
    "dilated_crop": geometry_nd(2, 33, 7, (14, 30), 3, dilation=2, padding=((2, 1), (3, -1))),
    "3d": geometry_nd(2, 20, 9, (5, 6, 24), 3, dilation=(1, 2, 1), padding=((1, 1), (2, 0), (1, 1))),
    "1d_long": geometry_nd(1, 48, 48, (2000,), 7, padding=3),  # 64 MFLOP in one line: split among workers
}


def _has_avx512() -> bool:
    """The kernels run AVX-512: the CPU has it and ``JCB_NATIVE_ISA`` asks for no less (test_native_isa.py)."""
    if os.environ.get("JCB_NATIVE_ISA", "") in ("avx2", "generic"):
        return False
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_direct_forward_kernel(threads):
    _check_kernel(kernels.conv_forward, _DIRECT, "forward", f"{threads} workers", threads=threads)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_direct_weight_gradient_kernel(threads):
    _check_kernel(kernels.conv_weight_grad, _DIRECT, "filter", f"{threads} workers", threads=threads)


@needs_kernel
def test_direct_input_gradient():
    """The stride-1 input gradient's flipped correlation, direct where its output lines allow."""
    _check_kernel(cpu_input_grad.backprop_input_native, _DIRECT, "input_grad", "direct")


# Strided input gradients whose sub-pixel convolution the native forward computes directly, with at
# most a quarter of its taps zeros (1-D k4 s2 as HiFi-GAN's upsamplers, Conv-TasNet's one input
# channel, a 7x7 stem, 3-D), and the small strided cases of test_paths_nd (through the kernel's patches).
_SUBPIXEL_DIRECT = {
    "1d_k4s2": geometry_nd(2, 8, 6, (80,), 4, stride=2, padding=1),
    "1d_c1_k16s8": geometry_nd(2, 1, 24, (400,), 16, stride=8),
    "2d_stem_k7s2": geometry_nd(2, 3, 8, (50, 50), 7, stride=2, padding=3),
    "3d_k4s2_crop": geometry_nd(1, 4, 6, (6, 8, 52), 4, stride=2, padding=((1, 1), (1, 0), (1, -1))),
}
_SUBPIXEL = {
    **_SUBPIXEL_DIRECT,
    **{
        f"{r}d_{cid}": c.geom
        for r in (1, 3)
        for cid, c in ND_CASES[r].items()
        if c.geom.group == 1 and max(c.geom.stride) > 1
    },
}


@needs_kernel
def test_subpixel_input_gradient_through_the_forward_kernel():
    """``native_subpixel``: the sub-pixel form with its convolution by the native kernel, direct or not."""
    _check_kernel(cpu_input_grad.backprop_input_subpixel_native, _SUBPIXEL, "input_grad", "sub-pixel")
    with pytest.raises(ValueError, match="needs 1 group"):
        g = ND_CASES[1]["group2"].geom
        cpu_input_grad.backprop_input_subpixel_native(*_data(g, 0)[::-1][:1], np.zeros(g.w_shape), geom=g)


@needs_kernel
@pytest.mark.skipif(not _has_avx512(), reason="the kernels do not run AVX-512 here (CPU or JCB_NATIVE_ISA)")
def test_strided_input_gradients_take_the_direct_subpixel_form():
    """The dispatcher picks ``native_subpixel`` where its convolution is direct, and the program holds the kernel."""
    for cid, g in _SUBPIXEL_DIRECT.items():
        assert kernels.direct(cpu_input_grad.subpixel_geometry(g), "forward"), cid
        assert dispatch.select_cpu_path(g, native=True) == "native_subpixel", cid
        assert dispatch.select_cpu_path(g) != "native_subpixel", cid
    g = _SUBPIXEL_DIRECT["1d_k4s2"]
    y, w = random_arrays(8, g.y_shape, g.w_shape, dtype=np.float32)

    def f(y, w):
        return jcb.conv_transpose(y, w, 2, [(1, 1)])

    assert _custom_calls(f, y, w, target=kernels.FORWARD_TARGET) == 1
    assert_close(jax.jit(f)(y, w), ref_input_grad(g, y.astype(np.float64), w), "conv_transpose", scale_atol=2e-5)
    # narrow lines keep the pure-XLA sub-pixel form, and a 3x3 stride-2 kernel (7 of its 16 taps zeros) phase_conv
    narrow = geometry_nd(2, 8, 6, (12,), 4, stride=2, padding=1)
    assert dispatch.select_cpu_path(narrow, native=True) == "subpixel"
    wasteful = geometry_nd(2, 8, 6, (50, 50), 3, stride=2, padding=1)
    assert kernels.direct(cpu_input_grad.subpixel_geometry(wasteful), "forward")
    assert dispatch.phase_stats(wasteful)[1] == 7
    assert dispatch.select_cpu_path(wasteful, native=True) == "phase_conv"


@needs_kernel
@pytest.mark.skipif(not _has_avx512(), reason="the kernels do not run AVX-512 here (CPU or JCB_NATIVE_ISA)")
def test_direct_grid_takes_the_direct_kernels():
    assert all(kernels.direct(g, "forward") for g in _DIRECT.values())
    assert [cid for cid, g in _DIRECT.items() if kernels.direct(g, "weight_grad")] == [
        "chunks",
        "dilated_crop",
        "3d",
        "1d_long",
    ]
    # and what DirectFits leaves to the patches: strided, one tap, lines under 3/4 of their lanes, > 2**18 weights
    others = [
        geometry_nd(1, 4, 4, (9, 40), 3, stride=(1, 2), padding=1),
        geometry_nd(1, 4, 4, (9, 40), 1),
        geometry_nd(1, 4, 4, (9, 33), 3, padding=1),
        geometry_nd(1, 256, 128, (16, 16), 3, padding=1),
    ]
    assert not any(kernels.direct(g, "forward") for g in others)
    # and what DirectGradFits leaves: strided, one tap, under 16 input channels, > 2**20 weights
    others = [*others[:2], geometry_nd(1, 15, 4, (9, 40), 3), geometry_nd(1, 512, 256, (6, 6), 3, padding=1)]
    assert not any(kernels.direct(g, "weight_grad") for g in others)
    with pytest.raises(ValueError, match="kernel must be"):
        kernels.direct(others[0], "input_grad")


@needs_kernel
def test_the_dispatchers_rules_agree_with_the_kernels():
    """``native.rules.direct`` (pure Python, what the dispatcher reads) says what the loaded kernels decide."""
    geoms = {
        **_GRID,
        **_PARALLEL,
        **_DIRECT,
        **{f"sub_{c}": cpu_input_grad.subpixel_geometry(g) for c, g in _GRID.items()},
    }
    geoms.update(
        {
            "33_wide": geometry_nd(1, 4, 4, (9, 33), 3, padding=1),
            "weights_2_18": geometry_nd(1, 128, 128, (16, 16), 4, padding=((1, 2), (1, 2))),
            "weights_over": geometry_nd(1, 256, 128, (16, 16), 3, padding=1),
            "c_in_15": geometry_nd(1, 15, 4, (9, 40), 3),
            "c_in_16": geometry_nd(1, 16, 4, (9, 40), 3),
        }
    )
    for kernel in rules.KERNELS:
        wrong = [
            cid for cid, g in geoms.items() if g.group == 1 and rules.direct(g, kernel) != kernels.direct(g, kernel)
        ]
        assert not wrong, (kernel, wrong)
    assert rules.has_avx512() == _has_avx512()
    with pytest.raises(ValueError, match="kernel must be"):
        rules.direct(_DIRECT["one_vector"], "input_grad")


def test_path_selection_never_loads_the_native_library():
    """The dispatcher's rules read the geometry only: choosing a path neither builds nor loads the kernels."""
    code = textwrap.dedent(
        """
        from jax_conv_bpi._src.lowering import dispatch
        from jax_conv_bpi._src.native import kernels
        from tests.support import geometry_nd
        g = geometry_nd(2, 16, 16, (12, 12), 3, stride=2, padding=1)
        paths = [select(g, native=True) for select in dispatch.SELECT_PATH.values()]
        assert kernels.load.cache_info().currsize == 0, "the selection loaded the library"
        print("OK", paths)
        """
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("OK"), proc.stderr[-2000:]


_STRIDE_1 = {cid: g for cid, g in {**_GRID, **_PARALLEL}.items() if set(g.stride) == {1} and g.group == 1}


@needs_kernel
def test_input_gradient_through_the_forward_kernel():
    """Stride 1: the flipped correlation by the forward kernel, negative (cropping) paddings included."""
    assert any(min(lo for lo, _ in g.padding) < 0 or min(hi for _, hi in g.padding) < 0 for g in _STRIDE_1.values())
    assert any(max(g.dilation) > 1 for g in _STRIDE_1.values())
    _check_kernel(cpu_input_grad.backprop_input_native, _STRIDE_1, "input_grad", "stride 1")


def test_grid_takes_every_way_through_the_kernel():
    """The grid holds what the block choice and the fill distinguish (the kernel's header comment)."""
    pixels = lambda g: int(np.prod(g.y_shape[2:]))  # noqa: E731
    geoms = list(_GRID.values())
    assert any(pixels(g) >= 1024 and g.y_shape[0] > 1 for g in geoms)  # one sgemm per sample
    assert any(0 < pixels(g) < 1024 and g.y_shape[0] > 1 for g in geoms)  # samples packed
    assert any(g.y_shape[0] == 0 for g in geoms) and any(pixels(g) == 0 for g in geoms)
    same = [g for g in geoms if g.ndim >= 2 and g.stride[-2:] == (1, 1) and g.x_shape[-1] == g.y_shape[-1]]
    assert any(max(g.dilation) > 1 for g in same) and any(max(g.kernel) > 1 for g in same)  # contiguous runs
    assert {s for g in geoms for s in g.stride} >= {1, 2, 3, 5}  # each Gather case
    assert any(min(hi for _, hi in g.padding) < 0 for g in geoms)
    assert {g.ndim for g in geoms} == {1, 2, 3}
    # the forward kernel's in-place case: a 1x1 kernel at stride 1, unpadded
    unpadded = [g for g in geoms if all(p == (0, 0) for p in g.padding) and set(g.stride) == {1}]
    assert any(set(g.kernel) == {1} and g.y_shape[0] > 0 for g in unpadded)


# -- the dispatcher -------------------------------------------------------------


def _filter_call(dtype=jnp.float32, group=1):
    """An ungrouped (or grouped: 8 x 6 channels per group) 2-D weight gradient through the public op, its
    inputs and reference."""
    c_in, c_out = (4, 6) if group == 1 else (8 * group, 6 * group)
    g = geometry_nd(2, c_in, c_out, (9, 9), 3, stride=2, padding=1, group=group)
    y, x = _data(g, 3)

    def f(y, x):
        return jcb.conv2d_backprop_filter(y, x, g.w_shape, stride=2, pad_mode="pad", pad=1, group=group)

    return f, (jnp.asarray(y, dtype), jnp.asarray(x, dtype)), ref_filter(g, y.astype(np.float64), x)


def _custom_calls(fn, *args, target=kernels.TARGET) -> int:
    """Calls of the weight-gradient kernel (``target``; None: of any kernel) in ``jax.jit(fn)``'s program."""
    text = jax.jit(fn).lower(*args).as_text()
    every = (kernels.TARGET, kernels.FORWARD_TARGET, kernels.GROUPED_TARGET, kernels.GROUPED_FORWARD_TARGET)
    return sum(text.count(t) for t in (every if target is None else (target,)))


@needs_kernel
def test_plain_jit_takes_the_kernel_and_matches():
    f, args, ref = _filter_call()
    assert _custom_calls(f, *args) == 1
    assert_close(jax.jit(f)(*args), ref, "dispatched weight gradient", scale_atol=2e-5)


@needs_kernel
def test_training_gradients_through_the_kernel():
    """``grad`` of a loss over ``conv_transpose`` and ``ops.conv3d``: each weight gradient is one custom call."""
    g = geometry_nd(2, 5, 6, (7, 6), 3, stride=2, padding=1)  # beyond the few-channel direct forms
    y, w, ct = random_arrays(5, g.y_shape, g.w_shape, g.x_shape, dtype=np.float32)

    def loss(w):
        out = jcb.conv_transpose(y, w, 2, [(1, 1), (1, 1)], output_padding=(0, 1))
        return jnp.sum(out * ct)

    assert _custom_calls(jax.grad(loss), w) == 1
    assert_close(jax.jit(jax.grad(loss))(w), ref_filter(g, y.astype(np.float64), ct), "grad", scale_atol=2e-5)

    g3 = geometry_nd(1, 4, 5, (4, 5, 4), 3, padding=1)
    x3, w3, ct3 = random_arrays(6, g3.x_shape, g3.w_shape, g3.y_shape, dtype=np.float32)

    def loss3(w):
        return jnp.sum(jcb.ops.conv3d(x3, w, pad_mode="pad", padding=1) * ct3)

    assert _custom_calls(jax.grad(loss3), w3) == 1
    assert_close(jax.jit(jax.grad(loss3))(w3), ref_filter(g3, ct3, x3.astype(np.float64)), "3-D grad", 2e-5, 2e-5)


@needs_kernel
def test_forward_and_input_gradient_take_the_kernel():
    """A stride-1 ``conv2d`` and its gradients: the forward and the input gradient by the forward kernel."""
    g = geometry_nd(2, 5, 6, (9, 8), 3, dilation=(1, 2), padding=((1, 1), (2, 2)))
    x, w, ct = random_arrays(7, g.x_shape, g.w_shape, g.y_shape, dtype=np.float32)

    def f(x, w):
        return jcb.conv2d(x, w, pad_mode="pad", pad=(1, 1, 2, 2), dilation=(1, 2))

    assert _custom_calls(f, x, w, target=kernels.FORWARD_TARGET) == 1
    assert_close(jax.jit(f)(x, w), ref_conv(g, x.astype(np.float64), w), "forward", scale_atol=2e-5)
    grad = jax.grad(lambda x, w: jnp.sum(f(x, w) * ct), argnums=(0, 1))
    assert _custom_calls(grad, x, w, target=kernels.FORWARD_TARGET) == 1  # the input gradient
    assert _custom_calls(grad, x, w) == 1  # the weight gradient
    dx, dw = jax.jit(grad)(x, w)
    assert_close(dx, ref_input_grad(g, ct.astype(np.float64), w), "input gradient", scale_atol=2e-5)
    assert_close(dw, ref_filter(g, ct.astype(np.float64), x), "weight gradient", scale_atol=2e-5)


@needs_kernel
def test_vmap_over_the_kernel():
    f, (y, x), _ = _filter_call()
    ys, xs = jnp.stack([y, 2 * y, -y]), jnp.stack([x, x, 0.5 * x])
    got = jax.jit(jax.vmap(f))(ys, xs)
    g = geometry_nd(2, 4, 6, (9, 9), 3, stride=2, padding=1)
    for i in range(3):
        assert_close(got[i], ref_filter(g, np.asarray(ys[i], np.float64), np.asarray(xs[i])), f"vmap {i}", 2e-5, 2e-5)


def _check_concurrent_calls(jf, y, x, ref, scales):
    """``jf(s * y, x)`` for each scale, three times over, from as many Python threads at once: each ``s * ref``."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(scales)) as pool:
        outs = list(pool.map(lambda s: jax.device_get(jf(s * y, x)), scales * 3))
    for k, got in enumerate(outs):
        assert_close(got, scales[k % len(scales)] * ref, f"thread call {k}", scale_atol=2e-5)


@needs_kernel
def test_threads_call_the_kernel_concurrently():
    """The handler keeps no state: programs run from several Python threads at once all get their own result."""
    f, (y, x), ref = _filter_call()
    _check_concurrent_calls(jax.jit(f), y, x, ref, [1.0, -2.0, 0.5, 3.0, 1.5, -1.0])


@needs_kernel
def test_threads_call_the_shared_kernel_concurrently():
    """Calls large enough for several workers each, from several Python threads at once: XLA's pool is shared."""
    g = _PARALLEL["per_sample"]
    y, x = _data(g, 11)
    ref = ref_filter(g, np.asarray(y, np.float64), np.asarray(x, np.float64))
    jf = jax.jit(lambda y, x: kernels.conv_weight_grad(y, x, geom=g, threads=3))
    _check_concurrent_calls(jf, y, x, ref, [1.0, -2.0, 0.5, 3.0])


@needs_kernel
def test_few_channels_per_group_take_the_grouped_kernel():
    """A depthwise ``conv2d`` and its weight gradient: the grouped kernels; its input gradient stays XLA's."""
    g = geometry_nd(2, 6, 6, (10, 9), 3, stride=2, padding=1, group=6)
    x, w, ct = random_arrays(9, g.x_shape, g.w_shape, g.y_shape, dtype=np.float32)

    def f(x, w):
        return jcb.conv2d(x, w, stride=2, pad_mode="pad", pad=1, group=6)

    def loss(x, w):
        return jnp.sum(f(x, w) * ct)

    assert _custom_calls(f, x, w, target=kernels.GROUPED_FORWARD_TARGET) == 1
    assert_close(jax.jit(f)(x, w), ref_conv(g, x.astype(np.float64), w), "forward", scale_atol=2e-5)
    grad = jax.grad(loss, argnums=(0, 1))
    assert _custom_calls(grad, x, w, target=kernels.GROUPED_TARGET) == 1
    assert _custom_calls(grad, x, w, target=kernels.FORWARD_TARGET) == 0
    dx, dw = jax.jit(grad)(x, w)
    assert_close(dw, ref_filter(g, ct.astype(np.float64), x), "weight gradient", scale_atol=2e-5)
    assert_close(dx, ref_input_grad(g, ct.astype(np.float64), w), "input gradient", scale_atol=2e-5)


@pytest.mark.parametrize(
    "which, kwargs",
    [("bfloat16", {"dtype": jnp.bfloat16}), ("float16", {"dtype": jnp.float16}), ("grouped", {"group": 2})],
)
def test_other_dtypes_and_groups_stay_pure_xla(which, kwargs):
    f, args, ref = _filter_call(**kwargs)
    assert _custom_calls(f, *args, target=None) == 0, which
    tol = 2e-5 if which == "grouped" else 5e-2
    assert_close(jax.jit(f)(*args), ref, which, rtol=tol, scale_atol=tol)


def test_export_stays_pure_xla():
    """``jax.export`` never carries the custom call (it is no stable export); the exported program still runs."""
    f, args, ref = _filter_call()
    exported = jax.export.export(jax.jit(f))(*args)
    assert "jcb_conv" not in exported.mlir_module()  # none of the kernels' targets
    assert_close(exported.call(*args), ref, "exported weight gradient", scale_atol=2e-5)


def test_native_status_names_the_library_or_the_reason():
    ok, what = kernels.load()
    status = jcb.native_status()
    if not ok:
        assert status == f"native kernel off: {what}"
        return
    assert status.startswith(f"native kernel: {what} (")
    assert os.path.isfile(what)
    # The plugin's build: its version, jaxlib, compiler and flags; then the instruction set it runs.
    plugin = kernels._loaded["plugin"]
    assert f"{kernels.PLUGIN} {plugin.__version__} for jaxlib {plugin.JAXLIB_VERSION}" in status, status
    assert plugin.COMPILER in status and plugin.FLAGS in status, status
    assert ("AVX-512" in status) == _has_avx512(), status


# -- child processes: several devices, no compiler, disabled, no plugin, an unusable plugin -------

_CHILD = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    import jax_conv_bpi as jcb
    from jax_conv_bpi._src.lowering import cpu_input_grad
    from jax_conv_bpi._src.lowering import dispatch
    from jax_conv_bpi._src.native import kernels

    rng = np.random.default_rng(0)
    y = rng.standard_normal((4, 6, 5, 5)).astype(np.float32)
    x = rng.standard_normal((4, 4, 9, 9)).astype(np.float32)
    f = lambda y, x: jcb.conv2d_backprop_filter(y, x, (6, 4, 3, 3), stride=2, pad_mode="pad", pad=1)
    out = {"status": jcb.native_status(), "one_device": jax.jit(f).lower(y, x).as_text().count(kernels.TARGET)}
    out["result"] = np.asarray(jax.jit(f)(y, x)).tolist()
    if len(jax.devices()) > 1:
        mesh = jax.sharding.Mesh(np.array(jax.devices()), ("b",))
        spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("b"))
        ys, xs = jax.device_put(y, spec), jax.device_put(x, spec)
        out["sharded"] = jax.jit(f).lower(ys, xs).as_text().count(kernels.TARGET)
        out["sharded_result"] = np.asarray(jax.jit(f)(ys, xs)).tolist()
    json.dump(out, sys.stdout)
    """
)


def _child(prelude: str = "", env: dict | None = None, **extra) -> dict:
    """``_CHILD`` in a new process, after ``prelude``, in ``env`` (default: this one's) plus ``extra``.

    Its JSON output, with its stderr under ``"stderr"``.
    """
    proc = subprocess.run(
        [sys.executable, "-c", prelude + _CHILD],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ if env is None else env, JAX_PLATFORMS="cpu", **extra),
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(proc.stdout), "stderr": proc.stderr}


def _child_reference():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((4, 6, 5, 5))
    x = rng.standard_normal((4, 4, 9, 9)).astype(np.float32).astype(np.float64)
    y = y.astype(np.float32).astype(np.float64)
    return ref_filter(geometry_nd(4, 4, 6, (9, 9), 3, stride=2, padding=1), y, x)


@needs_kernel
def test_several_devices_stay_pure_xla():
    flags = f"--xla_force_host_platform_device_count=2 {os.environ.get('XLA_FLAGS', '')}".strip()
    out = _child(XLA_FLAGS=flags)
    ref = _child_reference()
    assert out["one_device"] == 1 and out["sharded"] == 0, out["status"]
    assert_close(out["result"], ref, "one device, native", scale_atol=2e-5)
    assert_close(out["sharded_result"], ref, "two devices, pure XLA", scale_atol=2e-5)


def test_disabled_by_the_environment():
    out = _child(JCB_NATIVE="0")
    assert out["status"] == "native kernel off: disabled by JCB_NATIVE=0"
    assert out["one_device"] == 0
    assert_close(out["result"], _child_reference(), "JCB_NATIVE=0", scale_atol=2e-5)


_TRAP_COMPILERS = ("c++", "g++", "gcc", "cc", "clang", "clang++", "ld", "cmake", "ninja")


@needs_kernel
def test_no_compiler_runs_at_run_time(tmp_path):
    """The plugin was compiled when it was installed: in a process whose ``PATH`` holds only compilers that
    record any call and fail, and without ``$CXX``/``$CC``, the kernels load, run and match the reference."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for name in _TRAP_COMPILERS:
        trap = bin_dir / name
        trap.write_text(f'#!/bin/sh\necho {name} "$@" >> {calls}\nexit 1\n')
        trap.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "CC", "JCB_NATIVE")}
    out = _child(env=env, PATH=str(bin_dir))
    assert out["status"].startswith("native kernel: "), out["status"]
    assert out["one_device"] == 1, out["status"]
    assert_close(out["result"], _child_reference(), "no compiler on the PATH", scale_atol=2e-5)
    assert not calls.exists(), calls.read_text()


_NO_PLUGIN = textwrap.dedent(
    """
    import importlib.abc, sys

    class _NoPlugin(importlib.abc.MetaPathFinder):  # as if jax_conv_bpi_native were not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "jax_conv_bpi_native":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoPlugin())
    """
)


def test_without_the_plugin_the_package_stays_pure_xla():
    """The plugin not installed: no warning, the status says so and how to install it, results unchanged."""
    out = _child(_NO_PLUGIN + "import warnings; warnings.simplefilter('always')\n")
    assert out["status"] == (
        "native kernel off: the jax_conv_bpi_native plugin is not installed"
        " (from a checkout of jax_conv_bpi: pip install ./native)"
    ), out["status"]
    assert out["one_device"] == 0
    assert "RuntimeWarning" not in out["stderr"], out["stderr"]
    assert_close(out["result"], _child_reference(), "no plugin", scale_atol=2e-5)


_OTHER_JAXLIB = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("always")  # every warning printed, however often the same one comes
    import jax_conv_bpi_native
    jax_conv_bpi_native.JAXLIB_VERSION = "0.0.1"  # as if built against another jaxlib
    """
)


@pytest.mark.skipif(importlib.util.find_spec(kernels.PLUGIN) is None, reason="the plugin is not installed here")
def test_a_plugin_built_for_another_jaxlib_warns_once():
    """Installed but unusable: one RuntimeWarning for the whole process, the reason in the status, pure XLA."""
    out = _child(_OTHER_JAXLIB + "import jax_conv_bpi as jcb; jcb.native_status(); jcb.native_status()\n")
    expected = f"{kernels.PLUGIN} was built for jaxlib 0.0.1, this process runs jaxlib {kernels._jaxlib_version()}"
    assert out["status"].startswith(f"native kernel off: {kernels.PLUGIN} is installed but cannot be used: "), out
    assert expected in out["status"] and "pip install ./native" in out["status"], out["status"]
    assert out["stderr"].count("RuntimeWarning") == 1, out["stderr"]
    assert out["stderr"].count("installed but cannot be used") == 1, out["stderr"]
    assert out["one_device"] == 0
    assert_close(out["result"], _child_reference(), "unusable plugin", scale_atol=2e-5)
