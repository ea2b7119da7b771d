"""The implementations the benchmark compares, prepared for one shape.

Every ``prepare_*`` function returns a ``Prepared``: a zero-argument ``call``
that runs the computation once and waits for it (``block_until_ready`` /
``torch.cuda.synchronize``), a ``to_numpy`` for the correctness check, and
the compiled executable's memory footprint where it can be read.

Input gradient (the operator itself):
  * ``ours``: ``jax.jit(jax_conv_bpi.conv2d_backprop_input)`` in ``pad`` mode.
  * ``jax_vjp``: ``jax.jit`` of ``jax.vjp`` of ``lax.conv_general_dilated``
    w.r.t. ``x``, what plain JAX gives.
  * ``torch_conv_transpose2d``: ``F.conv_transpose2d`` with the padding and
    ``output_padding`` that give exactly ``input_size`` (asymmetric padding:
    ``padding=0`` and a crop).
  * ``torch_conv2d_input``: ``torch.nn.grad.conv2d_input``.

Training step (forward ``conv2d`` + gradients w.r.t. input and weight of
``sum(conv2d(x, w) * r)``): ``jax_conv_bpi.conv2d`` under ``jax.grad`` (its
backward is this project's ``conv2d_backprop_input`` and
``conv2d_backprop_filter``), plain ``lax.conv_general_dilated`` under
``jax.grad``, and PyTorch autograd of ``F.conv2d``.

All float32 computations run at full float32 precision (``Precision.HIGHEST``
in JAX, TF32 off in PyTorch), so GPU numbers compare like with like.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jax_conv_bpi as jcb

from .suite import Shape

OP_IMPLS = ("ours", "jax_vjp", "torch_conv_transpose2d", "torch_conv2d_input")
TRAIN_IMPLS = ("ours", "jax_grad", "torch_autograd")
LABELS = {
    "ours": "jax_conv_bpi",
    "jax_vjp": "jax.vjp(lax.conv)",
    "torch_conv_transpose2d": "torch conv_transpose2d",
    "torch_conv2d_input": "torch grad.conv2d_input",
    "jax_grad": "jax.grad(lax.conv)",
    "torch_autograd": "torch autograd(conv2d)",
    "ours_opt": "jax_conv_bpi + cpu_compiler_options()",
    "jax_vjp_opt": "jax.vjp(lax.conv) + cpu_compiler_options()",
}
# The opt-in section: the same functions compiled with ``jax_conv_bpi.cpu_compiler_options()``.
OPT_IN_IMPLS = {"ours_opt": "ours", "jax_vjp_opt": "jax_vjp"}
_DN = ("NCHW", "OIHW", "NCHW")


@dataclasses.dataclass
class Prepared:
    call: Callable[[], Any]
    to_numpy: Callable[[Any], Any]
    memory: dict | None = None


# -- JAX ----------------------------------------------------------------------


def ours_fn(shape: Shape) -> Callable:
    def ours(dout, w):
        return jcb.conv2d_backprop_input(
            dout,
            w,
            shape.x_shape,
            stride=shape.stride,
            pad_mode="pad",
            pad=shape.pad,
            dilation=shape.dilation,
            group=shape.group,
        )

    return ours


def lax_conv(x, w, shape: Shape):
    pt, pb, pl, pr = shape.pad
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=shape.stride,
        padding=((pt, pb), (pl, pr)),
        rhs_dilation=shape.dilation,
        dimension_numbers=_DN,
        feature_group_count=shape.group,
        precision=lax.Precision.HIGHEST,
    )


def jax_vjp_fn(shape: Shape) -> Callable:
    def baseline(dout, w):
        x = jnp.zeros(shape.x_shape, dout.dtype)
        _, vjp = jax.vjp(lambda x: lax_conv(x, w, shape), x)
        return vjp(dout)[0]

    return baseline


def train_fn(shape: Shape, impl: str) -> Callable:
    """``(x, w, r) -> (loss, (dx, dw))`` for ``loss = sum(conv2d(x, w) * r)``."""
    if impl == "ours":

        def forward(x, w):
            return jcb.conv2d(
                x, w, stride=shape.stride, pad_mode="pad", pad=shape.pad, dilation=shape.dilation, group=shape.group
            )
    elif impl == "jax_grad":

        def forward(x, w):
            return lax_conv(x, w, shape)
    else:
        raise ValueError(f"no JAX training step {impl!r}")

    def loss(x, w, r):
        return jnp.sum(forward(x, w) * r)

    return jax.value_and_grad(loss, argnums=(0, 1))


def memory_of(compiled) -> dict | None:
    """Bytes of a compiled executable: arguments + outputs + temporaries (- aliases)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # backends without the analysis
        return None
    if m is None:
        return None
    arg, out, tmp = int(m.argument_size_in_bytes), int(m.output_size_in_bytes), int(m.temp_size_in_bytes)
    alias = int(getattr(m, "alias_size_in_bytes", 0) or 0)
    return {"argument": arg, "output": out, "temp": tmp, "alias": alias, "total": arg + out + tmp - alias}


def prepare_jax(fn: Callable, args: tuple, device, compiler_options: dict | None = None) -> Prepared:
    """Compile ``fn`` for ``args`` (placed on ``device``) ahead of time, with ``compiler_options``."""
    args = tuple(jax.device_put(a, device) for a in args)
    jitted = jax.jit(fn, compiler_options=compiler_options) if compiler_options else jax.jit(fn)
    compiled = jitted.lower(*args).compile()

    def call():
        return jax.block_until_ready(compiled(*args))

    return Prepared(call=call, to_numpy=lambda out: jax.tree.map(np.asarray, out), memory=memory_of(compiled))


def prepare_jax_op(shape: Shape, impl: str, dout: np.ndarray, w: np.ndarray, device) -> Prepared:
    options = jcb.cpu_compiler_options() if impl in OPT_IN_IMPLS else None
    fn = {"ours": ours_fn, "jax_vjp": jax_vjp_fn}[OPT_IN_IMPLS.get(impl, impl)](shape)
    return prepare_jax(fn, (dout, w), device, options)


def prepare_jax_train(shape: Shape, impl: str, x, w, r, device) -> Prepared:
    return prepare_jax(train_fn(shape, impl), (x, w, r), device)


def matmul_peak_fn(n: int):
    """A jitted ``(n, n) @ (n, n)`` float32 product at full precision and its FLOP count."""
    return (lambda a, b: jnp.dot(a, b, precision=lax.Precision.HIGHEST)), 2 * n**3


# -- PyTorch ------------------------------------------------------------------


def import_torch():
    """``torch`` or ``None`` when it is not installed (it is an optional extra)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_torch(torch, device: str) -> dict:
    """Threads = usable cores; full float32 (no TF32); cuDNN autotuning on GPU."""
    torch.set_num_threads(usable_cores())
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.version.cuda if device == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }


def _crop_rows(out, start: tuple[int, int], size: tuple[int, int], F):
    """``out[..., h0:h0+H, w0:w0+W]``, zero-filled past the end (rows no window reaches)."""
    out = out[:, :, start[0] : start[0] + size[0], start[1] : start[1] + size[1]]
    short_h, short_w = size[0] - out.shape[2], size[1] - out.shape[3]
    if short_h or short_w:
        out = F.pad(out, (0, short_w, 0, short_h))
    return out


def conv_transpose2d_args(shape: Shape) -> dict | None:
    """Symmetric ``padding`` / ``output_padding`` giving exactly ``input_size``, or ``None``."""
    pt, pb, pl, pr = shape.pad
    if pt != pb or pl != pr:
        return None
    ho, wo = shape.dout_hw
    out_pad = []
    for a, (p, size) in enumerate(((pt, shape.H), (pl, shape.W))):
        full = (((ho, wo)[a]) - 1) * shape.stride[a] + (shape.extent[a])
        op = size - (full - 2 * p)
        if not 0 <= op < max(shape.stride[a], shape.dilation[a]):
            return None
        out_pad.append(op)
    return {"padding": (pt, pl), "output_padding": tuple(out_pad)}


def torch_conv_transpose2d(torch, shape: Shape) -> Callable:
    F = torch.nn.functional
    common = {"stride": shape.stride, "dilation": shape.dilation, "groups": shape.group}
    args = conv_transpose2d_args(shape)
    if args is not None:
        return lambda dout, w: F.conv_transpose2d(dout, w, **common, **args)

    def cropped(dout, w):
        full = F.conv_transpose2d(dout, w, **common)
        return _crop_rows(full, (shape.pad[0], shape.pad[2]), (shape.H, shape.W), F)

    return cropped


def torch_conv2d_input(torch, shape: Shape) -> Callable:
    pt, pb, pl, pr = shape.pad
    common = {"stride": shape.stride, "dilation": shape.dilation, "groups": shape.group}
    conv2d_input = torch.nn.grad.conv2d_input
    if pt == pb and pl == pr:
        return lambda dout, w: conv2d_input(shape.x_shape, w, dout, padding=(pt, pl), **common)
    padded = (shape.N, shape.C_in, shape.H + pt + pb, shape.W + pl + pr)
    return lambda dout, w: conv2d_input(padded, w, dout, **common)[:, :, pt : pt + shape.H, pl : pl + shape.W]


def torch_train(torch, shape: Shape) -> Callable:
    F = torch.nn.functional
    pt, pb, pl, pr = shape.pad
    symmetric = pt == pb and pl == pr
    common = {"stride": shape.stride, "dilation": shape.dilation, "groups": shape.group}

    def step(x, w, r):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            w = w.detach().requires_grad_(True)
            if symmetric:
                y = F.conv2d(x, w, padding=(pt, pl), **common)
            else:
                y = F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, **common)
            loss = (y * r).sum()
            dx, dw = torch.autograd.grad(loss, (x, w))
        return loss.detach(), (dx, dw)

    return step


def prepare_torch(torch, fn: Callable, args: tuple, device: str, *, grad: bool = False) -> Prepared:
    targs = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in args)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call():
        with torch.inference_mode(not grad):
            out = fn(*targs)
        sync()
        return out

    def to_numpy(out):
        if isinstance(out, tuple):
            return tuple(to_numpy(o) for o in out)
        return out.detach().cpu().numpy()

    memory = None
    if device == "cuda":
        call()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = call()
        peak = torch.cuda.max_memory_allocated()
        inputs = sum(t.numel() * t.element_size() for t in targs)
        memory = {"total": int(peak - base + inputs), "argument": int(inputs)}
        del out
    return Prepared(call=call, to_numpy=to_numpy, memory=memory)


def prepare_torch_op(torch, shape: Shape, impl: str, dout, w, device: str) -> Prepared:
    fn = {"torch_conv_transpose2d": torch_conv_transpose2d, "torch_conv2d_input": torch_conv2d_input}[impl](
        torch, shape
    )
    return prepare_torch(torch, fn, (dout, w), device)


def prepare_torch_train(torch, shape: Shape, x, w, r, device: str) -> Prepared:
    return prepare_torch(torch, torch_train(torch, shape), (x, w, r), device, grad=True)
