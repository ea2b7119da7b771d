"""``jcb.conv_transpose`` against the transposed-convolution layers of Flax and Equinox, their results the oracle.

The peers' rules, read from their sources (``flax/linen/linear.py`` and
``flax/nnx/nn/linear.py``: ``ConvTranspose.__call__``; ``equinox/nn/_conv.py``:
``ConvTranspose._padding_transpose``, ``_circular_pad`` and ``__call__``) and
checked here, per rank:

* **Flax** ``ConvTranspose``: channels-last input with any number of leading
  batch axes (or none), a kernel ``(*kernel, I, O)``: with ``transpose_kernel=True``
  the forward kernel in ``HWIO`` (``O`` = the input's channels), with its
  default ``False`` lax's other convention (``I`` = the input's channels, not
  flipped). ``'SAME'`` / ``'VALID'`` go to ``lax.conv_transpose``.
  ``'CIRCULAR'`` computes lax's ``'VALID'`` transposed convolution (the full
  result, rows ``q * s + i * d``), pads it to an odd number of periods ``P =
  o * s`` and sums the periods: row ``r`` lands on ``(r + lo_pad) mod P``. With
  ``transpose_kernel=True`` that shift is ``floor((s - ek) / 2)`` (``ek >
  s``; 0 otherwise), which is the ``'SAME_LOWER'`` forward padding ``ceil((ek
  - s) / 2)``; with ``False`` it is ``ceil((s - ek) / 2)``, ``'SAME'``'s.
* **Equinox** ``ConvTranspose``: unbatched channels-first input, a weight
  ``(C_out, C_in / groups, *kernel)`` used as the kernel of the convolution
  over the stride-dilated input (``transpose_kernel=False``), padding as the
  forward ``Conv``'s. ``'SAME'`` / ``'SAME_LOWER'`` with ``output_padding a``:
  forward padding ``ek - s + a`` split as lax splits it, size ``o * s - a``.
  Circular (``'SAME'`` / ``'SAME_LOWER'`` and ``output_padding=0`` only):
  ``y`` is padded periodically by whole strides and the rest of the padding
  is zeros, exactly the VJP of the circular forward convolution.

Flax's circular transposed convolution is not always the VJP of Flax's own
circular ``Conv`` (which pads ``((ek - 1) // 2, ek // 2)``): the last tests
find where, as the docstring says.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jax_conv_bpi as jcb

from .support import assert_close, random_arrays

flax_linen = pytest.importorskip("flax.linen")  # the extra `nn` (and `peers`)
nnx = pytest.importorskip("flax.nnx")
try:
    import equinox as eqx  # the extra `peers`
except ImportError:  # pragma: no cover - the Flax tests still run
    eqx = None
needs_equinox = pytest.mark.skipif(eqx is None, reason="equinox is not installed (pip install -e '.[peers]')")

SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


def channels_last(nd: int) -> tuple[str, str, str]:
    sp = SPATIAL[nd]
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


def _tol(got, want, what):
    assert_close(got, want, what, rtol=2e-5, scale_atol=2e-5)


# ---------------------------------------------------------------------------
# Flax (linen and nnx)
# ---------------------------------------------------------------------------

# (name, kernel, strides, dilation, y spatial, leading batch shape (() = unbatched), flax padding). The peers
# run lax's lhs-dilated convolutions: no case has a stride and a dilation above 1 (XLA CPU's hazard).
FLAX = [
    ("1d-s2-k3", (3,), (2,), (1,), (5,), (2,), "CIRCULAR"),
    ("1d-s1-k4-even", (4,), (1,), (1,), (6,), (2,), "CIRCULAR"),
    ("1d-s3-k5-unbatched", (5,), (3,), (1,), (4,), (), "CIRCULAR"),
    ("1d-s1-k3-d2", (3,), (1,), (2,), (7,), (1,), "CIRCULAR"),
    ("1d-s4-k2-kernel-below-stride", (2,), (4,), (1,), (3,), (2,), "CIRCULAR"),
    ("2d-s2-k6-docs", (6, 6), (2, 2), (1, 1), (5, 4), (1,), "CIRCULAR"),
    ("2d-s21-k34-two-batch-axes", (3, 4), (2, 1), (1, 1), (3, 4), (2, 3), "CIRCULAR"),
    ("3d-s212-k323", (3, 2, 3), (2, 1, 2), (1, 1, 1), (2, 3, 2), (2,), "CIRCULAR"),
    ("3d-s1-k232-unbatched", (2, 3, 2), (1, 1, 1), (1, 1, 1), (3, 2, 3), (), "CIRCULAR"),
    ("1d-same-s2-k4", (4,), (2,), (1,), (5,), (2,), "SAME"),
    ("2d-same-s3-k23", (2, 3), (3, 2), (1, 1), (3, 2), (2, 2), "SAME"),
    ("3d-same-k332", (3, 3, 2), (2, 1, 1), (1, 1, 1), (2, 2, 3), (1,), "SAME"),
    ("1d-valid-s2-k3", (3,), (2,), (1,), (4,), (), "VALID"),
    ("2d-valid-s2-k34", (3, 4), (2, 2), (1, 1), (3, 3), (2,), "VALID"),
    ("3d-valid-s1-k232", (2, 3, 2), (1, 1, 1), (1, 2, 1), (2, 2, 2), (1,), "VALID"),
]


def _flax_ours(case, tk):
    """The call of this library that Flax's layer is: the padding string, the padding mode, Flax's layout."""
    _, kernel, s, d, _, batch, pad = case
    nd = len(kernel)
    ours_pad = ("SAME_LOWER" if tk else "SAME") if pad == "CIRCULAR" else pad
    return functools.partial(
        jcb.conv_transpose,
        strides=s,
        padding=ours_pad,
        rhs_dilation=d,
        dimension_numbers=channels_last(nd),
        transpose_kernel=tk,
        padding_mode="circular" if pad == "CIRCULAR" else "zeros",
    )


def _flax_inputs(case, seed, c_in=3, c_out=2):
    _, kernel, s, d, y_sp, batch, pad = case
    (y,) = random_arrays(seed, (*batch, *y_sp, c_in), dtype=np.float32)
    return y, c_out


@pytest.mark.parametrize("tk", [True, False], ids=["transpose_kernel", "flax_default"])
@pytest.mark.parametrize("case", FLAX, ids=[c[0] for c in FLAX])
def test_flax_linen_conv_transpose(case, tk):
    """Shapes and values of ``flax.linen.ConvTranspose``, bias included, leading batch axes and unbatched."""
    _, kernel, s, d, y_sp, batch, pad = case
    y, c_out = _flax_inputs(case, seed=len(kernel) + 10 * tk)
    layer = flax_linen.ConvTranspose(
        c_out,
        kernel,
        strides=s,
        padding=pad,
        kernel_dilation=d,
        transpose_kernel=tk,
        bias_init=jax.nn.initializers.normal(1.0),
    )
    params = layer.init(jax.random.key(0), y)["params"]
    want = layer.apply({"params": params}, y)
    got = _flax_ours(case, tk)(y, params["kernel"], bias=params["bias"])
    assert got.shape == want.shape
    assert want.shape[: len(batch)] == batch and want.shape[-1] == c_out
    if pad == "CIRCULAR":  # the period: y's size times the stride
        assert want.shape[len(batch) : -1] == tuple(o * st for o, st in zip(y_sp, s))
    _tol(got, want, f"flax linen {case[0]} transpose_kernel={tk}")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_flax_nnx_conv_transpose_circular(nd):
    """``flax.nnx.ConvTranspose``: the same rule (its source repeats linen's)."""
    case = next(c for c in FLAX if len(c[1]) == nd and c[-1] == "CIRCULAR" and max(c[2]) > 1)
    _, kernel, s, d, y_sp, batch, pad = case
    for tk in (True, False):
        y, c_out = _flax_inputs(case, seed=20 + nd)
        layer = nnx.ConvTranspose(
            y.shape[-1],
            c_out,
            kernel,
            strides=s,
            padding=pad,
            kernel_dilation=d,
            transpose_kernel=tk,
            bias_init=jax.nn.initializers.normal(1.0),
            rngs=nnx.Rngs(nd),
        )
        want = layer(jnp.asarray(y))
        got = _flax_ours(case, tk)(y, layer.kernel[...], bias=layer.bias[...])
        _tol(got, want, f"flax nnx {case[0]} transpose_kernel={tk}")


def test_flax_docstring_example():
    """Flax's own example: kernel 6, stride 2, 15x15 -> 30x30, kernel (6, 6, 4, 3) with transpose_kernel=True."""
    layer = flax_linen.ConvTranspose(4, (6, 6), strides=(2, 2), padding="CIRCULAR", transpose_kernel=True)
    (y,) = random_arrays(3, (1, 15, 15, 3), dtype=np.float32)
    out, variables = layer.init_with_output(jax.random.key(0), y)
    kernel = variables["params"]["kernel"]
    assert kernel.shape == (6, 6, 4, 3) and out.shape == (1, 30, 30, 4)
    got = jcb.conv_transpose(
        y, kernel, 2, "SAME_LOWER", padding_mode="circular", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    _tol(got, out, "flax docstring example")


# -- Flax's circular transposed convolution against the VJP of Flax's circular Conv --

# (kernel, stride, equal?): the shifts are floor((s - ek) / 2) (ConvTranspose, transpose_kernel=True) and
# -((ek - 1) // 2) (the VJP of Conv's padding ((ek - 1) // 2, ek // 2)); equal modulo o * s or not.
FLAX_VS_CONV = [(3, 1, True), (4, 1, False), (2, 1, False), (3, 2, True), (4, 2, True), (5, 2, True), (5, 3, False)]


@pytest.mark.parametrize("k, s, equal", FLAX_VS_CONV, ids=[f"k{k}-s{s}" for k, s, _ in FLAX_VS_CONV])
def test_flax_circular_transpose_is_the_vjp_of_its_conv_only_where_the_shifts_agree(k, s, equal):
    """The docstring's claim, and the library's form of that VJP: ``((ek-1)//2, ek//2)`` pairs, output_padding s-1."""
    o = 5
    (y,) = random_arrays(4 * k + s, (1, o, 3), dtype=np.float32)
    (kernel,) = random_arrays(5, (k, 2, 3), dtype=np.float32)  # (k, I, O): Conv maps 2 -> 3 channels
    params = {"params": {"kernel": jnp.asarray(kernel)}}
    conv = flax_linen.Conv(3, (k,), strides=(s,), padding="CIRCULAR", use_bias=False)
    convt = flax_linen.ConvTranspose(2, (k,), strides=(s,), padding="CIRCULAR", transpose_kernel=True, use_bias=False)
    vjp = jax.vjp(lambda x: conv.apply(params, x), jnp.zeros((1, o * s, 2)))[1](jnp.asarray(y))[0]
    flax_t = convt.apply(params, y)
    assert np.allclose(vjp, flax_t, rtol=1e-5, atol=1e-5) == equal
    ours = jcb.conv_transpose(
        y,
        kernel,
        s,
        [((k - 1) // 2, k // 2)],
        output_padding=s - 1,
        padding_mode="circular",
        dimension_numbers=("NWC", "WIO", "NWC"),
    )
    _tol(ours, vjp, "the VJP of flax's circular Conv")


# ---------------------------------------------------------------------------
# Equinox
# ---------------------------------------------------------------------------

# (name, kernel, stride, dilation, y spatial, padding, output_padding, groups, padding_mode)
EQX = [
    ("1d-circ-same-s2-k3", (3,), 2, 1, (5,), "SAME", 0, 1, "CIRCULAR"),
    ("1d-circ-same-lower-s3-k5-g2", (5,), 3, 1, (4,), "SAME_LOWER", 0, 2, "CIRCULAR"),
    ("1d-circ-same-s1-k4-d2", (4,), 1, 2, (6,), "SAME", 0, 1, "CIRCULAR"),
    ("1d-circ-same-s4-k2", (2,), 4, 1, (3,), "SAME", 0, 1, "CIRCULAR"),
    ("2d-circ-same-lower-s2-k43", (4, 3), (2, 1), 1, (3, 4), "SAME_LOWER", 0, 1, "CIRCULAR"),
    ("2d-circ-same-s3-k5", (5, 2), (3, 2), 1, (2, 3), "SAME", 0, 2, "CIRCULAR"),
    ("3d-circ-same-s2-k3", (3, 2, 3), (2, 1, 2), 1, (2, 3, 2), "SAME", 0, 1, "CIRCULAR"),
    ("3d-circ-same-lower-s1-k232", (2, 3, 2), 1, (1, 2, 1), (3, 2, 3), "SAME_LOWER", 0, 1, "CIRCULAR"),
    ("1d-same-op1-s2-k4", (4,), 2, 1, (5,), "SAME", 1, 1, "ZEROS"),
    ("1d-same-lower-op2-s3-k2", (2,), 3, 1, (4,), "SAME_LOWER", 2, 2, "ZEROS"),
    ("2d-same-lower-op-s23-k34", (3, 4), (2, 3), 1, (3, 2), "SAME_LOWER", (1, 2), 1, "ZEROS"),
    ("2d-same-op-g2", (3, 3), (2, 1), 1, (3, 4), "SAME", (1, 0), 2, "ZEROS"),
    ("3d-same-op-s2-k3", (3, 2, 3), 2, 1, (2, 3, 2), "SAME", (1, 0, 1), 1, "ZEROS"),
    ("1d-pairs-op-g2", (3,), 2, 1, (4,), ((2, 0),), 1, 2, "ZEROS"),
    ("1d-pairs-d3", (2,), 1, 3, (4,), ((2, 1),), 0, 1, "ZEROS"),
    ("2d-valid-op", (2, 3), (3, 2), 1, (3, 2), "VALID", (2, 1), 1, "ZEROS"),
    ("3d-pairs-op-g2", (2, 2, 3), (1, 2, 1), 1, (3, 2, 2), ((1, 1), (0, 2), (1, 0)), (0, 1, 0), 2, "ZEROS"),
    ("3d-pairs-d2", (2, 2, 3), 1, (2, 1, 1), (3, 2, 2), ((1, 1), (0, 2), (1, 0)), 0, 1, "ZEROS"),
]


@needs_equinox
@pytest.mark.parametrize("case", EQX, ids=[c[0] for c in EQX])
def test_equinox_conv_transpose(case):
    """``equinox.nn.ConvTranspose``: unbatched, weight (C_out, C_in / groups, *kernel) as transpose_kernel=False."""
    name, kernel, s, d, y_sp, pad, op, g, mode = case
    nd = len(kernel)
    c_in, c_out = 2 * g, 2 * g if g > 1 else 3
    layer = eqx.nn.ConvTranspose(
        nd,
        c_in,
        c_out,
        kernel,
        stride=s,
        padding=pad,
        output_padding=op,
        dilation=d,
        groups=g,
        padding_mode=mode,
        key=jax.random.key(len(name)),
    )
    (y,) = random_arrays(nd, (c_in, *y_sp), dtype=np.float32)
    want = layer(jnp.asarray(y))
    ours_pad = pad if isinstance(pad, str) else [tuple(p) for p in pad]
    got = jcb.conv_transpose(
        y,
        layer.weight,
        s,
        ours_pad,
        output_padding=op,
        rhs_dilation=d,
        feature_group_count=g,
        transpose_kernel=False,
        padding_mode=mode,
        bias=layer.bias.reshape(-1),
    )
    assert got.shape == want.shape
    if isinstance(pad, str) and pad != "VALID":  # Equinox's rule: y's size times the stride, minus output_padding
        strides, ops = (s,) * nd if isinstance(s, int) else s, (op,) * nd if isinstance(op, int) else op
        assert want.shape[1:] == tuple(o * st - p for o, st, p in zip(y_sp, strides, ops))
    _tol(got, want, f"equinox {name}")


@needs_equinox
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_equinox_circular_is_the_vjp_of_its_circular_conv(nd):
    """Equinox's circular ConvTranspose with the forward Conv's flipped, swapped weight is the Conv's VJP (and ours)."""
    kernel, s = (3, 2, 4)[:nd], (2, 1, 3)[:nd]
    y_sp = (3, 4, 2)[:nd]
    for pad in ("SAME", "SAME_LOWER"):
        conv = eqx.nn.Conv(
            nd, 2, 3, kernel, stride=s, padding=pad, padding_mode="CIRCULAR", use_bias=False, key=jax.random.key(nd)
        )
        convt = eqx.nn.ConvTranspose(
            nd, 3, 2, kernel, stride=s, padding=pad, padding_mode="CIRCULAR", use_bias=False, key=jax.random.key(0)
        )
        flipped = jnp.flip(conv.weight, axis=tuple(range(2, 2 + nd))).swapaxes(0, 1)  # Equinox's FAQ recipe
        convt = eqx.tree_at(lambda m: m.weight, convt, flipped)
        (y,) = random_arrays(30 + nd, (3, *y_sp), dtype=np.float32)
        x0 = jnp.zeros((2, *(o * st for o, st in zip(y_sp, s))))
        vjp = jax.vjp(conv, x0)[1](jnp.asarray(y))[0]
        _tol(convt(jnp.asarray(y)), vjp, f"equinox {pad}: ConvTranspose vs the VJP of Conv")
        ours = jcb.conv_transpose(y, conv.weight, s, pad, padding_mode="circular")  # the forward kernel
        _tol(ours, vjp, f"ours {pad} vs the VJP of equinox's Conv")


@needs_equinox
def test_equinox_and_flax_agree_where_their_circular_rules_meet():
    """Flax with transpose_kernel=False is Equinox's 'SAME'; with True, Equinox's 'SAME_LOWER' of the flipped kernel."""
    (y,) = random_arrays(7, (1, 6, 2), dtype=np.float32)  # (N, W, C)
    (k,) = random_arrays(8, (4, 2, 3), dtype=np.float32)  # (k, I, O), I = y's channels
    flax_t = flax_linen.ConvTranspose(3, (4,), strides=(2,), padding="CIRCULAR", use_bias=False)
    want = flax_t.apply({"params": {"kernel": jnp.asarray(k)}}, y)[0]  # (W, C)
    layer = eqx.nn.ConvTranspose(
        1, 2, 3, 4, stride=2, padding="SAME", padding_mode="CIRCULAR", use_bias=False, key=jax.random.key(0)
    )
    layer = eqx.tree_at(lambda m: m.weight, layer, jnp.asarray(np.transpose(k, (2, 1, 0))))  # (O, I, k)
    _tol(layer(jnp.asarray(y[0].T)).T, want, "flax (transpose_kernel=False) vs equinox 'SAME'")
    flax_tt = flax_linen.ConvTranspose(3, (4,), strides=(2,), padding="CIRCULAR", transpose_kernel=True, use_bias=False)
    k_t = np.transpose(k, (0, 2, 1))  # (k, I=3, O=2): the forward kernel
    want_t = flax_tt.apply({"params": {"kernel": jnp.asarray(k_t)}}, y)[0]
    layer_t = eqx.nn.ConvTranspose(
        1, 2, 3, 4, stride=2, padding="SAME_LOWER", padding_mode="CIRCULAR", use_bias=False, key=jax.random.key(0)
    )
    layer_t = eqx.tree_at(lambda m: m.weight, layer_t, jnp.asarray(np.transpose(k_t, (1, 2, 0))[:, :, ::-1].copy()))
    _tol(layer_t(jnp.asarray(y[0].T)).T, want_t, "flax (transpose_kernel=True) vs equinox 'SAME_LOWER'")


def test_lax_conv_transpose_of_the_peers_layout():
    """Flax's non-circular layer is ``lax.conv_transpose`` itself: the same call here, both kernel conventions."""
    (y,) = random_arrays(9, (2, 5, 4, 3), dtype=np.float32)
    (k,) = random_arrays(10, (3, 2, 3, 4), dtype=np.float32)  # (H, W, I=3, O=4)
    for tk, kernel in ((False, k), (True, np.transpose(k, (0, 1, 3, 2)))):  # True: (H, W, I=4, O=3)
        want = lax.conv_transpose(
            y,
            kernel,
            (2, 2),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            transpose_kernel=tk,
            precision=lax.Precision.HIGHEST,
        )
        got = jcb.conv_transpose(y, kernel, 2, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=tk)
        _tol(got, want, f"transpose_kernel={tk}")


def test_no_case_is_strided_and_dilated():
    """The peers' layers are lhs-dilated convolutions in this process: never strided and dilated at once."""
    for _, _, s, d, *_ in FLAX:
        assert max(s) == 1 or max(d) == 1
    for _, _, s, d, *_ in EQX:
        assert max((s,) if isinstance(s, int) else s) == 1 or max((d,) if isinstance(d, int) else d) == 1
