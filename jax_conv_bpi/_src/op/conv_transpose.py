"""``conv_transpose``: the JAX-native transposed convolution for 1, 2 and 3 spatial dims."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jax_conv_bpi._src.op.args import TransposeCall, bind_conv_transpose
from jax_conv_bpi._src.op.primitives import backprop_input_p

__all__ = ["conv_transpose"]


def conv_transpose(
    y: jax.Array,
    w: jax.Array,
    strides: int | Sequence[int],
    padding: str | int | Sequence[tuple[int, int]],
    *,
    output_padding: int | Sequence[int] = 0,
    rhs_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    dimension_numbers: Any = None,
    precision: Any = None,
    preferred_element_type: Any = None,
    cpu_path: str | None = None,
    output_size: int | Sequence[int] | None = None,
    transpose_kernel: bool = True,
    padding_mode: str = "zeros",
    bias: jax.Array | None = None,
) -> jax.Array:
    """Transposed convolution: the VJP w.r.t. ``x`` of ``lax.conv_general_dilated``, applied to ``y``.

    With ``x`` of spatial size ``(o - 1) * s - lo - hi + d * (k - 1) + 1 +
    output_padding`` per axis (PyTorch's rule; ``'SAME'`` and ``'SAME_LOWER'``
    below) or ``output_size``, the result equals
    ``jax.vjp(lambda x: lax.conv_general_dilated(x, w, strides, padding,
    rhs_dilation=rhs_dilation, feature_group_count=feature_group_count,
    dimension_numbers=dimension_numbers), x)[1](y)[0]``, computed without
    materialising the forward convolution, with a custom backward inside the
    convolution family, on every transformation and with groups.

    ``w`` is the forward convolution's kernel: its ``O`` axis matches ``y``'s
    channels (``transpose_kernel=True``, lax's name). So, channels-first with
    symmetric padding ``p``:

    * ``torch.nn.functional.conv_transpose2d(y, w, stride=s, padding=p,
      output_padding=op, groups=g, dilation=d)`` is
      ``conv_transpose(y, w, s, [(p, p)] * 2, output_padding=op,
      feature_group_count=g, rhs_dilation=d)`` (the same for 1-D and 3-D);
      ``ConvTranspose2d(...)(y, output_size=size)`` is ``output_size=size``
      here, and its ``bias`` is ``bias=``.
    * ``lax.conv_transpose(y, w, s, "SAME", transpose_kernel=True,
      dimension_numbers=("NCHW", "OIHW", "NCHW"))`` is ``conv_transpose(y, w,
      s, "SAME")``; with ``"VALID"`` the same holds when every dilated kernel
      extent is at least its stride (below that lax appends ``s - extent``
      zeros: ``output_padding=s - extent`` here). ``transpose_kernel=False``
      has lax's meaning too. Unlike lax this takes groups and an output size.

    An ``output_padding`` of at least the stride (allowed when the dilation is
    larger) reaches sizes whose forward convolution has more than ``y``'s
    outputs; the result is then the VJP of that convolution's first ``y``
    outputs.

    **Padding strings and the size.** ``'SAME'`` and ``'SAME_LOWER'`` are
    lax's forward paddings for the result's size ``n``: ``need = max(0, (o - 1)
    * s + ek - n)`` rows (``ek = d * (k - 1) + 1``), ``need // 2`` before for
    ``'SAME'`` (the odd row after), ``need - need // 2`` before for
    ``'SAME_LOWER'``. Their forward convolution has ``ceil(n / s)`` outputs, so
    the sizes that give back ``y``'s ``o`` are ``n = o * s - output_padding``,
    ``0 <= output_padding < s`` (Equinox's ``ConvTranspose`` rule:
    ``output_padding`` lowers the size). ``'VALID'`` is ``(0, 0)`` pairs with
    PyTorch's rule (Keras' ``padding="valid"`` with ``output_padding`` and
    ``deconv_output_length``, ``(o - 1) * s + ek + output_padding``). Keras'
    ``padding="same"`` with ``output_padding=q`` has size ``L = (o - 1) * s + ek
    % 2 + q`` and is ``'SAME'`` with ``output_size=L`` here whenever ``L > (o -
    1) * s`` (every odd ``ek``; even ``ek`` with ``q >= 1``); for even ``ek``
    and ``q = 0`` it is the pairs ``(ek // 2, ek // 2)``.

    **Output size.** ``output_size`` names the result's spatial sizes (one per
    spatial axis, or its full shape, whose batch and channel entries must be
    the result's) instead of ``output_padding``: PyTorch's ``output_size`` and
    TensorFlow's ``output_shape`` (``tf.nn.conv2d_transpose(y, w, output_shape,
    s, "SAME")`` is ``conv_transpose(y, w, s, "SAME", output_size=output_shape,
    dimension_numbers=("NHWC", "HWIO", "NHWC"))``). A size outside
    ``conv_transpose_sizes`` raises a ``ValueError`` that lists every axis'
    sizes.

    **Circular padding.** With ``padding_mode="circular"`` the forward
    convolution pads its input periodically (``jnp.pad(x, pairs,
    mode="wrap")``) instead of with zeros, and the result is the VJP of that:
    ``conv_transpose(y, w, s, padding, padding_mode="circular")`` equals
    ``jax.vjp(lambda x: lax.conv_general_dilated(jnp.pad(x, [(0, 0), (0, 0),
    *pairs], mode="wrap"), w, s, "VALID", ...), x)[1](y)[0]``, with the
    ``(lo, hi)`` pairs of ``padding`` for the result's size. Derivation: the
    padded input is ``xp[r] = x[(r - lo) mod n]``, a linear map ``P`` with
    ``P^T`` summing the rows ``r = j + lo (mod n)`` into ``x[j]``; the forward
    is ``C(P x)`` with ``C`` the zero-padding-free convolution, so its VJP is
    ``P^T C^T y``: the transposed convolution without padding (rows ``q * s +
    i * d``), folded. That is how it is computed (the primitive, then a zero
    pad, a reshape and a sum over the periods: static and linear), so every
    transformation follows. The peers, checked in
    ``tests/test_conv_transpose_peers.py``:

    * Flax's ``ConvTranspose(padding="CIRCULAR")`` (linen and nnx) is
      ``"SAME_LOWER"`` circular with ``transpose_kernel=True`` and
      ``"SAME"`` circular with its default ``transpose_kernel=False``
      (channels-last, kernel ``HWIO``), for the size ``o * s``. It is the VJP
      of Flax's own ``Conv(padding="CIRCULAR")`` (which pads ``((ek - 1) //
      2, ek // 2)``) only where the two shifts agree modulo ``o * s`` (e.g.
      stride 2 with ``transpose_kernel=True``; not stride 1 with an even
      ``ek``); that VJP is ``[((ek - 1) // 2, ek // 2)]`` circular with
      ``output_padding=s - 1`` here.
    * Equinox's ``ConvTranspose(padding="SAME" | "SAME_LOWER",
      padding_mode="CIRCULAR")`` is the same padding string, circular,
      ``transpose_kernel=False``: exactly the VJP of Equinox's circular
      ``Conv`` (Equinox takes no other padding and no ``output_padding``
      there; this library takes both).

    **Kernel convention.** ``transpose_kernel=False`` takes ``w`` as
    ``lax.conv_transpose(..., transpose_kernel=False)``, Flax's
    ``ConvTranspose`` (its default) and Equinox's ``ConvTranspose`` do: the
    kernel of a convolution over the stride-dilated ``y``, not flipped, its
    ``I`` axis matching ``y``'s channels divided by the groups and its ``O``
    axis the result's channels. The forward kernel is that with, per group,
    ``O`` and ``I`` swapped and every spatial axis flipped.

    **Batch axes.** The number of spatial dims is ``w.ndim - 2``. ``y`` has
    the ``n + 2`` axes of its layout (``dimension_numbers``' third spec), or
    that layout without ``N`` (unbatched, as PyTorch, Flax and Equinox take
    it), or any number of leading batch axes in front of the whole layout
    (e.g. ``(B1, B2, N, C, H, W)`` channels-first or ``(B1, N, H, W, C)`` with
    ``("NHWC", "HWIO", "NHWC")``); they fold into ``N`` around the
    computation and the result keeps them in front of its layout.

    Args:
      y: ``(N, C_out, *spatial)`` (channels-first by default), 1 to 3 spatial
        dims; unbatched or with leading batch axes (above).
      w: ``(C_out, C_in / feature_group_count, *kernel)``, the forward kernel
        (``transpose_kernel=False``: ``(C_in, C_out / feature_group_count,
        *kernel)``, above).
      strides: the forward convolution's strides: an int or one per spatial axis.
      padding: the forward convolution's padding: ``'SAME'``, ``'SAME_LOWER'``,
        ``'VALID'``, an int, or one ``(lo, hi)`` pair per spatial axis (ints >= 0).
      output_padding: extra size at the end of each axis, ``0 <= p <
        max(stride, dilation)``; with ``'SAME'``/``'SAME_LOWER'``, ``0 <= p <
        stride`` and the size is ``o * stride - p``. ``conv_transpose_sizes``
        lists the reachable sizes.
      rhs_dilation: the kernel's dilation, an int or one per axis.
      feature_group_count: number of channel groups.
      dimension_numbers: as for ``lax.conv_general_dilated`` of the forward
        convolution (``None``: channels-first, e.g. ``("NCHW", "OIHW",
        "NCHW")``); ``("NHWC", "HWIO", "NHWC")`` and the like work too.
      precision: ``None`` (the backend default, ``jax.default_matmul_precision``
        respected), a ``lax.Precision``, one of its names, or a pair of them.
      preferred_element_type: the result dtype (``None``: ``y``'s dtype). Half
        precision always accumulates in float32 and rounds once (the bias and
        the circular fold included).
      cpu_path: force one CPU formulation of the input gradient (a name in
        ``jax_conv_bpi.CPU_PATHS``; ``None``: the dispatcher's choice). Other
        platforms ignore it.
      output_size: the result's spatial sizes (an int for every axis, one per
        spatial axis in the order of ``strides``, or the full result shape);
        exclusive with a nonzero ``output_padding``.
      transpose_kernel: ``True``: ``w`` is the forward kernel; ``False``: lax's,
        Flax's and Equinox's other convention (above).
      padding_mode: ``"zeros"`` or ``"circular"`` (any letter case).
      bias: ``None`` or an array of shape ``(C_in,)`` (the result's channels)
        and ``y``'s dtype, added along the result's channel axis.

    Returns:
      ``x``'s cotangent, laid out as the forward convolution's input
      (``dimension_numbers``' lhs spec), with ``y``'s batch axes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jax_conv_bpi as jcb
      >>> y = jnp.ones((4, 512, 32))                     # HiFi-GAN: (N, C, frames)
      >>> w = jnp.ones((512, 256, 16)) / 512             # ConvTranspose1d(512 -> 256, k16, s8, p4)
      >>> x = jcb.conv_transpose(y, w, 8, [(4, 4)])
      >>> x.shape, round(float(x[0, 0, 100]), 4)
      ((4, 256, 256), 2.0)
      >>> v = jnp.ones((1, 128, 16, 16, 16))             # 3D U-Net k3 s2 p1, output_padding 1
      >>> jcb.conv_transpose(v, jnp.ones((128, 64, 3, 3, 3)), 2, 1, output_padding=1).shape
      (1, 64, 32, 32, 32)

      An output size instead of ``output_padding``, a bias, unbatched input:

      >>> y, w = jnp.ones((8, 16, 16)), jnp.ones((8, 4, 3, 3))   # (C, H, W): no batch axis
      >>> x = jcb.conv_transpose(y, w, 2, 1, output_size=(32, 32), bias=jnp.arange(4.0))
      >>> x.shape, x[:, 5, 5].tolist()                 # 2 x 2 taps x 8 channels, plus the bias
      ((4, 32, 32), [32.0, 33.0, 34.0, 35.0])

      Circular padding, Flax's layout and kernel convention (``HWIO``, not
      flipped), two batch axes:

      >>> y = jnp.ones((2, 3, 15, 15, 8))                # (B, N, H, W, C)
      >>> w = jnp.ones((6, 6, 8, 4))                     # HWIO, I = y's channels
      >>> x = jcb.conv_transpose(y, w, 2, "SAME", padding_mode="circular", transpose_kernel=False,
      ...                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
      >>> x.shape, float(x.sum()) == float(y.sum()) * 36 * 4   # circular: every tap lands somewhere
      ((2, 3, 30, 30, 4), True)
    """
    call = bind_conv_transpose(
        y,
        w,
        strides,
        padding,
        output_padding=output_padding,
        output_size=output_size,
        rhs_dilation=rhs_dilation,
        feature_group_count=feature_group_count,
        dimension_numbers=dimension_numbers,
        transpose_kernel=transpose_kernel,
        padding_mode=padding_mode,
        bias=bias,
        precision=precision,
        preferred_element_type=preferred_element_type,
        cpu_path=cpu_path,
    )
    if call.geom is None:  # circular padding of an empty y: nothing lands anywhere
        x = jnp.zeros(call.x_shape, "float32" if call.wide else call.dtype)
    else:
        x = backprop_input_p.bind(call.y, call.w, geom=call.geom)
    if call.wrap is not None and call.geom is not None:
        for a, (size, lo) in enumerate(call.wrap):
            x = _wrap(x, 2 + a, size, lo)
    if call.bias is not None:
        x = x + call.bias.astype(x.dtype).reshape(-1, *(1,) * (x.ndim - 2))
    if call.wide:
        x = x.astype(call.dtype)
    return _restore_layout(x, call)


def _wrap(x: jax.Array, axis: int, size: int, lo: int) -> jax.Array:
    """Row ``r`` of ``axis`` added to row ``(r - lo) mod size`` (the transpose of circular padding by ``lo``).

    Padding ``(-lo) mod size`` zeros in front moves row ``r`` to ``r + ((-lo)
    mod size)``, which is ``r - lo`` modulo ``size``; zeros at the end make the
    length a multiple of ``size``, and the sum over the periods of a reshape
    folds it: linear, static, and transformable as any ``jnp`` code.
    """
    length = x.shape[axis]
    front = (-lo) % size
    periods = -(-(length + front) // size)
    pads = [(0, 0)] * x.ndim
    pads[axis] = (front, periods * size - length - front)
    x = jnp.pad(x, pads)
    return x.reshape(*x.shape[:axis], periods, size, *x.shape[axis + 1 :]).sum(axis)


def _restore_layout(x: jax.Array, call: TransposeCall) -> jax.Array:
    """The channels-first result in the result's layout, with ``y``'s batch axes back (or without ``N``)."""
    if call.batch is None:
        x = x if call.back == tuple(range(x.ndim)) else jnp.transpose(x, call.back)
        return jnp.squeeze(x, call.n_axis)
    b = len(call.batch) - 1
    x = x.reshape(*call.batch, *x.shape[1:])
    perm = (*range(b), *(b + i for i in call.back))
    return x if perm == tuple(range(x.ndim)) else jnp.transpose(x, perm)
