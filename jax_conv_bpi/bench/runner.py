"""The benchmark run: correctness check, interleaved timing, derived numbers.

``run(config)`` returns a JSON-ready dict (see ``report`` for its rendering);
``cli.main(argv)`` is the command line (``python -m jax_conv_bpi.bench --help``).
The 2-D ``Shape`` entries land in ``ops`` / ``training`` (as before the N-D
suite existed), the ``ShapeND`` entries in ``ops_nd`` / ``training_nd``; the
weight gradient alone, every rank, in ``weight_grad``. The summary has the
2-D geomeans and, under ``by_rank``, the geomeans of each rank over both
kinds. On CPU each entry names the formulation of each of the library's
primitives (``paths``).

The run's parts live in their own modules: ``config`` (``Config``),
``machine`` (the header), ``hazard`` (the plain-JAX baseline's probe),
``checks`` (the correctness check), ``sections`` (one shape's timed
implementations), ``summary`` (geomeans, memory, first calls) and ``cli``
(the command line and its outputs).
"""

from __future__ import annotations

import gc

import jax_conv_bpi as jcb

from . import impls, machine, sections, summary, timing
from .checks import effective_rtol
from .config import Config
from .suite import AnyShape, ShapeND

__all__ = ["SCHEMA", "Config", "run"]

SCHEMA = "jax_conv_bpi.bench/2"


def run(config: Config) -> dict:
    """Run the benchmark described by ``config``; returns the JSON-ready result."""
    device = machine.pick_device(config.platform)
    torch = impls.import_torch() if config.torch else None
    torch_device, torch_info, notes = "cpu", None, []
    if config.torch and torch is None:
        notes.append("PyTorch is not installed: torch columns skipped (pip install 'jax_conv_bpi[torch]')")
    if torch is not None:
        if device.platform == "gpu":
            if torch.cuda.is_available():
                torch_device = "cuda"
            else:
                notes.append("JAX runs on GPU but PyTorch has no CUDA: torch columns skipped")
                torch = None
        if torch is not None:
            torch_info = impls.configure_torch(torch, torch_device)
    if config.platform not in (None, "auto") and config.platform != device.platform:
        notes.append(f"--platform {config.platform} ignored: no such device here, ran on {device.platform}")

    shapes = config.shapes
    wanted = config.training_shapes
    selected = [s for s in shapes if wanted is None or s.name in wanted]
    train_shapes = selected if config.training else []
    wgrad_shapes = selected if config.weight_grad else []
    n_sections = len(shapes) + len(train_shapes) + len(wgrad_shapes)
    progress = timing.Progress(n_sections * config.reps + 2, enabled=config.progress)
    result: dict = {
        "schema": SCHEMA,
        "machine": machine.machine_info(device, torch_info),
        "config": {
            "reps": config.reps,
            "warmup": config.warmup,
            "quick": config.quick,
            "torch": torch is not None,
            "training": [s.name for s in train_shapes],
            "weight_grad": [s.name for s in wgrad_shapes],
            "seed": config.seed,
            "check_rtol": effective_rtol(config),
            "min_sample_s": config.min_sample_s,
            "settle": config.settle,
            "dtype": config.dtype,
            "precision": config.precision,
            "shapes": [s.name for s in shapes],
            "opt_in": jcb.cpu_compiler_options() if sections.opt_in_applies(config, device) else None,
        },
        "notes": notes,
    }
    peak_n = config.peak_n or ((1024 if config.quick else 2048) if device.platform == "cpu" else 8192)
    progress.set("matmul peak")
    peaks = [sections.matmul_peak(device, peak_n, config)]
    progress.advance()

    def section(label: str, run_shape, of: list[AnyShape]) -> list[dict]:
        entries = []
        for shape in of:
            progress.set(f"{label} {shape.name}")
            entries.append(run_shape(shape, config, device, torch, torch_device, progress))
            progress.step_done(f"{label} {shape.name} done")
            gc.collect()
        return entries

    ops = section("op", sections.run_op_shape, shapes)
    train = section("training", sections.run_train_shape, train_shapes)
    wgrad = section("weight gradient", sections.run_weight_grad_shape, wgrad_shapes)

    progress.set("matmul peak")
    peaks.append(sections.matmul_peak(device, peak_n, config))
    progress.advance()
    progress.close()

    peak = max(p["gflops"] for p in peaks)
    result["machine"]["loadavg_end"] = machine.load_average()
    result["peak"] = {"gflops": peak, "n": peak_n, "runs": peaks}
    for e in ops:
        e["peak_share"] = {name: g / peak for name, g in e["gflops"].items()}
    # The 2-D suite keeps its keys (and tables); the N-D shapes get their own.
    for key, entries, of in (("ops", ops, shapes), ("training", train, train_shapes)):
        result[key], result[f"{key}_nd"] = summary.split_by_suite(entries, of)
    result["summary"] = summary.summarize(result["ops"], result["training"])
    result["summary"]["by_rank"] = summary.summarize_by_rank(ops, train)
    result["weight_grad"] = wgrad
    result["summary"]["weight_grad"] = summary.summarize_weight_grad(wgrad)
    result["memory"] = summary.memory_summary([s for s in shapes if not isinstance(s, ShapeND)], result["ops"])
    result["memory_nd"] = summary.memory_summary([s for s in shapes if isinstance(s, ShapeND)], result["ops_nd"])
    every = result["ops"] + result["training"] + result["ops_nd"] + result["training_nd"] + wgrad
    result["first_call"] = summary.first_call_summary(every)
    result["checks_ok"] = all(e["check"]["ok"] is not False for e in ops + train + wgrad)
    return result
