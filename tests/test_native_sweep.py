"""A seeded random sweep of geometries through every native kernel, against the float64 references.

Each geometry is a convolution (``jcb.ConvGeometry``) taken through the public
primitive ``jcb.conv_p`` and its ``jax.vjp``: the forward convolution, the input
gradient and the weight gradient, each compared with ``tests/support``'s
float64 NumPy reference. The geometries are drawn to reach every way through
the kernels (``native/src``): 1-D, 2-D and 3-D; the direct stride-1 kernels
(output widths that fill their 16-float vectors, channel counts on both sides
of their register blocks: 12, 14 and 16 output channels, 16 and 32 input
channels); the im2col kernels with strides 1-5, widths around the vector
tails, the "same"-padded contiguous runs, asymmetric padding and crops,
dilation, 1x1 kernels read in place and empty outputs; the grouped kernels
(depthwise and channel multipliers); batch 0. A third of the im2col geometries
also run the im2col kernels directly with a small scratch block (one output
line, or a few, per sgemm). Several geometries share one jitted program (its
arguments and results are separate buffers, so AddressSanitizer sees reads and
writes past each of them).

``JCB_SWEEP_COUNT`` sets the number of geometries (100 by default, 2,000 in
``make test-native-sanitize``, where the kernels run under ASan + UBSan: a
report stops the process, and with it the test run). ``JCB_SWEEP_SEED``
shifts the seed. The sweep skips where the native kernels are off
(``jcb.native_status()``); where they are on, each geometry's forward and
weight gradient must take them (``jcb.cpu_paths``) and the programs must hold
their custom calls.
"""

from __future__ import annotations

import collections
import os

import jax
import numpy as np
import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi._src.base.geometry import ConvGeometry
from jax_conv_bpi._src.native import kernels, rules

from .support import assert_close, geometry_nd, random_arrays, ref_conv, ref_filter, ref_input_grad, requires_cpu

pytestmark = [
    requires_cpu,
    pytest.mark.skipif(not kernels.load()[0], reason=f"native kernel off here: {kernels.load()[1]}"),
]

COUNT = int(os.environ.get("JCB_SWEEP_COUNT", "100"))
SEED = int(os.environ.get("JCB_SWEEP_SEED", "0"))
PER_PROGRAM = 25  # geometries per jitted program: compiling dominates the time of tiny convolutions

# Register blocks of the direct kernels (direct_avx512.cc): the forward's CO = 12, 14 or 16 output
# channels, its vectors of kVec = 16 pixels; the weight gradient's 12 output channels by 1-2
# vectors of 16 input channels (at least 16 input channels).
_C_OUT = (1, 2, 5, 11, 12, 13, 14, 15, 16, 17, 23, 24, 25, 27, 28, 29)
_C_IN = (1, 3, 15, 16, 17, 31, 32, 33, 47, 48, 49)
_DIRECT_WIDTHS = (*range(12, 17), *range(24, 33), *range(36, 49))  # 3/4 of the vectors' lanes at least
_TARGETS = (kernels.TARGET, kernels.FORWARD_TARGET, kernels.GROUPED_TARGET, kernels.GROUPED_FORWARD_TARGET)


def _pick(rng: np.random.Generator, values) -> int:
    return int(values[int(rng.integers(len(values)))])


def _axis(rng: np.random.Generator, *, stride: int, out_size: int | None = None, same: bool = False):
    """One spatial axis: (input size, kernel, stride, dilation, (lo, hi)), the output at least 0."""
    k, d = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    span = (k - 1) * d
    lo = int(rng.integers(-1, span + 2))
    if out_size is not None:  # input sized for this output (stride 1)
        hi = int(rng.integers(-1, span + 2))
        size = out_size + span - lo - hi
        if size < 1:
            hi, size = hi + 1 - size, 1
        return size, k, 1, d, (lo, hi)
    size = int(rng.integers(1, 9))
    if same and stride == 1:  # output as wide as the input: the patches' contiguous runs
        lo = min(lo, span)
        return size, k, 1, d, (lo, span - lo)
    return size, k, stride, d, (lo, int(rng.integers(-2, span + 2)))


def _geometry(rng: np.random.Generator) -> tuple[str, ConvGeometry]:
    """A random geometry of one kind: "direct" (stride 1, vector-filling widths), "im2col" or "grouped"."""
    nd = int(rng.integers(1, 4))
    kind = ("direct", "im2col", "grouped")[int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
    n = 0 if rng.random() < 0.03 else int(rng.integers(1, 3))
    axes = []
    if kind == "direct":
        for a in range(nd):
            last = a == nd - 1
            axes.append(_axis(rng, stride=1, out_size=_pick(rng, _DIRECT_WIDTHS) if last else int(rng.integers(1, 4))))
        c_in, c_out, group = _pick(rng, _C_IN), _pick(rng, _C_OUT), 1
    else:
        same = rng.random() < 0.3
        stride = 1 if same else int(rng.choice([1, 1, 2, 3, 4, 5]))
        for a in range(nd):
            size, k, s, d, pad = _axis(rng, stride=stride if rng.random() < 0.7 else 1, same=same)
            if a == nd - 1 and rng.random() < 0.5:  # widths around the vector tails
                size = _pick(rng, (15, 16, 17, 31, 32, 33))
                if same:
                    pad = (pad[0], (k - 1) * d - pad[0])
            axes.append((size, k, s, d, pad))
        if kind == "grouped":
            group = int(rng.integers(2, 7))
            c_in, c_out = group * int(rng.integers(1, 3)), group * int(rng.integers(1, 4))
        else:
            c_in, c_out, group = int(rng.integers(1, 10)), int(rng.integers(1, 10)), 1
    spatial, kernel, stride, dilation, padding = (tuple(v) for v in zip(*axes))
    return kind, geometry_nd(n, c_in, c_out, spatial, kernel, stride, dilation, padding, group)


def _sweep() -> list[tuple[str, ConvGeometry, int | None]]:
    """COUNT (kind, geometry, small block or None) triples, the same for every process and run."""
    rng = np.random.default_rng(20_240_000 + SEED)
    out = []
    for _ in range(COUNT):
        kind, g = _geometry(rng)
        block = int(rng.choice([4, 1 << 10, 1 << 12])) if kind == "im2col" and rng.random() < 1 / 3 else None
        out.append((kind, g, block))
    return out


SWEEP = _sweep()
CHUNKS = [SWEEP[i : i + PER_PROGRAM] for i in range(0, len(SWEEP), PER_PROGRAM)]


def _empty(g: ConvGeometry) -> bool:
    return 0 in g.y_shape or 0 in g.x_shape


def test_the_sweep_reaches_every_way_through_the_kernels():
    """What the geometries cover, by the kernels' own rules: every kind, rank and edge the header names."""
    if COUNT < 100:
        pytest.skip("coverage is asserted for 100 geometries or more")
    seen = collections.Counter()
    for kind, g, block in SWEEP:
        paths = jcb.cpu_paths(g)
        if not _empty(g):  # the forward and the weight gradient of every non-empty geometry run natively
            assert paths["conv"] == "native" and paths["backprop_filter"] == "native", (kind, g, paths)
        seen[kind] += 1
        seen[f"{g.ndim}d"] += 1
        seen["input grad native"] += paths["backprop_input"] in ("native", "native_subpixel")
        seen["batch 0"] += g.y_shape[0] == 0
        seen["empty output"] += g.y_shape[0] > 0 and 0 in g.y_shape
        seen["crop"] += min(hi for _, hi in g.padding) < 0 or min(lo for lo, _ in g.padding) < 0
        seen["asymmetric"] += any(lo != hi for lo, hi in g.padding)
        seen["dilated"] += max(g.dilation) > 1
        seen["small block"] += block is not None
        seen[f"stride {max(g.stride)}"] += 1
        if kind == "direct" and rules.has_avx512():
            seen["direct forward"] += kernels.direct(g, "forward")
            seen["direct weight grad"] += kernels.direct(g, "weight_grad")
            seen[f"c_out % 12 = {g.w_shape[0] % 12}"] += kernels.direct(g, "forward")
            seen[f"c_in % 16 = {g.w_shape[1] % 16}"] += kernels.direct(g, "weight_grad")
        if kind != "direct" and g.stride[-2:] in ((1, 1), (1,)) and g.x_shape[-1] == g.y_shape[-1] > 0:
            seen["contiguous runs"] += 1
    for key in ("direct", "im2col", "grouped", "1d", "2d", "3d", "batch 0", "empty output", "crop", "asymmetric"):
        assert seen[key] > 0, (key, seen)
    for key in (
        "dilated",
        "small block",
        "input grad native",
        "contiguous runs",
        *(f"stride {s}" for s in range(1, 6)),
    ):
        assert seen[key] > 0, (key, seen)
    if rules.has_avx512():
        assert seen["direct forward"] > COUNT // 10 and seen["direct weight grad"] > COUNT // 20, seen
        assert all(seen[f"c_out % 12 = {r}"] for r in (0, 1, 11)), seen
        assert all(seen[f"c_in % 16 = {r}"] for r in (0, 1, 15)), seen


@pytest.mark.parametrize("chunk", range(len(CHUNKS)))
def test_sweep_matches_the_reference(chunk):
    """Forward, input gradient and weight gradient of each geometry (and the im2col kernels with small blocks)."""
    cases = CHUNKS[chunk]
    first = chunk * PER_PROGRAM
    data = {}
    for i, (_, g, _) in enumerate(cases):
        data[str(first + i)] = tuple(random_arrays(first + i, g.x_shape, g.w_shape, g.y_shape, dtype=np.float32))

    def program(args):
        out = {}
        for i, (_, g, block) in enumerate(cases):
            x, w, ct = args[str(first + i)]
            y, vjp = jax.vjp(lambda x, w, g=g: jcb.conv_p.bind(x, w, geom=g), x, w)
            dx, dw = vjp(ct)
            out[str(first + i)] = {"y": y, "dx": dx, "dw": dw}
            if block is not None:
                out[str(first + i)]["y_block"] = kernels.conv_forward(x, w, geom=g, block_bytes=block)
                out[str(first + i)]["dw_block"] = kernels.conv_weight_grad(ct, x, geom=g, block_bytes=block)
        return out

    jitted = jax.jit(program)
    text = jitted.lower(data).as_text()
    calls = sum(text.count(f'"{t}"') + text.count(f"@{t}(") for t in _TARGETS)
    native = sum(2 for _, g, _ in cases if not _empty(g))
    assert calls >= native, f"{calls} native custom calls for {native} non-empty forwards and weight gradients"
    outs = jax.device_get(jitted(data))
    for i, (kind, g, block) in enumerate(cases):
        key = str(first + i)
        x, w, ct = (np.asarray(v, np.float64) for v in data[key])
        what = f"geometry {key} ({kind}): {g}"
        y, dw = ref_conv(g, x, w), ref_filter(g, ct, x)
        assert_close(outs[key]["y"], y, f"forward, {what}", rtol=1e-4, scale_atol=3e-5)
        assert_close(outs[key]["dx"], ref_input_grad(g, ct, w), f"input gradient, {what}", rtol=1e-4, scale_atol=3e-5)
        assert_close(outs[key]["dw"], dw, f"weight gradient, {what}", rtol=1e-4, scale_atol=3e-5)
        if block is not None:
            assert_close(outs[key]["y_block"], y, f"forward, block {block}, {what}", rtol=1e-4, scale_atol=3e-5)
            assert_close(
                outs[key]["dw_block"], dw, f"weight gradient, block {block}, {what}", rtol=1e-4, scale_atol=3e-5
            )
