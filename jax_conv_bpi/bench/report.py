"""Rendering of a benchmark result: text tables and a bar chart."""

from __future__ import annotations

from .impls import LABELS

_OP_PEERS = ("torch_conv_transpose2d", "torch_conv2d_input", "jax_vjp")
_SHORT = {
    "ours": "ours",
    "jax_vjp": "jax.vjp",
    "torch_conv_transpose2d": "convT",
    "torch_conv2d_input": "c2d_in",
    "jax_grad": "jax.grad",
    "torch_autograd": "torch",
}


def _ms(entry: dict, name: str) -> str:
    t = entry["times"].get(name)
    return f"{t['median_ms']:9.2f}" if t else f"{'-':>9}"


def _x(value) -> str:
    return f"{value:7.2f}x" if value is not None else f"{'-':>8}"


def _geo(summary: dict | None, key: str = "geomean") -> str:
    return _x(summary[key]) if summary else _x(None)


def machine_lines(result: dict) -> list[str]:
    m = result["machine"]
    t = m.get("torch")
    lines = [
        f"machine: {m['cpu']}, {m['cores']} usable cores, {m['memory_gib']} GiB, {m['platform']}",
        f"jax_conv_bpi {m['jax_conv_bpi']}"
        + (f" ({m['revision']})" if m.get("revision") else "")
        + f", JAX {m['jax']} / jaxlib {m['jaxlib']} on {m['jax_platform']} ({m['jax_device']}), Python {m['python']}",
        (
            f"PyTorch {t['version']} on {t['device']} ({t['threads']} threads"
            + (f", CUDA {t['cuda']}, cuDNN {t['cudnn']}" if t.get("cuda") else "")
            + ")"
            if t
            else "PyTorch: not used"
        ),
    ]
    if m.get("loadavg_start") is not None:
        lines.append(
            f"load average (1/5/15 min) at start {m['loadavg_start']}, at end {m.get('loadavg_end')}"
            + (
                " - the machine was busy, timings are noisy"
                if max(m["loadavg_start"][0], (m.get("loadavg_end") or [0])[0]) > 0.5 * m["cores"] + 0.5
                else ""
            )
        )
    if m.get("xla_flags"):
        lines.append(f"XLA_FLAGS={m['xla_flags']}")
    c = result["config"]
    lines.append(
        f"float32, medians of {c['reps']} interleaved runs after {c['warmup']} warm-up"
        + (" (each after one untimed call of the same implementation)" if c.get("settle") else "")
        + (" (QUICK: shapes scaled to ~1/8 of the work, not for reporting)" if c["quick"] else "")
        + f"; matmul peak {result['peak']['gflops']:.1f} GFLOP/s (jnp.dot {result['peak']['n']}^2, best of the run)"
    )
    return lines


def op_table(result: dict) -> list[str]:
    ops = result["ops"]
    width = max([len(e["name"]) for e in ops] + [5])
    head = (
        f"{'shape':<{width}} {'ours ms':>9} {'convT ms':>9} {'c2d_in ms':>9} {'jax.vjp ms':>10}"
        f" {'vs convT':>8} {'vs c2d_in':>9} {'vs vjp':>8} {'GFLOP/s':>8} {'%peak':>6} {'check':>9}"
    )
    lines = [head, "-" * len(head)]
    for e in ops:
        s = e["speedup"]
        ck = e["check"]
        err = ck["rel_err"].get("ours")
        check = "-" if ck["ok"] is None else (f"{err:.0e}" if ck["ok"] else "FAIL")
        lines.append(
            f"{e['name']:<{width}} {_ms(e, 'ours')} {_ms(e, 'torch_conv_transpose2d')} {_ms(e, 'torch_conv2d_input')}"
            f" {_ms(e, 'jax_vjp'):>10} {_x(s.get('torch_conv_transpose2d'))} {_x(s.get('torch_conv2d_input')):>9}"
            f" {_x(s.get('jax_vjp'))} {e['gflops']['ours']:8.1f} {100 * e['peak_share']['ours']:5.1f}% {check:>9}"
        )
    summ = result["summary"]
    lines.append("-" * len(head))
    lines.append(
        f"{'geomean':<{width + 41}} {_geo(summ['op'].get('torch_conv_transpose2d'))}"
        f" {_geo(summ['op'].get('torch_conv2d_input')):>9} {_geo(summ['op'].get('jax_vjp'))}"
    )
    lines.append(
        f"{'minimum':<{width + 41}} {_geo(summ['op'].get('torch_conv_transpose2d'), 'min')}"
        f" {_geo(summ['op'].get('torch_conv2d_input'), 'min'):>9} {_geo(summ['op'].get('jax_vjp'), 'min')}"
    )
    dw = summ["op_depthwise"]
    if any(dw.values()):
        lines.append(
            f"{'depthwise':<{width + 41}} {_geo(dw.get('torch_conv_transpose2d'))}"
            f" {_geo(dw.get('torch_conv2d_input')):>9} {_geo(dw.get('jax_vjp'))}"
        )
    lines.append("speedup = t_peer / t_ours (> 1: jax_conv_bpi is faster); check = max|ours - ref| / max|ref|")
    return lines


def opt_in_table(result: dict) -> list[str]:
    """Ours and the jax.vjp baseline both compiled with ``cpu_compiler_options()`` (same timing run)."""
    ops = [e for e in result["ops"] if "opt_in" in e]
    if not ops:
        return []
    width = max(len(e["name"]) for e in ops)
    options = result["config"].get("opt_in") or {}
    head = (
        f"{'opt-in: both compiled with':<{width}} {'ours ms':>9} {'jax.vjp ms':>10} {'ours dflt':>9}"
        f" {'vs convT':>8} {'vs c2d_in':>9} {'vs vjp':>8} {'vs dflt':>8}"
    )
    lines = [
        "opt-in: jax.jit(f, compiler_options=jax_conv_bpi.cpu_compiler_options()) applied to ours AND to jax.vjp",
        "        " + ", ".join(f"{k}={v}" for k, v in options.items()),
        head,
        "-" * len(head),
    ]
    for e in ops:
        o = e["opt_in"]
        s = o["speedup"]
        lines.append(
            f"{e['name']:<{width}} {_ms(o, 'ours_opt')} {_ms(o, 'jax_vjp_opt'):>10} {_ms(o, 'ours')}"
            f" {_x(s.get('torch_conv_transpose2d'))} {_x(s.get('torch_conv2d_input')):>9}"
            f" {_x(s.get('jax_vjp_opt'))} {_x(s.get('ours'))}"
        )
    summ = result["summary"].get("op_opt_in", {})
    lines.append("-" * len(head))
    for key, label in (("geomean", "geomean"), ("min", "minimum")):
        lines.append(
            f"{label:<{width + 31}} {_geo(summ.get('torch_conv_transpose2d'), key)}"
            f" {_geo(summ.get('torch_conv2d_input'), key):>9} {_geo(summ.get('jax_vjp_opt'), key)}"
            f" {_geo(summ.get('ours'), key)}"
        )
    dw = result["summary"].get("op_opt_in_depthwise", {})
    if any(dw.values()):
        lines.append(
            f"{'depthwise':<{width + 31}} {_geo(dw.get('torch_conv_transpose2d'))}"
            f" {_geo(dw.get('torch_conv2d_input')):>9} {_geo(dw.get('jax_vjp_opt'))} {_geo(dw.get('ours'))}"
        )
    lines.append("speedup = t_peer / t_ours_opt; 'vs dflt' = ours by default / ours with the options")
    return lines


def train_table(result: dict) -> list[str]:
    train = result["training"]
    if not train:
        return []
    width = max(len(e["name"]) for e in train)
    head = (
        f"{'training step':<{width}} {'ours ms':>9} {'jax.grad ms':>11} {'torch ms':>9}"
        f" {'vs jax.grad':>11} {'vs torch':>8} {'check':>9}"
    )
    lines = [head, "-" * len(head)]
    for e in train:
        s, ck = e["speedup"], e["check"]
        err = ck["rel_err"].get("ours")
        check = "-" if ck["ok"] is None else (f"{err:.0e}" if ck["ok"] else "FAIL")
        lines.append(
            f"{e['name']:<{width}} {_ms(e, 'ours')} {_ms(e, 'jax_grad'):>11} {_ms(e, 'torch_autograd')}"
            f" {_x(s.get('jax_grad')):>11} {_x(s.get('torch_autograd'))} {check:>9}"
        )
    summ = result["summary"].get("training", {})
    lines.append("-" * len(head))
    lines.append(f"{'geomean':<{width + 32}} {_geo(summ.get('jax_grad')):>11} {_geo(summ.get('torch_autograd'))}")
    lines.append("training step = forward conv2d + gradients w.r.t. input and weight (jax.value_and_grad)")
    return lines


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def memory_lines(result: dict) -> list[str]:
    mem = result.get("memory")
    if not mem or not mem["impls"]:
        return []
    lines = [
        f"peak memory on the largest shape ({mem['shape']}): inputs + output = {_bytes(mem['io_bytes'])}",
    ]
    for name, m in mem["impls"].items():
        lines.append(f"  {LABELS.get(name, name):<24} {_bytes(m['bytes']):>10}  {m['ratio']:5.2f}x inputs+output")
    lines.append("  (JAX: compiled executable's memory analysis, arguments + outputs + temporaries)")
    return lines


def format_report(result: dict) -> str:
    parts = machine_lines(result) + [""] + op_table(result)
    ot = opt_in_table(result)
    if ot:
        parts += [""] + ot
    tt = train_table(result)
    if tt:
        parts += [""] + tt
    ml = memory_lines(result)
    if ml:
        parts += [""] + ml
    notes = list(result.get("notes", []))
    for e in result["ops"] + result["training"]:
        notes += [f"{e['name']}: {n}" for n in e.get("notes", [])]
        ck = e["check"]
        if ck.get("peers_ok") is False:
            bad = {k: f"{v:.1e}" for k, v in ck["rel_err"].items() if k != "ours" and v > ck["rtol"]}
            notes.append(f"{e['name']}: peers disagree with {ck['reference']}: {bad}")
    if notes:
        parts += [""] + [f"note: {n}" for n in notes]
    return "\n".join(parts)


def plot(result: dict, path: str) -> None:
    """Bar chart of the speedups (log scale, 1x line) per shape and peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ops = result["ops"]
    train = result["training"]
    names = [e["name"] for e in ops]
    peers = [p for p in _OP_PEERS if any(p in e["speedup"] for e in ops)]
    rows = 2 if train else 1
    fig, axes = plt.subplots(rows, 1, figsize=(max(8, 0.9 * len(names) + 3), 4.2 * rows), squeeze=False)

    def bars(ax, entries, peer_names, title):
        width = 0.8 / max(1, len(peer_names))
        for k, peer in enumerate(peer_names):
            vals = [e["speedup"].get(peer, float("nan")) for e in entries]
            xs = [i + (k - (len(peer_names) - 1) / 2) * width for i in range(len(entries))]
            ax.bar(xs, vals, width, label=f"vs {LABELS.get(peer, peer)}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(fmt)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xticks(range(len(entries)))
        ax.set_xticklabels([e["name"] for e in entries], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("speedup of jax_conv_bpi (t_peer / t_ours)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)

    m = result["machine"]
    bars(axes[0][0], ops, peers, f"conv2d_backprop_input, float32 - {m['cpu']}, {m['cores']} cores, JAX {m['jax']}")
    if train:
        tpeers = [p for p in ("jax_grad", "torch_autograd") if any(p in e["speedup"] for e in train)]
        bars(axes[1][0], train, tpeers, "training step: forward conv2d + both gradients")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
