"""The conv family against independent oracles on a grid of geometries.

``conv2d_backprop_input`` must equal

* ``jax.vjp`` of ``jax_conv_bpi.conv2d`` w.r.t. ``x`` and ``jax.linear_transpose``
  of it (the family's transposition rules),
* ``jax.vjp`` of plain ``lax.conv_general_dilated`` w.r.t. its input, with
  MindSpore's padding computed here from the spec's formulas (JAX's own
  autodiff, nothing of this project),
* ``tests/reference.backprop_input`` (float64 NumPy loops),

and ``conv2d`` / ``conv2d_backprop_filter`` equal ``lax.conv_general_dilated``,
its VJP w.r.t. the weight and the NumPy references. The MindSpore-style
classes must agree with the functions.

XLA CPU aborts the whole process on the lhs-dilated transposes of some strided
*and* dilated convolutions, so the lax-autodiff oracle is skipped on every
strided + dilated geometry (``hazard`` in the id); the NumPy reference covers
them, and ``test_hazard.py`` runs the known aborting shape in a subprocess.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jax_conv_bpi as jcb

from .support import as_nchw, assert_close, compile_and_run, from_nchw, hw, reference


@dataclasses.dataclass(frozen=True)
class Geometry:
    """One configuration, in NCHW terms; ``data_format`` only decides the layouts passed."""

    n: int
    c_in: int
    c_out: int
    group: int
    hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: int | tuple[int, int]
    dilation: int | tuple[int, int]
    mode: str  # "valid" | "same" | "pad-sym" | "pad-asym" | "pad-list"
    data_format: str

    @property
    def kwargs(self) -> dict:
        kw = dict(stride=self.stride, dilation=self.dilation, group=self.group, data_format=self.data_format)
        kw.update(
            {
                "valid": dict(pad_mode="valid"),
                "same": dict(pad_mode="same"),
                "pad-sym": dict(pad_mode="pad", pad=1),
                "pad-asym": dict(pad_mode="pad", pad=(2, 0, 1, 3)),
                "pad-list": dict(pad_mode="pad", pad=1, pad_list=(0, 2, 3, 1)),
            }[self.mode]
        )
        return kw

    # -- the spec's arithmetic (sections 1 and 4), independent of jax_conv_bpi._padding --

    @property
    def padding(self) -> tuple[int, int, int, int]:
        if self.mode == "valid":
            return (0, 0, 0, 0)
        if self.mode == "pad-sym":
            return (1, 1, 1, 1)
        if self.mode == "pad-asym":
            return (2, 0, 1, 3)
        if self.mode == "pad-list":
            return (0, 2, 3, 1)
        return reference.same_padding(self.hw, self.kernel, hw(self.stride), hw(self.dilation))

    def _slack(self) -> list[int]:
        """Per axis, padded rows beyond the last window (> 0: ambiguous input_size)."""
        p = self.padding
        return [
            (self.hw[a] + p[2 * a] + p[2 * a + 1] - (self.kernel[a] - 1) * hw(self.dilation)[a] - 1)
            % hw(self.stride)[a]
            for a in range(2)
        ]

    @property
    def dout_hw(self) -> tuple[int, int]:
        p = self.padding
        return tuple(
            (self.hw[a] + p[2 * a] + p[2 * a + 1] - (self.kernel[a] - 1) * hw(self.dilation)[a] - 1)
            // hw(self.stride)[a]
            + 1
            for a in range(2)
        )

    @property
    def ambiguous(self) -> bool:
        return self.mode != "same" and any(self._slack())

    @property
    def hazard(self) -> bool:
        """Strided and dilated: lax autodiff of the input gradient may abort XLA CPU."""
        return max(hw(self.stride)) > 1 and max(hw(self.dilation)) > 1

    # -- shapes in the chosen layout --

    def _layout(self, shape):
        n, c, h, w = shape
        return shape if self.data_format == "NCHW" else (n, h, w, c)

    @property
    def x_shape(self):
        return self._layout((self.n, self.c_in, *self.hw))

    @property
    def w_shape(self):
        return self._layout((self.c_out, self.c_in // self.group, *self.kernel))

    @property
    def y_shape(self):
        return self._layout((self.n, self.c_out, *self.dout_hw))

    @property
    def dn(self):
        return ("NCHW", "OIHW", "NCHW") if self.data_format == "NCHW" else ("NHWC", "OHWI", "NHWC")

    @property
    def id(self) -> str:
        g = "dw" if self.group == self.c_in else f"g{self.group}"
        s, d = (str(v).replace(" ", "").replace(",", "x").strip("()") for v in (self.stride, self.dilation))
        flags = ("-amb" if self.ambiguous else "") + ("-hazard" if self.hazard else "")
        return (
            f"{self.mode}-s{s}-d{d}-{g}-{self.data_format}-x{self.hw[0]}x{self.hw[1]}"
            f"-k{self.kernel[0]}x{self.kernel[1]}{flags}"
        )


def _grid() -> list[Geometry]:
    """Every stride x dilation pair in every pad mode and both layouts; groups and sizes rotate."""
    strides = [1, 2, (2, 3)]
    dilations = [1, 2, (1, 3)]
    modes = ["valid", "same", "pad-sym", "pad-asym", "pad-list"]
    groups = [(3, 6, 1), (4, 6, 2), (3, 6, 3)]  # (C_in, C_out, group): plain, 2 groups, depthwise x2
    sizes = [(9, 11), (10, 13), (11, 8), (12, 9), (13, 10), (8, 12), (9, 14)]  # odd and even
    kernels = [(3, 3), (2, 3), (3, 2), (1, 3), (2, 2)]
    grid = []
    k = 0
    for s in strides:
        for d in dilations:
            for m, fmt in itertools.product(modes, ("NCHW", "NHWC")):
                c_in, c_out, g = groups[k % 3]
                grid.append(
                    Geometry(
                        n=1 + k % 2,
                        c_in=c_in,
                        c_out=c_out,
                        group=g,
                        hw=sizes[k % len(sizes)],
                        kernel=kernels[(k // 2) % len(kernels)],
                        stride=s,
                        dilation=d,
                        mode=m,
                        data_format=fmt,
                    )
                )
                k += 1
    return grid


GRID = _grid()
PARAMS = [pytest.param(g, id=g.id) for g in GRID]


def test_grid_covers_every_feature():
    """The grid is what the ids say: every feature appears, with and without the hazard."""
    assert {g.mode for g in GRID} == {"valid", "same", "pad-sym", "pad-asym", "pad-list"}
    assert {str(g.stride) for g in GRID} == {"1", "2", "(2, 3)"}
    assert {str(g.dilation) for g in GRID} == {"1", "2", "(1, 3)"}
    assert {g.group for g in GRID} == {1, 2, 3} and any(g.group == g.c_in for g in GRID)
    for fmt in ("NCHW", "NHWC"):
        assert any(g.data_format == fmt and g.ambiguous for g in GRID)
        assert any(g.data_format == fmt and not g.hazard and max(hw(g.stride)) > 1 for g in GRID)
    assert any(h % 2 for g in GRID for h in g.hw)
    assert all(min(g.dout_hw) >= 1 for g in GRID)


# ---------------------------------------------------------------------------
# One compiled program per geometry, shared by the tests below
# ---------------------------------------------------------------------------


def _lax_conv(g: Geometry, x, w):
    p = g.padding
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=hw(g.stride),
        padding=((p[0], p[1]), (p[2], p[3])),
        rhs_dilation=hw(g.dilation),
        dimension_numbers=g.dn,
        feature_group_count=g.group,
        precision=lax.Precision.HIGHEST,
    )


def _program(g: Geometry):
    kw = g.kwargs
    ctor = {k: v for k, v in kw.items()}  # the classes take the same keywords ...
    ctor_conv = {k: v for k, v in kw.items() if k != "pad_list"}
    if g.mode == "pad-list":
        ctor_conv["pad"] = g.padding  # ... except Conv2D, which has no pad_list
    ks = g.kernel

    def program(x, w, dy):
        conv = lambda a: jcb.conv2d(a, w, **kw)  # noqa: E731
        res = {
            "bpi": jcb.conv2d_backprop_input(dy, w, g.x_shape, **kw),
            "bpi_class": jcb.Conv2DBackpropInput(g.c_out, ks, **ctor)(dy, w, g.x_shape),
            "bpi_vjp_conv2d": jax.vjp(conv, x)[1](dy)[0],
            "bpi_transpose_conv2d": jax.linear_transpose(conv, x)(dy)[0],
            "conv2d": conv(x),
            "conv2d_class": jcb.Conv2D(g.c_out, ks, **ctor_conv)(x, w),
            "bpf": jcb.conv2d_backprop_filter(dy, x, g.w_shape, **kw),
            "bpf_class": jcb.Conv2DBackpropFilter(g.c_out, ks, **ctor)(dy, x, g.w_shape),
            "lax_conv": _lax_conv(g, x, w),
        }
        if not g.hazard:
            _, pull = jax.vjp(lambda a, b: _lax_conv(g, a, b), x, w)
            res["lax_bpi"], res["lax_bpf"] = pull(dy)
        return res

    return program


_cache: dict[Geometry, tuple] = {}


def results(g: Geometry):
    """(inputs, float64 references, our and lax results) for one geometry, computed once."""
    if g not in _cache:
        rng = np.random.default_rng(zlib.crc32(g.id.encode()))
        x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in (g.x_shape, g.w_shape, g.y_shape))
        geom = (hw(g.stride), hw(g.dilation), g.padding, g.group)
        fmt = g.data_format
        xn, wn, dyn = (as_nchw(np.asarray(a, np.float64), fmt) for a in (x, w, dy))
        ref = {
            "bpi": from_nchw(reference.backprop_input(dyn, wn, xn.shape, *geom), fmt),
            "conv2d": from_nchw(reference.conv2d(xn, wn, *geom), fmt),
            "bpf": from_nchw(reference.backprop_filter(dyn, xn, wn.shape, *geom), fmt),
        }
        _cache[g] = ref, compile_and_run(_program(g), x, w, dy)
    return _cache[g]


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("g", PARAMS)
def test_backprop_input_is_the_adjoint_of_conv2d(g):
    """conv2d_backprop_input == vjp / linear_transpose of conv2d == class == float64 reference."""
    ref, ours = results(g)
    bpi = np.asarray(ours["bpi"], np.float64)
    assert ours["bpi"].shape == g.x_shape and ours["bpi"].dtype == jnp.float32
    assert_close(bpi, ref["bpi"], "conv2d_backprop_input vs reference")
    for key in ("bpi_class", "bpi_vjp_conv2d", "bpi_transpose_conv2d"):
        assert_close(ours[key], bpi, f"{key} vs conv2d_backprop_input", rtol=1e-6, scale_atol=1e-6)


@pytest.mark.parametrize("g", PARAMS)
def test_conv2d_and_backprop_filter(g):
    """conv2d and conv2d_backprop_filter == their classes == float64 references == lax forward."""
    ref, ours = results(g)
    assert ours["conv2d"].shape == g.y_shape and ours["bpf"].shape == g.w_shape
    assert_close(ours["conv2d"], ref["conv2d"], "conv2d vs reference")
    assert_close(ours["lax_conv"], ref["conv2d"], "lax.conv_general_dilated vs reference (padding formulas)")
    assert_close(ours["bpf"], ref["bpf"], "conv2d_backprop_filter vs reference")
    assert_close(ours["conv2d_class"], np.asarray(ours["conv2d"], np.float64), "Conv2D vs conv2d", 1e-6, 1e-6)
    assert_close(ours["bpf_class"], np.asarray(ours["bpf"], np.float64), "Conv2DBackpropFilter vs function", 1e-6, 1e-6)


# Strided + dilated geometries are left out of this oracle: XLA CPU can abort the
# process on lax's own transpose there. The float64 reference covers them above,
# and tests/test_hazard.py runs them through our op in a subprocess.
@pytest.mark.parametrize("g", [pytest.param(g, id=g.id) for g in GRID if not g.hazard])
def test_lax_autodiff_oracle(g):
    """Our input and weight gradients == jax.vjp of plain lax.conv_general_dilated."""
    _, ours = results(g)
    assert_close(ours["bpi"], np.asarray(ours["lax_bpi"], np.float64), "conv2d_backprop_input vs lax vjp")
    assert_close(ours["bpf"], np.asarray(ours["lax_bpf"], np.float64), "conv2d_backprop_filter vs lax vjp")


def test_the_nd_reference_input_gradient_of_a_crop_at_the_start():
    """``reference.conv_transpose_nd`` where the padding crops the input's start (``lo`` < 0): those positions get
    zeros, as in ``jax.vjp`` of ``lax.conv_general_dilated`` (it sliced from a negative index and returned an
    empty array before)."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 4, 8, 7)), rng.standard_normal((3, 4, 2, 2))
    stride, dilation, padding = (1, 2), (1, 3), ((-1, 1), (-2, 0))
    fwd = lambda x: lax.conv_general_dilated(x, w.astype(np.float32), stride, padding, rhs_dilation=dilation)  # noqa: E731
    y, vjp = jax.vjp(fwd, x.astype(np.float32))
    ct = rng.standard_normal(y.shape)
    expected = vjp(ct.astype(np.float32))[0]
    got = reference.conv_transpose_nd(ct, w, x.shape[2:], stride, dilation, padding, 1)
    assert_close(got, expected, "input gradient with start crops", rtol=1e-4, scale_atol=1e-5)
    assert np.all(got[:, :, :1] == 0) and np.all(got[:, :, :, :2] == 0)
