"""MindSpore's convolution layers as Flax NNX modules: one N-d base, six thin subclasses.

``_ConvNd`` holds the parameters ``weight`` and ``bias`` (``nnx.Param``, or
``bias = None`` without ``has_bias``) in MindSpore's names, shapes and layouts,
and a frozen ``LayerConfig`` (``nn.config``): static configuration, never traced.
A call checks the input like MindSpore does (array, rank, dtype), binds the
same ``NdAttrs`` gate as ``jax_conv_bpi.ops`` and runs one of the N-D
primitives, so every JAX and NNX transformation comes from the primitives'
rules. MindSpore's numbers, quirks included:

* ``Conv2dTranspose``'s ``output_padding`` appends rows / columns of zeros
  after the bias (quirk ``output_padding_appends_zeros``); ``Conv3dTranspose``
  computes them (PyTorch's rule) and adds the bias there too.
* ``valid`` transposed layers give ``max(L * s, (L - 1) * s + ek)`` outputs
  (quirk ``valid_output_at_least_L_times_stride``).
* The 1-D layers keep MindSpore's 4-D weight ``(.., .., 1, K)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jax_conv_bpi._src.base.validate import channels_last_hint, check_array, same_dtype
from jax_conv_bpi._src.mindspore import args_nd
from jax_conv_bpi._src.mindspore.nn.config import LayerConfig, layer_config
from jax_conv_bpi._src.mindspore.nn.initializers import Init, initial_value
from jax_conv_bpi._src.op.primitives import backprop_input_p, conv_p

__all__ = ["Conv1d", "Conv1dTranspose", "Conv2d", "Conv2dTranspose", "Conv3d", "Conv3dTranspose"]

_DTYPE = Any  # a dtype-like: jnp.float32, "float16", np.dtype(...)


class _ConvNd(nnx.Module):
    """The shared body of the six layers (not public: use the subclasses)."""

    config: LayerConfig

    def __init__(
        self,
        config: LayerConfig,
        weight_init: Init,
        bias_init: Init,
        rngs: nnx.Rngs,
    ) -> None:
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"{config.op_name}: 'rngs' must be a flax.nnx.Rngs, got {type(rngs).__name__}")
        self.config = config
        op, shape, dtype = config.op_name, config.weight_shape, config.dtype
        bound = 1.0 / float(config.fan_in) ** 0.5
        array_shape = shape[:2] + shape[3:] if config.ndim == 1 else None  # the 1-D layers: a 3-D array
        w = initial_value(op, "weight", weight_init, shape, dtype, rngs.params(), default_bound=bound,
                          array_shape=array_shape)  # fmt: skip
        self.weight = nnx.Param(w)
        if config.has_bias:
            b = initial_value(op, "bias", bias_init, (config.out_channels,), dtype, rngs.params(), default_bound=bound)
            self.bias: nnx.Param | None = nnx.Param(b)
        else:
            self.bias = None

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the layer to ``x`` of shape ``(N, C_in, *spatial)`` (a JAX or NumPy array of the layer's dtype)."""
        cfg = self.config
        op, n = cfg.op_name, cfg.ndim
        x = check_array(op, "x", x)
        if x.ndim != n + 2:
            layout = ("(N, C, L)", "(N, C, H, W)", "(N, C, D, H, W)")[n - 1]
            hint = ""
            if x.ndim == n + 1:
                hint = f"; for a single example add the batch axis first: x[None] has shape {(1, *x.shape)}"
                if x.shape[0] != cfg.in_channels and x.shape[-1] == cfg.in_channels:
                    hint += "; it looks channels-last, so also move the channels first: jnp.moveaxis(x, -1, 0)[None]"
            raise ValueError(f"{op}: 'x' must have rank {n + 2} {layout}, got shape {tuple(x.shape)}{hint}")
        weight = self.weight[...]
        same_dtype(op, ("x", "weight"), x, weight)
        if x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"{op}: 'x' has {x.shape[1]} channels but the layer was built with in_channels={cfg.in_channels} "
                f"(x shape {tuple(x.shape)}){channels_last_hint('x', x.shape, cfg.in_channels)}"
            )
        w = weight[:, :, 0] if n == 1 else weight  # MindSpore's unit axis
        if cfg.transpose:
            y, w, geom = args_nd.bind_transpose(cfg.attrs, x, w, y_name="x", w_name="weight")
            out = backprop_input_p.bind(y, w, geom=geom)
        else:  # Conv1d / Conv2d: the padded input must hold the kernel; Conv3d allows an empty output (bind_forward)
            xa, w, geom = args_nd.bind_forward(cfg.attrs, x, w, x_name="x", w_name="weight")
            out = conv_p.bind(xa, w, geom=geom)
        if self.bias is not None:
            out = args_nd.add_bias(out, self.bias[...])
        if cfg.appended_zeros and any(cfg.appended_zeros):  # quirk output_padding_appends_zeros
            out = jnp.pad(out, ((0, 0), (0, 0), *((0, p) for p in cfg.appended_zeros)))
        return out


class Conv1d(_ConvNd):
    """MindSpore ``nn.Conv1d``: 1-D cross-correlation of ``(N, C_in, L)``, optional bias.

    The weight is MindSpore's 4-D ``(C_out, C_in/group, 1, K)``; an array
    ``weight_init`` is 3-D ``(C_out, C_in/group, K)``. ``pad_mode`` ``'same'``
    (default, the odd pixel at the end), ``'valid'`` or ``'pad'`` (``padding``
    at both ends). ``weight_init`` / ``bias_init``: ``None`` (``U(-b, b)``,
    ``b = 1/sqrt(C_in/group * K)``), an initializer name, a number, an array or
    a JAX initializer.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jax_conv_bpi import nn
      >>> layer = nn.Conv1d(2, 4, 3, stride=2, has_bias=True, rngs=nnx.Rngs(0))
      >>> layer.weight.shape, layer(jnp.ones((1, 2, 9))).shape
      ((4, 2, 1, 3), (1, 4, 5))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        pad_mode: str = "same",
        padding: int = 0,
        dilation: int = 1,
        group: int = 1,
        has_bias: bool = False,
        weight_init: Init = None,
        bias_init: Init = None,
        dtype: _DTYPE = jnp.float32,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        cfg = layer_config(
            "Conv1d", 1, transpose=False, in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
            stride=stride, pad_mode=pad_mode, padding=padding, dilation=dilation, group=group, has_bias=has_bias,
            dtype=dtype,
        )  # fmt: skip
        super().__init__(cfg, weight_init, bias_init, rngs)


class Conv2d(_ConvNd):
    """MindSpore ``nn.Conv2d``: 2-D cross-correlation of ``(N, C_in, H, W)``, optional bias.

    ``kernel_size`` / ``stride`` / ``dilation``: an int or ``(h, w)``;
    ``padding`` (``pad_mode='pad'``): an int or ``(top, bottom, left, right)``.
    The weight is ``(C_out, C_in/group, KH, KW)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jax_conv_bpi import nn
      >>> layer = nn.Conv2d(3, 8, 3, stride=2, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 3, 9, 10))).shape
      (2, 8, 5, 5)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        pad_mode: str = "same",
        padding: int | tuple[int, int, int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        group: int = 1,
        has_bias: bool = False,
        weight_init: Init = None,
        bias_init: Init = None,
        data_format: str = "NCHW",
        dtype: _DTYPE = jnp.float32,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        cfg = layer_config(
            "Conv2d", 2, transpose=False, in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
            stride=stride, pad_mode=pad_mode, padding=padding, dilation=dilation, group=group, has_bias=has_bias,
            dtype=dtype, data_format=data_format,
        )  # fmt: skip
        super().__init__(cfg, weight_init, bias_init, rngs)


class Conv3d(_ConvNd):
    """MindSpore ``nn.Conv3d``: 3-D cross-correlation of ``(N, C_in, D, H, W)``, optional bias.

    ``padding`` (``pad_mode='pad'``): an int or ``(head, tail, top, bottom, left, right)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jax_conv_bpi import nn
      >>> nn.Conv3d(2, 4, 3, pad_mode="pad", padding=1, rngs=nnx.Rngs(0))(jnp.ones((1, 2, 4, 5, 6))).shape
      (1, 4, 4, 5, 6)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        pad_mode: str = "same",
        padding: int | tuple[int, int, int, int, int, int] = 0,
        dilation: int | tuple[int, int, int] = 1,
        group: int = 1,
        has_bias: bool = False,
        weight_init: Init = None,
        bias_init: Init = None,
        data_format: str = "NCDHW",
        dtype: _DTYPE = jnp.float32,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        cfg = layer_config(
            "Conv3d", 3, transpose=False, in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
            stride=stride, pad_mode=pad_mode, padding=padding, dilation=dilation, group=group, has_bias=has_bias,
            dtype=dtype, data_format=data_format,
        )  # fmt: skip
        super().__init__(cfg, weight_init, bias_init, rngs)


class Conv1dTranspose(_ConvNd):
    """MindSpore ``nn.Conv1dTranspose``: the adjoint of ``Conv1d`` on ``(N, C_in, L)``.

    Output length: ``'same'`` ``L * s``; ``'valid'`` ``max(L * s, (L - 1) * s + ek)``;
    ``'pad'`` ``(L - 1) * s + ek - 2 * padding``. The weight is MindSpore's 4-D
    ``(C_in, C_out/group, 1, K)``; an array ``weight_init`` is 3-D.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jax_conv_bpi import nn
      >>> layer = nn.Conv1dTranspose(4, 2, 4, stride=2, rngs=nnx.Rngs(0))
      >>> layer.weight.shape, layer(jnp.ones((1, 4, 5))).shape
      ((4, 2, 1, 4), (1, 2, 10))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        pad_mode: str = "same",
        padding: int = 0,
        dilation: int = 1,
        group: int = 1,
        has_bias: bool = False,
        weight_init: Init = None,
        bias_init: Init = None,
        dtype: _DTYPE = jnp.float32,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        cfg = layer_config(
            "Conv1dTranspose", 1, transpose=True, in_channels=in_channels, out_channels=out_channels,
            kernel_size=kernel_size, stride=stride, pad_mode=pad_mode, padding=padding, dilation=dilation,
            group=group, has_bias=has_bias, dtype=dtype,
        )  # fmt: skip
        super().__init__(cfg, weight_init, bias_init, rngs)


class Conv2dTranspose(_ConvNd):
    """MindSpore ``nn.Conv2dTranspose``: the adjoint of ``Conv2d`` on ``(N, C_in, H, W)``.

    The weight is ``(C_in, C_out/group, KH, KW)``. ``output_padding`` (an int or
    ``(h, w)``, ``pad_mode='pad'`` only, ``< max(stride, dilation)``) follows
    MindSpore: the output is computed without it, the bias added, and then
    ``output_padding`` rows (bottom) and columns (right) **of zeros** are
    appended (PyTorch computes values there; ``Conv3dTranspose`` does too).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jax_conv_bpi import nn
      >>> layer = nn.Conv2dTranspose(2, 3, 3, stride=2, pad_mode="pad", padding=1, output_padding=1,
      ...                            has_bias=True, bias_init="ones", rngs=nnx.Rngs(0))
      >>> out = layer(jnp.ones((1, 2, 3, 3)))
      >>> out.shape, float(out[0, 0, 5, 5]), float(out[0, 0, 4, 4]) != 0.0
      ((1, 3, 6, 6), 0.0, True)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        pad_mode: str = "same",
        padding: int | tuple[int, int, int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        group: int = 1,
        has_bias: bool = False,
        weight_init: Init = None,
        bias_init: Init = None,
        dtype: _DTYPE = jnp.float32,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        cfg = layer_config(
            "Conv2dTranspose", 2, transpose=True, in_channels=in_channels, out_channels=out_channels,
            kernel_size=kernel_size, stride=stride, pad_mode=pad_mode, padding=padding, dilation=dilation,
            group=group, has_bias=has_bias, dtype=dtype, output_padding=output_padding,
            output_padding_appends_zeros=True,
        )  # fmt: skip
        super().__init__(cfg, weight_init, bias_init, rngs)


class Conv3dTranspose(_ConvNd):
    """MindSpore ``nn.Conv3dTranspose``: the adjoint of ``Conv3d`` on ``(N, C_in, D, H, W)``.

    The weight is ``(C_in, C_out/group, KD, KH, KW)``. ``output_padding`` (an
    int or 3 ints, ``pad_mode='pad'`` only, ``< max(stride, dilation)``) adds
    computed positions at the end of each axis, the bias included.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jax_conv_bpi import nn
      >>> layer = nn.Conv3dTranspose(4, 2, 3, stride=2, pad_mode="pad", padding=1, output_padding=1,
      ...                            rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((1, 4, 2, 3, 4))).shape
      (1, 2, 4, 6, 8)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        pad_mode: str = "same",
        padding: int | tuple[int, int, int, int, int, int] = 0,
        dilation: int | tuple[int, int, int] = 1,
        group: int = 1,
        output_padding: int | tuple[int, int, int] = 0,
        has_bias: bool = False,
        weight_init: Init = None,
        bias_init: Init = None,
        data_format: str = "NCDHW",
        dtype: _DTYPE = jnp.float32,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        cfg = layer_config(
            "Conv3dTranspose", 3, transpose=True, in_channels=in_channels, out_channels=out_channels,
            kernel_size=kernel_size, stride=stride, pad_mode=pad_mode, padding=padding, dilation=dilation,
            group=group, has_bias=has_bias, dtype=dtype, data_format=data_format, output_padding=output_padding,
        )  # fmt: skip
        super().__init__(cfg, weight_init, bias_init, rngs)
