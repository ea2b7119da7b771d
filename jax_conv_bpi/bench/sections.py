"""One shape's section: its implementations prepared, checked against a reference, then timed interleaved.

``run_op_shape`` (the input gradient), ``run_train_shape`` (the training step)
and ``run_weight_grad_shape`` (the weight gradient alone) each return the
shape's JSON entry; ``matmul_peak`` times the matmul whose GFLOP/s are the peak.
"""

from __future__ import annotations

import numpy as np

import jax_conv_bpi as jcb

from . import impls, timing
from .checks import check_outputs, effective_rtol
from .config import Config
from .hazard import baseline_may_abort, probe_baseline
from .suite import AnyShape, Shape, ShapeND


def timed_section(prepared: dict, config: Config, progress: timing.Progress) -> dict:
    """Every prepared implementation timed interleaved, summarized (median, min, max, samples)."""
    samples = timing.measure(
        {name: p.call for name, p in prepared.items()},
        reps=config.reps,
        warmup=config.warmup,
        min_sample_s=config.min_sample_s,
        on_rep=progress.advance,
        settle=config.settle,
    )
    return {name: timing.summarize(s) for name, s in samples.items()}


def first_calls(prepared: dict) -> dict:
    """Seconds from ``jax.jit`` to the first result (trace + compile + run), per JAX implementation."""
    return {name: p.first_call_s for name, p in prepared.items() if p.first_call_s is not None}


def ratios(times: dict, ours: str = "ours") -> dict:
    """Speedups of ``ours`` over every other timed implementation: ``t_peer / t_ours``."""
    t = times.get(ours)
    if t is None:
        return {}
    return {peer: v["median_ms"] / t["median_ms"] for peer, v in times.items() if peer != ours}


def matmul_peak(device, n: int, config: Config) -> dict:
    """GFLOP/s of the best of ``max(3, reps)`` samples of an ``(n, n)`` float32 matmul, and its median."""
    fn, flops = impls.matmul_peak_fn(n)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    p = impls.prepare_jax(fn, (a, a), device)
    samples = timing.measure({"dot": p.call}, reps=max(3, config.reps), warmup=config.warmup, min_sample_s=0.05)
    best = min(samples["dot"])
    return {"n": n, "gflops": flops / best / 1e9, "median_ms": 1e3 * float(np.median(samples["dot"]))}


def run_op_shape(shape: AnyShape, config: Config, device, torch, torch_device, progress) -> dict:
    """The input gradient: ours, ``jax.vjp`` and the rank's PyTorch peers (and, on CPU, the opt-in section)."""
    dout, w = shape.arrays(config.seed)
    numerics = {"precision": config.precision, "dtype": config.dtype}
    entry: dict = {"name": shape.name, "shape": shape.to_dict(), "describe": shape.describe()}
    entry.update(
        rank=shape.rank,
        dout_shape=list(shape.dout_shape),
        weight_shape=list(shape.w_shape),
        input_size=list(shape.x_shape),
        flops=shape.flops,
        io_bytes=shape.io_bytes,
        depthwise=shape.depthwise,
        paths=entry_paths(shape, device, config),
    )
    if isinstance(shape, ShapeND):
        entry["output_padding"] = list(shape.output_padding)
    conv_t, conv_input = impls.torch_op_impls(shape.rank)
    notes = []
    use_baseline = True
    if config.probe_hazards and baseline_may_abort(shape, device):
        use_baseline, detail = probe_baseline(shape)
        notes.append(f"jax_vjp: {detail}")
    entry["precision"] = "highest" if impls.jax_precision(shape, config.precision) is not None else "default"
    prepared = {"ours": impls.prepare_jax_op(shape, "ours", dout, w, device, **numerics)}
    if use_baseline:
        prepared["jax_vjp"] = impls.prepare_jax_op(shape, "jax_vjp", dout, w, device, **numerics)
    if torch is not None:
        for name in (conv_t, conv_input):
            prepared[name] = impls.prepare_torch_op(torch, shape, name, dout, w, torch_device, **numerics)
    # The opt-in section is the 2-D suite's (it keeps a --quick run short).
    opt_in = (
        [n for n in impls.OPT_IN_IMPLS if impls.OPT_IN_IMPLS[n] in prepared]
        if opt_in_applies(config, device) and isinstance(shape, Shape)
        else []
    )
    for name in opt_in:
        prepared[name] = impls.prepare_jax_op(shape, name, dout, w, device, **numerics)
    outputs = {name: p.to_numpy(p.call()) for name, p in prepared.items()}
    reference = "jax_vjp" if use_baseline else (conv_input if torch is not None else None)
    entry["check"] = check_outputs(outputs, reference, effective_rtol(config))
    del outputs
    # Everything, opt-in included, is timed in one interleaved section; the
    # opt-in numbers are then kept apart so the default columns stay as a user gets them.
    times = timed_section(prepared, config, progress)
    entry["times"] = {name: t for name, t in times.items() if name not in opt_in}
    entry["speedup"] = ratios(entry["times"])
    entry["gflops"] = {name: shape.flops / (t["median_ms"] * 1e-3) / 1e9 for name, t in entry["times"].items()}
    entry["memory"] = {name: p.memory for name, p in prepared.items() if p.memory is not None and name not in opt_in}
    entry["first_call_s"] = first_calls(prepared)
    if opt_in:
        opt_times = {name: t for name, t in times.items() if name in opt_in or name.startswith("torch")}
        opt_times["ours"] = times["ours"]
        entry["opt_in"] = {
            "times": opt_times,
            "speedup": ratios(opt_times, ours="ours_opt"),
            "memory": {name: prepared[name].memory for name in opt_in if prepared[name].memory is not None},
        }
    entry["notes"] = notes
    return entry


def opt_in_applies(config: Config, device) -> bool:
    """The opt-in section runs on CPU when the installed jaxlib knows the options."""
    return config.opt_in and device.platform == "cpu" and bool(jcb.cpu_compiler_options())


def entry_paths(shape: AnyShape, device, config: Config) -> dict | None:
    """The CPU formulation of each of the library's primitives for ``shape`` (``None`` off CPU)."""
    return impls.cpu_paths(shape, config.dtype) if device.platform == "cpu" else None


def run_weight_grad_shape(shape: AnyShape, config: Config, device, torch, torch_device, progress) -> dict:
    """The weight gradient alone: ours, ``jax.vjp`` w.r.t. the weight, ``torch.nn.grad.conv{r}d_weight``."""
    dout, _ = shape.arrays(config.seed)
    x = np.random.default_rng(config.seed + 1).standard_normal(shape.x_shape, dtype=np.float32)
    entry: dict = {"name": shape.name, "rank": shape.rank, "flops": shape.flops, "notes": []}
    entry["paths"] = entry_paths(shape, device, config)
    entry["dense"] = shape.group == 1
    numerics = {"precision": config.precision, "dtype": config.dtype}
    entry["precision"] = "highest" if impls.jax_precision(shape, config.precision) is not None else "default"
    prepared = {
        name: impls.prepare_jax_weight_grad(shape, name, x, dout, device, **numerics) for name in ("ours", "jax_vjp")
    }
    if torch is not None:
        prepared["torch_conv_weight"] = impls.prepare_torch_weight_grad(torch, shape, x, dout, torch_device, **numerics)
    outputs = {name: p.to_numpy(p.call()) for name, p in prepared.items()}
    return checked_and_timed(entry, prepared, outputs, "jax_vjp", config, progress)


def run_train_shape(shape: AnyShape, config: Config, device, torch, torch_device, progress) -> dict:
    """The training step (forward + both gradients): ours, ``jax.grad`` of lax, PyTorch autograd."""
    dout, w = shape.arrays(config.seed)
    x = np.random.default_rng(config.seed + 1).standard_normal(shape.x_shape, dtype=np.float32)
    entry: dict = {"name": shape.name, "rank": shape.rank, "flops": 3 * shape.flops, "notes": []}
    entry["paths"] = entry_paths(shape, device, config)
    numerics = {"precision": config.precision, "dtype": config.dtype}
    entry["precision"] = "highest" if impls.jax_precision(shape, config.precision) is not None else "default"
    use_baseline = True
    if config.probe_hazards and baseline_may_abort(shape, device):
        use_baseline, detail = probe_baseline(shape)
        entry["notes"].append(f"jax_grad: {detail}")
    prepared = {"ours": impls.prepare_jax_train(shape, "ours", x, w, dout, device, **numerics)}
    if use_baseline:
        prepared["jax_grad"] = impls.prepare_jax_train(shape, "jax_grad", x, w, dout, device, **numerics)
    if torch is not None:
        prepared["torch_autograd"] = impls.prepare_torch_train(torch, shape, x, w, dout, torch_device, **numerics)
    outputs = {name: p.to_numpy(p.call()) for name, p in prepared.items()}
    # The loss is a sum of many products: compare the gradients, which are what a step uses.
    outputs = {name: out[1] for name, out in outputs.items()}
    reference = "jax_grad" if use_baseline else ("torch_autograd" if torch is not None else None)
    return checked_and_timed(entry, prepared, outputs, reference, config, progress)


def checked_and_timed(entry: dict, prepared: dict, outputs: dict, reference, config: Config, progress) -> dict:
    """``entry`` with the check of ``outputs`` against ``reference``, then the timings, memory and first calls."""
    entry["check"] = check_outputs(outputs, reference, effective_rtol(config))
    outputs.clear()  # the results are not needed while timing
    entry["times"] = timed_section(prepared, config, progress)
    entry["speedup"] = ratios(entry["times"])
    entry["memory"] = {name: p.memory for name, p in prepared.items() if p.memory is not None}
    entry["first_call_s"] = first_calls(prepared)
    return entry
