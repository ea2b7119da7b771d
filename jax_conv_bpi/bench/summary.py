"""The derived numbers of a run: geomean speedups (the 2-D suite's, per rank over both suites, of the weight
gradient), the memory of the largest shape, the slowest first call; and the split of the entries by suite."""

from __future__ import annotations

from . import impls, timing
from .suite import AnyShape, ShapeND


def rank_key(rank: int) -> str:
    """The JSON key of a rank's summary: ``'1d'``, ``'2d'``, ``'3d'``."""
    return f"{rank}d"


def first_call_summary(entries: list[dict]) -> dict | None:
    """The slowest first call of ours over ``entries`` (op and training step alike)."""
    timed = [(e["first_call_s"]["ours"], e["name"]) for e in entries if "ours" in e.get("first_call_s", {})]
    if not timed:
        return None
    worst, name = max(timed)
    return {"max_s": worst, "shape": name, "count": len(timed)}


def geomean_speedup(entries: list[dict], peer: str, only=None) -> dict | None:
    """Geomean, minimum and count of the speedups over ``peer`` (``None`` when none was timed)."""
    vals = [e["speedup"].get(peer) for e in entries if only is None or only(e)]
    g = timing.geomean(vals)
    return None if g is None else {"geomean": g, "min": min(v for v in vals if v), "count": len(vals)}


def summarize(ops: list[dict], train: list[dict]) -> dict:
    """Geomean speedups of the op (every shape, the depthwise ones, the opt-in section) and the training step."""
    peers = sorted({p for e in ops for p in e["speedup"]})
    out = {
        "op": {p: geomean_speedup(ops, p) for p in peers},
        "op_depthwise": {p: geomean_speedup(ops, p, lambda e: e["depthwise"]) for p in peers},
    }
    opt = [e["opt_in"] | {"depthwise": e["depthwise"]} for e in ops if "opt_in" in e]
    if opt:
        peers = sorted({p for e in opt for p in e["speedup"]})
        out["op_opt_in"] = {p: geomean_speedup(opt, p) for p in peers}
        out["op_opt_in_depthwise"] = {p: geomean_speedup(opt, p, lambda e: e["depthwise"]) for p in peers}
    if train:
        out["training"] = {p: geomean_speedup(train, p) for p in sorted({p for e in train for p in e["speedup"]})}
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
            "op": {p: geomean_speedup(rank_ops, p) for p in ("jax_vjp", *impls.torch_op_impls(rank))},
            "training": {p: geomean_speedup(rank_train, p) for p in ("jax_grad", "torch_autograd")},
        }
    return out


def summarize_weight_grad(entries: list[dict]) -> dict:
    """Per rank (``'1d'``, ...): geomean speedups of the weight gradient, over all its shapes and the dense ones."""
    out = {}
    for rank in sorted({e["rank"] for e in entries}):
        of_rank = [e for e in entries if e["rank"] == rank]
        out[rank_key(rank)] = {
            "shapes": [e["name"] for e in of_rank],
            "all": {p: geomean_speedup(of_rank, p) for p in ("jax_vjp", "torch_conv_weight")},
            "dense": {p: geomean_speedup(of_rank, p, lambda e: e["dense"]) for p in ("jax_vjp", "torch_conv_weight")},
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


def split_by_suite(entries: list[dict], shapes: list[AnyShape]) -> tuple[list[dict], list[dict]]:
    """``entries`` (one per shape of ``shapes``) as ``(2-D Shape entries, ShapeND entries)``."""
    flat = [e for e, s in zip(entries, shapes) if not isinstance(s, ShapeND)]
    nd = [e for e, s in zip(entries, shapes) if isinstance(s, ShapeND)]
    return flat, nd
