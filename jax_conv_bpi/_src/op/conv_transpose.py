"""``conv_transpose``: the JAX-native transposed convolution for 1, 2 and 3 spatial dims."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jax_conv_bpi._src.op.args import bind_conv_transpose
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
) -> jax.Array:
    """Transposed convolution: the VJP w.r.t. ``x`` of ``lax.conv_general_dilated``, applied to ``y``.

    With ``x`` of spatial size ``(o - 1) * s - lo - hi + d * (k - 1) + 1 +
    output_padding`` per axis (PyTorch's rule), the result equals
    ``jax.vjp(lambda x: lax.conv_general_dilated(x, w, strides, padding,
    rhs_dilation=rhs_dilation, feature_group_count=feature_group_count,
    dimension_numbers=dimension_numbers), x)[1](y)[0]``, computed without
    materialising the forward convolution, with a custom backward inside the
    convolution family, on every transformation and with groups.

    ``w`` is the forward convolution's kernel: its ``O`` axis matches ``y``'s
    channels. So, channels-first with symmetric padding ``p``:

    * ``torch.nn.functional.conv_transpose2d(y, w, stride=s, padding=p,
      output_padding=op, groups=g, dilation=d)`` is
      ``conv_transpose(y, w, s, [(p, p)] * 2, output_padding=op,
      feature_group_count=g, rhs_dilation=d)`` (the same for 1-D and 3-D).
    * ``lax.conv_transpose(y, w, s, "SAME", transpose_kernel=True,
      dimension_numbers=("NCHW", "OIHW", "NCHW"))`` is ``conv_transpose(y, w,
      s, "SAME")``; with ``"VALID"`` the same holds when every dilated kernel
      extent is at least its stride (below that lax appends ``s - extent``
      zeros: ``output_padding=s - extent`` here). Unlike lax this takes groups
      and an output size.

    An ``output_padding`` of at least the stride (allowed when the dilation is
    larger) reaches sizes whose forward convolution has more than ``y``'s
    outputs; the result is then the VJP of that convolution's first ``y``
    outputs.

    Args:
      y: ``(N, C_out, *spatial)`` (channels-first by default), 1 to 3 spatial dims.
      w: ``(C_out, C_in / feature_group_count, *kernel)``, the forward kernel.
      strides: the forward convolution's strides: an int or one per spatial axis.
      padding: the forward convolution's padding: ``'SAME'``, ``'VALID'``, an
        int, or one ``(lo, hi)`` pair per spatial axis (ints >= 0).
      output_padding: extra size at the end of each axis, ``0 <= p <
        max(stride, dilation)``; must be 0 with ``'SAME'`` (which gives
        ``o * stride``). ``conv_transpose_sizes`` lists the reachable sizes.
      rhs_dilation: the kernel's dilation, an int or one per axis.
      feature_group_count: number of channel groups.
      dimension_numbers: as for ``lax.conv_general_dilated`` of the forward
        convolution (``None``: channels-first, e.g. ``("NCHW", "OIHW",
        "NCHW")``); ``("NHWC", "HWIO", "NHWC")`` and the like work too.
      precision: ``None`` (the backend default, ``jax.default_matmul_precision``
        respected), a ``lax.Precision``, one of its names, or a pair of them.
      preferred_element_type: the result dtype (``None``: ``y``'s dtype). Half
        precision always accumulates in float32.
      cpu_path: force one CPU formulation of the input gradient (a name in
        ``jax_conv_bpi.CPU_PATHS``; ``None``: the dispatcher's choice). Other
        platforms ignore it.

    Returns:
      ``x``'s cotangent, laid out as the forward convolution's input
      (``dimension_numbers``' lhs spec).

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
    """
    y_cf, w_cf, geom, back = bind_conv_transpose(
        y,
        w,
        strides,
        padding,
        output_padding=output_padding,
        rhs_dilation=rhs_dilation,
        feature_group_count=feature_group_count,
        dimension_numbers=dimension_numbers,
        precision=precision,
        preferred_element_type=preferred_element_type,
        cpu_path=cpu_path,
    )
    x = backprop_input_p.bind(y_cf, w_cf, geom=geom)
    return x if back == tuple(range(x.ndim)) else jnp.transpose(x, back)
