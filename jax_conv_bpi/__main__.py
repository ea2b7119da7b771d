"""Demo: MindSpore's documentation example and a strided upsampling layer, checked and timed.

Run with ``python -m jax_conv_bpi`` (``make demo``). Needs only the core dependencies (jax, jaxlib,
numpy). It says whether the optional native CPU kernels are in use, which CPU formulation each
example's input gradient took (``jax_conv_bpi.cpu_paths``), compares both examples with ``jax.vjp``
of ``lax.conv_general_dilated`` (exiting non-zero on a mismatch), times them, says whether the
machine was busy while it did (as the benchmark does), and ends with where to go next.
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
from jax_conv_bpi.bench import impls, machine

NATIVE_PATHS = ("native", "native_subpixel")  # the cpu_paths names of formulations that run the native kernels


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


def _cpu_path(dout, weight, input_size, stride, padding) -> str:
    """The CPU formulation of this example's input gradient, as ``jax_conv_bpi.cpu_paths`` names it."""
    geometry = jcb.ConvGeometry(
        x_shape=tuple(input_size),
        w_shape=tuple(weight.shape),
        y_shape=tuple(dout.shape),
        stride=tuple(stride),
        dilation=(1,) * len(stride),
        padding=tuple(tuple(p) for p in padding),
    )
    return jcb.cpu_paths(geometry, str(dout.dtype))["backprop_input"]


def _report_path(dout, weight, input_size, stride, padding) -> str | None:
    """Print which formulation the input gradient takes; return its ``cpu_paths`` name (``None`` off CPU)."""
    platform_name = jax.devices()[0].platform
    if platform_name != "cpu":
        print(f"  {platform_name.upper()}: the portable lowering (one lhs-dilated convolution, XLA's kernel)")
        return None
    path = _cpu_path(dout, weight, input_size, stride, padding)
    kind = "the native kernels ran" if path in NATIVE_PATHS else "pure XLA"
    print(f"  CPU formulation of the input gradient: {path} ({kind})")
    return path


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


def load_note(start: list[float] | None, end: list[float] | None, cores: int) -> str:
    """The benchmark's rule: busy when a 1-minute load average exceeded half the usable cores (+ 0.5)."""
    if start is None or end is None:
        return "Load average unknown on this system: the timings may be noisy."
    load = max(start[0], end[0])
    summary = f"Load average (1 min) {start[0]:.2f} at the start, {end[0]:.2f} at the end, {cores} usable core(s)"
    if load > 0.5 * cores + 0.5:
        return f"{summary}: the machine was busy, so the timings are noisy; rerun on a quiet machine to compare."
    return f"{summary}: a quiet machine."


def _next_steps(native_on: bool) -> str:
    root = machine.source_root()
    checkout = (root / "docs" / "conf.py").is_file()
    docs = (
        "docs/ (make docs builds the site into docs/_build/html; start at docs/_build/html/index.html)"
        if checkout
        else "the docs/ folder of the source repository (make docs builds the site)"
    )
    lines = [
        "Next:",
        f"  documentation:  {docs}",
        "  notebooks:      notebooks/README.md (porting a MindSpore model, exploring the op), rendered in the docs",
        "  benchmark:      python -m jax_conv_bpi.bench --quick (about a minute), or make bench for the full run",
    ]
    if not native_on:
        lines.append(
            "  native kernels: pip install 'jax_conv_bpi[native]' (from a checkout: pip install ./native '.[native]')"
        )
    return "\n".join(lines)


def main() -> None:
    device = jax.devices()[0]
    print(
        f"jax {jax.__version__}, jax_conv_bpi {jcb.__version__}, {platform.machine()} "
        f"{device.platform.upper()}, {jax.device_count()} device(s)"
    )
    native_on = False
    if device.platform == "cpu":
        status = jcb.native_status()
        native_on = status.startswith("native kernel: ")
        if native_on:
            print(f"native CPU kernels: on ({status.removeprefix('native kernel: ')})\n")
        else:
            print(f"native CPU kernels: off ({status.removeprefix('native kernel off: ')}); every path is pure XLA\n")
    else:
        print()
    load_start = machine.load_average()

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
    path = _report_path(dout, weight, input_size, (1, 1), [(0, 0), (0, 0)])
    if path in NATIVE_PATHS:
        print("  (stride 1: one convolution on both sides, the native kernel's against XLA's)")
    else:
        print("  (stride 1: jax.vjp runs one plain convolution here too, so a ratio near 1 is expected)")
    _check_and_time("docs example", op, dout, weight, input_size, (1, 1), [(0, 0), (0, 0)])

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
    _report_path(dout, weight, input_size, (2, 2), [(1, 1), (1, 1)])
    _check_and_time("strided layer", op, dout, weight, input_size, (2, 2), [(1, 1), (1, 1)])

    print("\n" + load_note(load_start, machine.load_average(), impls.usable_cores()))
    print("\n" + _next_steps(native_on))


if __name__ == "__main__":
    main()
