"""Demo: MindSpore's documentation example, checked and timed.

Run with ``python -m jax_conv_bpi``.
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


def main() -> None:
    dout = jnp.ones((10, 32, 30, 30), jnp.float32)
    weight = jnp.ones((32, 32, 3, 3), jnp.float32)
    input_size = (10, 32, 32, 32)
    op = jcb.Conv2DBackpropInput(out_channel=32, kernel_size=3)
    out = op(dout, weight, input_size)
    print("MindSpore docs example: Conv2DBackpropInput(out_channel=32, kernel_size=3)")
    print(f"  dout {dout.shape}, weight {weight.shape}, input_size {input_size}")
    print(f"  output shape {out.shape}, dtype {out.dtype}")
    print("  out[0, 0, :4, :4] =")
    for row in np.asarray(out[0, 0, :4, :4]):
        print("    " + " ".join(f"{v:6.1f}" for v in row))

    # Independent reference: autodiff of plain lax.conv_general_dilated.
    def baseline(dout, weight):
        x = jnp.zeros(input_size, dout.dtype)
        _, vjp = jax.vjp(lambda x: lax.conv_general_dilated(x, weight, (1, 1), "VALID"), x)
        return vjp(dout)[0]

    baseline = jax.jit(baseline)
    ours = jax.jit(lambda d, w: op(d, w, input_size))
    err = float(jnp.max(jnp.abs(ours(dout, weight) - baseline(dout, weight))))
    print(f"  max |ours - jax.vjp(lax.conv_general_dilated)| = {err:.3g}")
    if err > 1e-4:
        raise SystemExit("mismatch against the autodiff reference")

    t_ours = _median_ms(ours, dout, weight)
    t_base = _median_ms(baseline, dout, weight)
    print(f"\nMedian of 15 jitted runs on {platform.machine()} {jax.devices()[0].platform.upper()}:")
    print(f"  jax_conv_bpi         {t_ours:8.2f} ms")
    print(f"  jax.vjp(lax.conv)    {t_base:8.2f} ms   (ratio {t_base / t_ours:.2f}x)")


if __name__ == "__main__":
    main()
