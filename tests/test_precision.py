"""Precision, stated and tested on the GPU lowering (issue 14, part 2) -- no GPU needed.

Every primitive's GPU/TPU lowering (``portable.DEFAULT``) must carry the
geometry's precision to each convolution and matmul it emits. These tests
export for CUDA (``jax.export`` lowers for a platform this machine lacks, it
never compiles) and read ``precision_config`` (convolutions) / ``precision``
(``dot_general``) off the StableHLO text; an absent attribute is DEFAULT.

* The MindSpore shells are full float32 on a GPU (no TF32): HIGHEST on every
  convolution / dot, of the op and of its gradients, even inside
  ``jax.default_matmul_precision("bfloat16")``.
* ``conv_transpose`` follows ``precision=`` (None: DEFAULT) and, with
  ``precision=None``, ``jax.default_matmul_precision`` exactly as a plain
  ``lax.conv_general_dilated`` does in the same context, VJP included.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export, lax

import jax_conv_bpi as jcb

_OPS = ("stablehlo.convolution", "stablehlo.dot_general", "stablehlo.dot ")
_CONFIG = re.compile(r"precision(?:_config)? = \[([^\]]*)\]")
_ALGORITHM = re.compile(r"algorithm = ([^,}]+(?:<[^>]*>)?)")


def cuda_module(fn, *args) -> str:
    specs = [jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype) for a in args]
    return export.export(jax.jit(fn), platforms=("cuda",))(*specs).mlir_module()


def precisions(module_text: str) -> list[tuple[str, ...]]:
    """Per convolution / dot of the module: its operand precisions (DEFAULT where the printer omits them),
    plus an ``algorithm=...`` entry where the op carries a dot algorithm instead."""
    out = []
    for line in module_text.splitlines():
        if not any(op in line for op in _OPS):
            continue
        m = _CONFIG.search(line)
        names = tuple(re.sub(r"#stablehlo<precision (\w+)>", r"\1", p).strip() for p in m[1].split(",")) if m else ()
        names = names or ("DEFAULT", "DEFAULT")
        a = _ALGORITHM.search(line)
        out.append(names + ((f"algorithm={a[1]}",) if a else ()))
    return out


def assert_all(module_text: str, want: str, what: str):
    found = precisions(module_text)
    assert found, f"{what}: no convolution or dot in the CUDA lowering"
    bad = [p for p in found if set(p) != {want}]
    assert not bad, f"{what}: expected {want} on all {len(found)} convolutions/dots, got {bad}"


def _rng(*shape, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape).astype(np.float32)


def _grad(fn, n_args: int, cotangent_shape):
    c = _rng(*cotangent_shape, seed=7)
    return jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a)) * c), argnums=tuple(range(n_args)))


# -- the MindSpore shells: (name, fn, args, output shape) -----------------------------------------

_Y2, _W2 = _rng(2, 4, 4, 5), _rng(4, 2, 3, 3)  # NCHW dout, weight (C_out, C_in/group, kh, kw)
_X2 = _rng(2, 4, 9, 11)
_Y3, _W3 = _rng(1, 4, 2, 3, 2), _rng(4, 3, 2, 2, 3)  # Conv3DTranspose: weight (C_in, C_out, kd, kh, kw)
_X1, _W1, _B1 = _rng(2, 4, 12), _rng(6, 2, 3), _rng(6)

_CT3 = jcb.ops.Conv3DTranspose(4, 3, (2, 2, 3), stride=(2, 1, 2), pad_mode="pad", pad=1)
SHELLS = [
    (
        "conv2d_backprop_input",
        lambda d, w: jcb.conv2d_backprop_input(d, w, (2, 4, 8, 10), stride=2, pad_mode="pad", pad=1, group=2),
        (_Y2, _rng(4, 2, 3, 3, seed=1)),
        (2, 4, 8, 10),
    ),
    (
        "Conv2DBackpropInput",
        lambda d, w: jcb.Conv2DBackpropInput(4, 3, pad_mode="same", stride=(2, 3), dilation=(1, 2))(
            d, w, (2, 2, 8, 14)
        ),
        (_rng(2, 4, 4, 5, seed=2), _W2),
        (2, 2, 8, 14),
    ),
    (
        "conv2d",
        lambda x, w: jcb.conv2d(x, w, stride=2, pad_mode="pad", pad=(1, 0, 2, 1), dilation=2),
        (_X2, _rng(6, 4, 3, 2, seed=3)),
        None,
    ),
    ("ops.Conv3DTranspose", lambda d, w: _CT3(d, w), (_Y3, _W3), None),
    (
        "ops.conv1d",
        lambda x, w, b: jcb.ops.conv1d(x, w, b, stride=2, pad_mode="pad", padding=1, dilation=2, groups=2),
        (_X1, _W1, _B1),
        None,
    ),
]


def _out_shape(fn, args):
    return jax.eval_shape(fn, *args).shape


@pytest.mark.parametrize("name, fn, args, _shape", SHELLS, ids=[s[0] for s in SHELLS])
def test_mindspore_shells_are_highest_on_cuda(name, fn, args, _shape):
    """The op and its gradient w.r.t. every argument: HIGHEST on every convolution / dot of the CUDA lowering."""
    grad = _grad(fn, len(args), _out_shape(fn, args))
    assert_all(cuda_module(fn, *args), "HIGHEST", name)
    assert_all(cuda_module(grad, *args), "HIGHEST", f"grad of {name}")
    # An explicit HIGHEST outranks the context: the shells stay full float32 where the user lowers it globally.
    with jax.default_matmul_precision("bfloat16"):
        assert_all(cuda_module(grad, *args), "HIGHEST", f"grad of {name} under default_matmul_precision('bfloat16')")


# -- the JAX-native conv_transpose --------------------------------------------------------------

_YT, _WT = _rng(2, 4, 5, 3), _rng(4, 6, 3, 2)  # dout (N, C_in=4, ...) and a (O=4, I=6/group, ...) kernel
_CT_KW = dict(output_padding=(1, 0), rhs_dilation=(1, 2), feature_group_count=2)


def _ct(precision="unset"):
    kw = dict(_CT_KW) if precision == "unset" else dict(_CT_KW, precision=precision)
    return lambda y, w: jcb.conv_transpose(y, w, (2, 1), [(1, 0), (0, 1)], **kw)


def _ct_grad(precision="unset"):
    fn = _ct(precision)
    return _grad(fn, 2, _out_shape(fn, (_YT, _WT)))


@pytest.mark.parametrize(
    "precision, want",
    [
        ("unset", "DEFAULT"),
        (None, "DEFAULT"),
        ("highest", "HIGHEST"),
        (lax.Precision.HIGHEST, "HIGHEST"),
        (lax.Precision.HIGH, "HIGH"),
        ("bfloat16", "DEFAULT"),
    ],
    ids=["unset", "None", "highest", "HIGHEST", "HIGH", "bfloat16"],
)
def test_conv_transpose_follows_precision(precision, want):
    """Explicit arguments, under JAX's own default context (the device check sets another one globally)."""
    with jax.default_matmul_precision("default"):
        _check_follows(precision, want)


def _check_follows(precision, want):
    assert_all(cuda_module(_ct(precision), _YT, _WT), want, f"conv_transpose(precision={precision!r})")
    assert_all(cuda_module(_ct_grad(precision), _YT, _WT), want, f"grad of conv_transpose(precision={precision!r})")


def _lax_reference():
    """What plain lax emits for a convolution and its VJP in the current context (precision=None)."""
    x, w = _rng(2, 6, 7, 3), _rng(4, 3, 3, 2)

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (2, 1), [(1, 1), (0, 1)], rhs_dilation=(1, 2), feature_group_count=2)

    fwd = precisions(cuda_module(conv, x, w))
    vjp = precisions(cuda_module(_grad(conv, 2, _out_shape(conv, (x, w))), x, w))
    assert fwd and vjp and len(set(fwd)) == 1 and set(vjp) == set(fwd), (fwd, vjp)
    return fwd[0]


@pytest.mark.parametrize("context", ["float32", "tensorfloat32", "bfloat16", "highest", "default"])
def test_conv_transpose_follows_default_matmul_precision_like_lax(context):
    """``precision=None`` inside ``jax.default_matmul_precision(context)``: ours (op and VJP) emits what lax does."""
    with jax.default_matmul_precision(context):
        want = _lax_reference()
        for what, fn in (("conv_transpose", _ct(None)), ("grad of conv_transpose", _ct_grad(None))):
            got = precisions(cuda_module(fn, _YT, _WT))
            assert got and set(got) == {want}, (
                f"{what} under default_matmul_precision({context!r}): {got} vs lax {want}"
            )
    if context == "float32":  # the documented spelling of 'no TF32' for JAX-native code
        assert set(want) == {"HIGHEST"}, want


def test_the_parser_reads_both_spellings():
    text = (
        "%0 = stablehlo.convolution(%a, %b) {feature_group_count = 1 : i64, precision_config = "
        "[#stablehlo<precision HIGH>, #stablehlo<precision HIGH>]} : ...\n"
        "%1 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0], precision = [HIGHEST, HIGHEST] : ...\n"
        "%2 = stablehlo.convolution(%a, %b) {feature_group_count = 1 : i64} : ...\n"
    )
    assert precisions(text) == [("HIGH", "HIGH"), ("HIGHEST", "HIGHEST"), ("DEFAULT", "DEFAULT")]
