"""Demo: MindSpore's documentation example and a strided upsampling layer, checked and timed.

Run with ``python -m jax_conv_bpi``. Needs only the core dependencies (jax, jaxlib, numpy).
"""

from __future__ import annotations

import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jax_conv_bpi as jcb


def _median_ms(fn, *args, repeats: int = 15) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _vjp_baseline(input_size, stride, padding):
    """The independent reference: ``jax.vjp`` of a plain ``lax.conv_general_dilated`` w.r.t. its input."""

    def baseline(dout, weight):
        x = jnp.zeros(input_size, dout.dtype)
        _, vjp = jax.vjp(lambda x: lax.conv_general_dilated(x, weight, stride, padding), x)
        return vjp(dout)[0]

    return jax.jit(baseline)


def _check_and_time(title: str, op, dout, weight, input_size, stride, padding) -> None:
    ours = jax.jit(lambda d, w: op(d, w, input_size))
    baseline = _vjp_baseline(input_size, stride, padding)
    scale = float(jnp.max(jnp.abs(baseline(dout, weight))))
    err = float(jnp.max(jnp.abs(ours(dout, weight) - baseline(dout, weight))))
    print(f"  max |ours - jax.vjp(lax.conv_general_dilated)| = {err:.3g} (max |value| {scale:.3g})")
    if err > 1e-5 * max(scale, 1.0):
        raise SystemExit(f"{title}: mismatch against the autodiff reference")
    t_ours = _median_ms(ours, dout, weight)
    t_base = _median_ms(baseline, dout, weight)
    print(f"  median of 15 jitted runs: jax_conv_bpi {t_ours:.2f} ms, jax.vjp(lax.conv) {t_base:.2f} ms")
    print(f"  speed-up over jax.vjp: {t_base / t_ours:.2f}x")


def main() -> None:
    print(
        f"jax {jax.__version__}, jax_conv_bpi {jcb.__version__}, {platform.machine()} "
        f"{jax.devices()[0].platform.upper()}, {jax.device_count()} device(s)\n"
    )
    dout = jnp.ones((10, 32, 30, 30), jnp.float32)
    weight = jnp.ones((32, 32, 3, 3), jnp.float32)
    input_size = (10, 32, 32, 32)
    op = jcb.Conv2DBackpropInput(out_channel=32, kernel_size=3)
    out = op(dout, weight, input_size)
    print("1. MindSpore docs example: Conv2DBackpropInput(out_channel=32, kernel_size=3)")
    print(f"  dout {dout.shape}, weight {weight.shape}, input_size {input_size}")
    print(f"  output shape {out.shape}, dtype {out.dtype}")
    print("  out[0, 0, :4, :4] =")
    for row in np.asarray(out[0, 0, :4, :4]):
        print("    " + " ".join(f"{v:6.1f}" for v in row))
    print("  (stride 1: both sides run the same convolution, so expect a ratio near 1)")
    _check_and_time("docs example", op, dout, weight, input_size, (1, 1), "VALID")

    # A DCGAN generator's upsampling layer: 128 -> 64 channels, 32x32 -> 64x64, kernel 4, stride 2, pad 1.
    # Here the autodiff baseline convolves a zero-interleaved input; this library does not.
    dout = jax.random.normal(jax.random.key(0), (16, 128, 32, 32), jnp.float32)
    weight = jax.random.normal(jax.random.key(1), (128, 64, 4, 4), jnp.float32)
    input_size = (16, 64, 64, 64)
    op = jcb.Conv2DBackpropInput(out_channel=128, kernel_size=4, pad_mode="pad", pad=1, stride=2)
    print(
        "\n2. Strided upsampling: Conv2DBackpropInput(out_channel=128, kernel_size=4, pad_mode='pad', pad=1, stride=2)"
    )
    print(f"  dout {dout.shape}, weight {weight.shape}, input_size {input_size}")
    _check_and_time("strided layer", op, dout, weight, input_size, (2, 2), [(1, 1), (1, 1)])


if __name__ == "__main__":
    main()
