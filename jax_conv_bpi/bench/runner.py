"""The benchmark run: correctness check, interleaved timing, derived numbers.

``run(config)`` returns a JSON-ready dict (see ``report`` for its rendering);
``main(argv)`` is the command line (``python -m jax_conv_bpi.bench --help``).
The 2-D ``Shape`` entries land in ``ops`` / ``training`` (as before the N-D
suite existed), the ``ShapeND`` entries in ``ops_nd`` / ``training_nd``; the
weight gradient alone, every rank, in ``weight_grad``. The summary has the
2-D geomeans and, under ``by_rank``, the geomeans of each rank over both
kinds. On CPU each entry names the formulation of each of the library's
primitives (``paths``).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import gc
import json
import os
import pathlib
import platform as _platform
import signal
import subprocess
import sys
import warnings

import jax
import numpy as np

from . import impls, report, timing
from .suite import AnyShape, Shape, ShapeND, load_suite, load_suite_nd, select, shape_from_dict

SCHEMA = "jax_conv_bpi.bench/2"
# --quick times the training step on one shape per kind of layer only (compiling
# three gradients per shape is most of a quick run's time), and on at least one
# shape of every rank that was selected.
QUICK_TRAINING = (
    "dcgan_g_k4s2p1_b32",
    "resnet50_l1_k3s1p1_b32",
    "unet_up_k2s2_b1",
    "mobilenetv2_dw_k3s2p1_b32",
    "hifigan_up2_k16s8p4_b16",
    "unet3d_deconv_k3s2p1_b1",
)


@dataclasses.dataclass
class Config:
    """What to run. ``quick()`` gives the settings of ``--quick``."""

    shapes: list[AnyShape]  # 2-D ``Shape`` and ``ShapeND`` entries, timed in this order
    reps: int = 7
    warmup: int = 2
    torch: bool = True
    training: bool = True
    weight_grad: bool = True  # the weight gradient alone, on the training-step shapes
    platform: str | None = None
    peak_n: int | None = None  # matmul size for the peak; None: 2048 on CPU (quick 1024), 8192 on GPU
    min_sample_s: float = 0.005
    check_rtol: float = 1e-4
    seed: int = 0
    quick: bool = False
    progress: bool = True
    probe_hazards: bool = True
    training_shapes: tuple[str, ...] | None = None  # names (training step, weight gradient); None: every shape
    settle: bool = True  # one untimed call of the same implementation before each sample
    opt_in: bool = True  # on CPU, also time ours and jax.vjp with jax_conv_bpi.cpu_compiler_options()
    dtype: str = "float32"  # the arrays of every implementation: "float32" or "bfloat16"
    # "highest": full float32 everywhere; "default": the N-D entries' JAX code at the backend's default
    # precision (TF32 on NVIDIA GPUs) and PyTorch's TF32 on for them; the 2-D entries stay HIGHEST.
    precision: str = "highest"

    def __post_init__(self):
        if self.dtype not in impls.DTYPES:
            raise ValueError(f"dtype must be one of {impls.DTYPES}, got {self.dtype!r}")
        if self.precision not in impls.PRECISIONS:
            raise ValueError(f"precision must be one of {impls.PRECISIONS}, got {self.precision!r}")

    @classmethod
    def quick_config(cls, shapes: list[AnyShape], **overrides) -> Config:
        """Every suite shape at about 1/8 of its work, 3 repetitions, a smaller peak matmul."""
        small = [s.scaled_down(8) for s in shapes]
        training = quick_training(shapes)
        settings = {
            "reps": 3,
            "warmup": 1,
            "min_sample_s": 0.002,
            "quick": True,
            "training_shapes": training,
        }
        settings.update(overrides)
        return cls(shapes=small, **settings)


def quick_training(shapes: list[AnyShape]) -> tuple[str, ...]:
    """``QUICK_TRAINING``'s selected shapes, plus the first shape of each kind and rank that has none."""
    names = [s.name for s in shapes]
    chosen = [n for n in QUICK_TRAINING if n in names]
    covered = {_kind(s) for s in shapes if s.name in chosen}
    for s in shapes:
        if _kind(s) not in covered:
            chosen.append(s.name)
            covered.add(_kind(s))
    return tuple(chosen)


def _kind(shape: AnyShape) -> tuple[str, int]:
    return (type(shape).__name__, shape.rank)


def rank_key(rank: int) -> str:
    """The JSON key of a rank's summary: ``'1d'``, ``'2d'``, ``'3d'``."""
    return f"{rank}d"


# -- machine ------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or _platform.machine()


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine skews timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def source_revision() -> str | None:
    """``git describe`` of the checkout the package runs from (``None`` when installed)."""
    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info(device, torch_info: dict | None) -> dict:
    import jaxlib

    import jax_conv_bpi

    return {
        "jax_conv_bpi": jax_conv_bpi.__version__,
        "revision": source_revision(),
        "cpu": cpu_model(),
        "cores": impls.usable_cores(),
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib(),
        "platform": _platform.platform(),
        "python": _platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "jax_platform": device.platform,
        "jax_device": getattr(device, "device_kind", str(device)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "native": jax_conv_bpi.native_status() if device.platform == "cpu" else None,
        "loadavg_start": load_average(),
        "torch": torch_info,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def pick_device(platform: str | None):
    """The JAX device to run on: ``platform`` is honoured only where a GPU exists."""
    default = jax.devices()[0]
    if platform in (None, "auto") or platform == default.platform:
        return default
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        return default  # CPU-only machine: the option is ignored
    if platform == "cpu":
        return jax.devices("cpu")[0]
    return gpus[0]


# -- the XLA CPU hazard of the plain-JAX baseline -------------------------------


def baseline_may_abort(shape: AnyShape, device) -> bool:
    """Strided + dilated shapes whose lax-autodiff input gradient may abort XLA CPU."""
    return device.platform == "cpu" and max(shape.stride) > 1 and max(shape.dilation) > 1


_PROBES: dict[AnyShape, tuple[bool, str]] = {}


def probe_baseline(shape: AnyShape, timeout: float = 300) -> tuple[bool, str]:
    """Run the plain-JAX baselines of ``shape`` in a child process; ``(survived, detail)``.

    Cached per shape for the life of the process.
    """
    if shape not in _PROBES:
        _PROBES[shape] = _probe(shape, timeout)
    return _PROBES[shape]


def _probe(shape: AnyShape, timeout: float) -> tuple[bool, str]:
    return run_probe_process(shape.to_dict(), timeout)


def run_probe_process(shape_dict: dict, timeout: float) -> tuple[bool, str]:
    """``python -m jax_conv_bpi.bench --probe-shape JSON`` in a child; ``(exit 0, detail)``."""
    cmd = [sys.executable, "-m", "jax_conv_bpi.bench", "--probe-shape", json.dumps(shape_dict)]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    root = str(pathlib.Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return False, f"probe timed out after {timeout:.0f} s"
    if proc.returncode == 0:
        return True, "probe passed"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return False, f"skipped: the plain-JAX baseline killed a probe process ({name}, the XLA CPU hazard)"
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    return False, f"probe exited with status {proc.returncode}: {tail[0][:200]}"


def _run_probe(shape_json: str) -> int:
    shape = shape_from_dict(json.loads(shape_json))
    dout, w = shape.arrays(0)
    jax.block_until_ready(jax.jit(impls.jax_vjp_fn(shape))(dout, w))
    x = np.zeros(shape.x_shape, np.float32)
    jax.block_until_ready(jax.jit(impls.train_fn(shape, "jax_grad"))(x, w, dout))
    return 0


# -- correctness ----------------------------------------------------------------


def rel_error(a, b) -> float:
    """``max |a - b| / max |b|`` over every leaf (0 when both are zero)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    worst = 0.0
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            return float("inf")
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        err = float(np.max(np.abs(x - y))) if y.size else 0.0
        worst = max(worst, err / scale if scale else err)
    return worst


# The correctness check's tolerance off full float32: bfloat16 keeps 8 bits of mantissa (each result is
# rounded to ~2**-8 of the largest), TF32 10 bits in the products.
BFLOAT16_RTOL = 2e-2
TF32_RTOL = 1e-2


def effective_rtol(config: Config) -> float:
    """``config.check_rtol``, widened for bfloat16 or the default (TF32-allowed) precision."""
    rtol = config.check_rtol
    if config.dtype == "bfloat16":
        rtol = max(rtol, BFLOAT16_RTOL)
    if config.precision == "default":
        rtol = max(rtol, TF32_RTOL)
    return rtol


def check_outputs(outputs: dict, reference: str | None, rtol: float) -> dict:
    """Every implementation against ``reference``; ``ok`` is about ``ours``."""
    if reference is None:
        return {"reference": None, "rel_err": {}, "ok": None, "rtol": rtol}
    ref = outputs[reference]
    errs = {name: rel_error(out, ref) for name, out in outputs.items() if name != reference}
    return {
        "reference": reference,
        "rel_err": errs,
        "ok": bool(errs.get("ours", float("inf")) <= rtol),
        "peers_ok": all(e <= rtol for e in errs.values()),
        "rtol": rtol,
    }


# -- one section ------------------------------------------------------------------


def _timed_section(prepared: dict, config: Config, progress: timing.Progress) -> dict:
    samples = timing.measure(
        {name: p.call for name, p in prepared.items()},
        reps=config.reps,
        warmup=config.warmup,
        min_sample_s=config.min_sample_s,
        on_rep=progress.advance,
        settle=config.settle,
    )
    return {name: timing.summarize(s) for name, s in samples.items()}


def _first_calls(prepared: dict) -> dict:
    """Seconds from ``jax.jit`` to the first result (trace + compile + run), per JAX implementation."""
    return {name: p.first_call_s for name, p in prepared.items() if p.first_call_s is not None}


def first_call_summary(entries: list[dict]) -> dict | None:
    """The slowest first call of ours over ``entries`` (op and training step alike)."""
    timed = [(e["first_call_s"]["ours"], e["name"]) for e in entries if "ours" in e.get("first_call_s", {})]
    if not timed:
        return None
    worst, name = max(timed)
    return {"max_s": worst, "shape": name, "count": len(timed)}


def _ratios(times: dict, ours: str = "ours") -> dict:
    t = times.get(ours)
    if t is None:
        return {}
    return {peer: v["median_ms"] / t["median_ms"] for peer, v in times.items() if peer != ours}


def _peak(device, n: int, config: Config) -> dict:
    fn, flops = impls.matmul_peak_fn(n)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    p = impls.prepare_jax(fn, (a, a), device)
    samples = timing.measure({"dot": p.call}, reps=max(3, config.reps), warmup=config.warmup, min_sample_s=0.05)
    best = min(samples["dot"])
    return {"n": n, "gflops": flops / best / 1e9, "median_ms": 1e3 * float(np.median(samples["dot"]))}


def run_op_shape(shape: AnyShape, config: Config, device, torch, torch_device, progress) -> dict:
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
        paths=_paths(shape, device, config),
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
    times = _timed_section(prepared, config, progress)
    entry["times"] = {name: t for name, t in times.items() if name not in opt_in}
    entry["speedup"] = _ratios(entry["times"])
    entry["gflops"] = {name: shape.flops / (t["median_ms"] * 1e-3) / 1e9 for name, t in entry["times"].items()}
    entry["memory"] = {name: p.memory for name, p in prepared.items() if p.memory is not None and name not in opt_in}
    entry["first_call_s"] = _first_calls(prepared)
    if opt_in:
        opt_times = {name: t for name, t in times.items() if name in opt_in or name.startswith("torch")}
        opt_times["ours"] = times["ours"]
        entry["opt_in"] = {
            "times": opt_times,
            "speedup": _ratios(opt_times, ours="ours_opt"),
            "memory": {name: prepared[name].memory for name in opt_in if prepared[name].memory is not None},
        }
    entry["notes"] = notes
    return entry


def opt_in_applies(config: Config, device) -> bool:
    """The opt-in section runs on CPU when the installed jaxlib knows the options."""
    import jax_conv_bpi

    return config.opt_in and device.platform == "cpu" and bool(jax_conv_bpi.cpu_compiler_options())


def _paths(shape: AnyShape, device, config: Config) -> dict | None:
    return impls.cpu_paths(shape, config.dtype) if device.platform == "cpu" else None


def run_weight_grad_shape(shape: AnyShape, config: Config, device, torch, torch_device, progress) -> dict:
    """The weight gradient alone: ours, ``jax.vjp`` w.r.t. the weight, ``torch.nn.grad.conv{r}d_weight``."""
    dout, _ = shape.arrays(config.seed)
    x = np.random.default_rng(config.seed + 1).standard_normal(shape.x_shape, dtype=np.float32)
    entry: dict = {"name": shape.name, "rank": shape.rank, "flops": shape.flops, "notes": []}
    entry["paths"] = _paths(shape, device, config)
    entry["dense"] = shape.group == 1
    numerics = {"precision": config.precision, "dtype": config.dtype}
    entry["precision"] = "highest" if impls.jax_precision(shape, config.precision) is not None else "default"
    prepared = {
        name: impls.prepare_jax_weight_grad(shape, name, x, dout, device, **numerics) for name in ("ours", "jax_vjp")
    }
    if torch is not None:
        prepared["torch_conv_weight"] = impls.prepare_torch_weight_grad(torch, shape, x, dout, torch_device, **numerics)
    outputs = {name: p.to_numpy(p.call()) for name, p in prepared.items()}
    return _checked_and_timed(entry, prepared, outputs, "jax_vjp", config, progress)


def run_train_shape(shape: AnyShape, config: Config, device, torch, torch_device, progress) -> dict:
    dout, w = shape.arrays(config.seed)
    x = np.random.default_rng(config.seed + 1).standard_normal(shape.x_shape, dtype=np.float32)
    entry: dict = {"name": shape.name, "rank": shape.rank, "flops": 3 * shape.flops, "notes": []}
    entry["paths"] = _paths(shape, device, config)
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
    return _checked_and_timed(entry, prepared, outputs, reference, config, progress)


def _checked_and_timed(entry: dict, prepared: dict, outputs: dict, reference, config: Config, progress) -> dict:
    """``entry`` with the check of ``outputs`` against ``reference``, then the timings, memory and first calls."""
    entry["check"] = check_outputs(outputs, reference, effective_rtol(config))
    outputs.clear()  # the results are not needed while timing
    entry["times"] = _timed_section(prepared, config, progress)
    entry["speedup"] = _ratios(entry["times"])
    entry["memory"] = {name: p.memory for name, p in prepared.items() if p.memory is not None}
    entry["first_call_s"] = _first_calls(prepared)
    return entry


# -- the whole run ------------------------------------------------------------------


def run(config: Config) -> dict:
    """Run the benchmark described by ``config``; returns the JSON-ready result."""
    device = pick_device(config.platform)
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
        "machine": machine_info(device, torch_info),
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
            "opt_in": impls.jcb.cpu_compiler_options() if opt_in_applies(config, device) else None,
        },
        "notes": notes,
    }
    peak_n = config.peak_n or ((1024 if config.quick else 2048) if device.platform == "cpu" else 8192)
    progress.set("matmul peak")
    peaks = [_peak(device, peak_n, config)]
    progress.advance()

    def section(label: str, run_shape, of: list[AnyShape]) -> list[dict]:
        entries = []
        for shape in of:
            progress.set(f"{label} {shape.name}")
            entries.append(run_shape(shape, config, device, torch, torch_device, progress))
            progress.step_done(f"{label} {shape.name} done")
            gc.collect()
        return entries

    ops = section("op", run_op_shape, shapes)
    train = section("training", run_train_shape, train_shapes)
    wgrad = section("weight gradient", run_weight_grad_shape, wgrad_shapes)

    progress.set("matmul peak")
    peaks.append(_peak(device, peak_n, config))
    progress.advance()
    progress.close()

    peak = max(p["gflops"] for p in peaks)
    result["machine"]["loadavg_end"] = load_average()
    result["peak"] = {"gflops": peak, "n": peak_n, "runs": peaks}
    for e in ops:
        e["peak_share"] = {name: g / peak for name, g in e["gflops"].items()}
    # The 2-D suite keeps its keys (and tables); the N-D shapes get their own.
    for key, entries, of in (("ops", ops, shapes), ("training", train, train_shapes)):
        result[key] = [e for e, s in zip(entries, of) if not isinstance(s, ShapeND)]
        result[f"{key}_nd"] = [e for e, s in zip(entries, of) if isinstance(s, ShapeND)]
    result["summary"] = summarize(result["ops"], result["training"])
    result["summary"]["by_rank"] = summarize_by_rank(ops, train)
    result["weight_grad"] = wgrad
    result["summary"]["weight_grad"] = summarize_weight_grad(wgrad)
    result["memory"] = memory_summary([s for s in shapes if not isinstance(s, ShapeND)], result["ops"])
    result["memory_nd"] = memory_summary([s for s in shapes if isinstance(s, ShapeND)], result["ops_nd"])
    every = result["ops"] + result["training"] + result["ops_nd"] + result["training_nd"] + wgrad
    result["first_call"] = first_call_summary(every)
    result["checks_ok"] = all(e["check"]["ok"] is not False for e in ops + train + wgrad)
    return result


def _geo(entries: list[dict], peer: str, only=None) -> dict | None:
    """Geomean, minimum and count of the speedups over ``peer`` (``None`` when none was timed)."""
    vals = [e["speedup"].get(peer) for e in entries if only is None or only(e)]
    g = timing.geomean(vals)
    return None if g is None else {"geomean": g, "min": min(v for v in vals if v), "count": len(vals)}


def summarize(ops: list[dict], train: list[dict]) -> dict:
    peers = sorted({p for e in ops for p in e["speedup"]})
    out = {
        "op": {p: _geo(ops, p) for p in peers},
        "op_depthwise": {p: _geo(ops, p, lambda e: e["depthwise"]) for p in peers},
    }
    opt = [e["opt_in"] | {"depthwise": e["depthwise"]} for e in ops if "opt_in" in e]
    if opt:
        peers = sorted({p for e in opt for p in e["speedup"]})
        out["op_opt_in"] = {p: _geo(opt, p) for p in peers}
        out["op_opt_in_depthwise"] = {p: _geo(opt, p, lambda e: e["depthwise"]) for p in peers}
    if train:
        out["training"] = {p: _geo(train, p) for p in sorted({p for e in train for p in e["speedup"]})}
    return out


def summarize_by_rank(ops: list[dict], train: list[dict]) -> dict:
    """Per rank (``'1d'``, ``'2d'``, ``'3d'``, only those run): geomean speedups of the op and of the training step.

    The op's peers are ``jax_vjp`` and the rank's PyTorch functions
    (``torch_conv_transpose{r}d``, ``torch_conv{r}d_input``); the training
    step's ``jax_grad`` and ``torch_autograd``. 2-D ``Shape`` and 2-D
    ``ShapeND`` entries count together.
    """
    out = {}
    for rank in sorted({e["rank"] for e in ops + train}):
        rank_ops = [e for e in ops if e["rank"] == rank]
        rank_train = [e for e in train if e["rank"] == rank]
        out[rank_key(rank)] = {
            "shapes": [e["name"] for e in rank_ops],
            "training_shapes": [e["name"] for e in rank_train],
            "op": {p: _geo(rank_ops, p) for p in ("jax_vjp", *impls.torch_op_impls(rank))},
            "training": {p: _geo(rank_train, p) for p in ("jax_grad", "torch_autograd")},
        }
    return out


def summarize_weight_grad(entries: list[dict]) -> dict:
    """Per rank (``'1d'``, ...): geomean speedups of the weight gradient, over all its shapes and the dense ones."""
    out = {}
    for rank in sorted({e["rank"] for e in entries}):
        of_rank = [e for e in entries if e["rank"] == rank]
        out[rank_key(rank)] = {
            "shapes": [e["name"] for e in of_rank],
            "all": {p: _geo(of_rank, p) for p in ("jax_vjp", "torch_conv_weight")},
            "dense": {p: _geo(of_rank, p, lambda e: e["dense"]) for p in ("jax_vjp", "torch_conv_weight")},
        }
    return out


def memory_summary(shapes: list[AnyShape], ops: list[dict]) -> dict | None:
    """Peak memory of every implementation on the largest shape, vs inputs + output."""
    if not ops:
        return None
    largest = max(range(len(shapes)), key=lambda i: shapes[i].io_bytes)
    e = ops[largest]
    io = shapes[largest].io_bytes
    return {
        "shape": e["name"],
        "io_bytes": io,
        "impls": {name: {"bytes": m["total"], "ratio": m["total"] / io} for name, m in e["memory"].items()},
    }


# -- command line ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jax_conv_bpi.bench",
        description=(
            "Time jax_conv_bpi's transposed convolution (conv2d_backprop_input on the 2-D suite, conv_transpose on "
            "the 1-D/3-D suite) against plain JAX autodiff and PyTorch."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a run under a minute: shapes at ~1/8 of their work (batch/8, else halved sizes), 3 repetitions",
    )
    p.add_argument(
        "--shapes", help="comma-separated shape names, from either suite (default: every shape of both suites)"
    )
    p.add_argument(
        "--suite",
        metavar="PATH",
        help="a shapes JSON file instead of the bundled 2-D suite (entries with 'spatial' are read as N-D shapes)",
    )
    p.add_argument(
        "--suite-nd",
        metavar="PATH",
        help="an N-D shapes JSON file instead of the bundled 1-D/3-D suite (shapes_nd.json)",
    )
    p.add_argument("--no-nd", action="store_true", help="leave out the N-D suite (only the --suite / 2-D shapes)")
    p.add_argument("--reps", type=int, help="timed repetitions per implementation (default 7, quick 3)")
    p.add_argument("--warmup", type=int, help="untimed calls before timing (default 2, quick 1)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
    p.add_argument("--no-training", action="store_true", help="skip the training-step section")
    p.add_argument(
        "--no-weight-grad", action="store_true", help="skip the weight-gradient section (on the training shapes)"
    )
    p.add_argument(
        "--no-opt-in",
        action="store_true",
        help="skip the opt-in section (CPU: ours and jax.vjp compiled with jax_conv_bpi.cpu_compiler_options())",
    )
    p.add_argument(
        "--platform",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="JAX device (and torch CUDA) where a GPU exists; ignored on CPU-only machines",
    )
    p.add_argument(
        "--dtype",
        choices=impls.DTYPES,
        default="float32",
        help="dtype of every implementation's arrays (JAX and PyTorch); bfloat16 widens the check's tolerance",
    )
    p.add_argument(
        "--precision",
        choices=impls.PRECISIONS,
        default="highest",
        help="highest: full float32 everywhere (default); default: the N-D entries' conv_transpose and lax "
        "baselines at the backend's default precision and PyTorch's TF32 on (TF32 on NVIDIA GPUs); the 2-D "
        "entries (MindSpore's API) stay at full float32 by design",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    p.add_argument("--png", metavar="PATH", help="write a bar chart of the speedups (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--probe-shape", help=argparse.SUPPRESS)
    return p


def suite_from_args(args: argparse.Namespace) -> list[AnyShape]:
    """The 2-D suite (``--suite`` or bundled), then the N-D one (``--suite-nd`` or bundled, unless ``--no-nd``)."""
    shapes = load_suite(args.suite) + ([] if args.no_nd else load_suite_nd(args.suite_nd))
    dup = sorted(name for name, n in collections.Counter(s.name for s in shapes).items() if n > 1)
    if dup:
        raise ValueError(f"shape names must be unique across the suites, got duplicates {dup}")
    return shapes


def config_from_args(args: argparse.Namespace) -> Config:
    shapes = select(suite_from_args(args), args.shapes.split(",") if args.shapes else None)
    overrides = {
        "torch": not args.no_torch,
        "training": not args.no_training,
        "weight_grad": not args.no_weight_grad,
        "opt_in": not args.no_opt_in,
        "platform": args.platform,
        "seed": args.seed,
        "progress": not args.no_progress,
        "dtype": args.dtype,
        "precision": args.precision,
    }
    if args.reps is not None:
        overrides["reps"] = args.reps
    if args.warmup is not None:
        overrides["warmup"] = args.warmup
    if args.quick:
        return Config.quick_config(shapes, **overrides)
    return Config(shapes=shapes, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.probe_shape:
        return _run_probe(args.probe_shape)
    config = config_from_args(args)
    if config.reps < 7 and not config.quick:
        warnings.warn(f"--reps {config.reps}: medians of fewer than 7 runs are noisy", stacklevel=1)
    result = run(config)
    print(report.format_report(result))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"\nJSON written to {args.json}")
    if args.png:
        try:
            report.plot(result, args.png)
            print(f"chart written to {args.png}")
        except ImportError:
            print("matplotlib is not installed: no chart (pip install 'jax_conv_bpi[bench]')", file=sys.stderr)
    if not result["checks_ok"]:
        print("\nCORRECTNESS CHECK FAILED (see the check column)", file=sys.stderr)
        return 1
    return 0
