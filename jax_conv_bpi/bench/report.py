"""Rendering of a benchmark result: text tables and a bar chart.

The 2-D suite's tables (op, opt-in, training step) read ``ops`` and
``training``; the N-D suite's read ``ops_nd`` and ``training_nd``, the
per-rank table reads ``summary['by_rank']`` and the weight-gradient table
``weight_grad`` (every rank) and ``summary['weight_grad']``.
"""

from __future__ import annotations

from .impls import LABELS, torch_op_impls

_OP_PEERS = ("torch_conv_transpose2d", "torch_conv2d_input", "jax_vjp")


def _ms(entry: dict, name: str) -> str:
    t = entry["times"].get(name)
    return f"{t['median_ms']:9.2f}" if t else f"{'-':>9}"


def _x(value) -> str:
    return f"{value:7.2f}x" if value is not None else f"{'-':>8}"


def _geo(summary: dict | None, key: str = "geomean") -> str:
    return _x(summary[key]) if summary else _x(None)


def _speedup_cells(values: list[str], second: int = 9) -> str:
    """Speedup cells (``_x`` / ``_geo``): 'vs convT', the input-gradient peer's (``second`` wide), then the rest."""
    return " ".join(f"{v:>{second}}" if i == 1 else v for i, v in enumerate(values))


def _rank_peers(rank: int) -> tuple[str, str, str]:
    """The input gradient's peers for one rank: PyTorch's transposed convolution and input gradient, jax.vjp."""
    conv_t, conv_input = torch_op_impls(rank)
    return conv_t, conv_input, "jax_vjp"


def _op_columns(c_in: str, second: int) -> str:
    """The headers of ``_op_cells``: ``c_in`` names the input-gradient peer, its speedup column ``second`` wide."""
    return (
        f"{'ours ms':>9} {'convT ms':>9} {c_in + ' ms':>9} {'jax.vjp ms':>10}"
        f" {'vs convT':>8} {'vs ' + c_in:>{second}} {'vs vjp':>8} {'GFLOP/s':>8} {'%peak':>6} {'check':>9}"
    )


def _op_cells(e: dict, peers: tuple[str, ...], second: int = 9) -> str:
    """An input-gradient entry's cells after its name: times (ours, the peers), speedups, GFLOP/s, %peak, check."""
    times = " ".join([_ms(e, "ours"), _ms(e, peers[0]), _ms(e, peers[1]), f"{_ms(e, peers[2]):>10}"])
    speedups = _speedup_cells([_x(e["speedup"].get(p)) for p in peers], second)
    return f"{times} {speedups} {e['gflops']['ours']:8.1f} {100 * e['peak_share']['ours']:5.1f}% {_check(e):>9}"


def _summary_rows(indent: int, summary: dict, depthwise: dict, peers: tuple[str, ...]) -> list[str]:
    """Geomean and minimum rows of the peers' speedups, then the depthwise shapes' geomean where there are any."""
    rows = [
        f"{label:<{indent}} " + _speedup_cells([_geo(summary.get(p), key) for p in peers])
        for key, label in (("geomean", "geomean"), ("min", "minimum"))
    ]
    if any(depthwise.values()):
        rows.append(f"{'depthwise':<{indent}} " + _speedup_cells([_geo(depthwise.get(p)) for p in peers]))
    return rows


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
            + (f", OMP_WAIT_POLICY={t['omp_wait_policy']}" if t.get("omp_wait_policy") else "")
            + ")"
            if t
            else "PyTorch: not used"
        ),
    ]
    if m.get("native"):
        lines.append(m["native"])
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
        c.get("dtype", "float32")
        + (
            ", precision default (TF32 allowed on GPU; the 2-D entries at highest by design)"
            if c.get("precision") == "default"
            else ""
        )
        + (
            f" (check rtol {c['check_rtol']:g})"
            if c.get("dtype", "float32") != "float32" or c.get("precision") == "default"
            else ""
        )
        + f", medians of {c['reps']} interleaved runs after {c['warmup']} warm-up"
        + (" (each after one untimed call of the same implementation)" if c.get("settle") else "")
        + (" (QUICK: shapes scaled to ~1/8 of the work, not for reporting)" if c["quick"] else "")
        + f"; matmul peak {result['peak']['gflops']:.1f} GFLOP/s (jnp.dot {result['peak']['n']}^2, best of the run)"
    )
    return lines


def _check(entry: dict) -> str:
    ck = entry["check"]
    err = ck["rel_err"].get("ours")
    return "-" if ck["ok"] is None else (f"{err:.0e}" if ck["ok"] else "FAIL")


def _table(head: str, rows: list[str], footer: list[str], *, rule_below: bool = True) -> list[str]:
    """The header, a rule as wide, the rows, a second rule (``rule_below``), then ``footer`` (summaries, notes)."""
    rule = "-" * len(head)
    return [head, rule, *rows, *([rule] if rule_below else []), *footer]


def op_table(result: dict) -> list[str]:
    ops = result["ops"]
    if not ops:
        return []
    width = max([len(e["name"]) for e in ops] + [5])
    head = f"{'shape':<{width}} {_op_columns('c2d_in', 9)}"
    rows = [f"{e['name']:<{width}} {_op_cells(e, _OP_PEERS)}" for e in ops]
    summ = result["summary"]
    return _table(
        head,
        rows,
        [
            *_summary_rows(width + 41, summ["op"], summ["op_depthwise"], _OP_PEERS),
            "speedup = t_peer / t_ours (> 1: jax_conv_bpi is faster); check = max|ours - ref| / max|ref|",
        ],
    )


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
    peers = ("torch_conv_transpose2d", "torch_conv2d_input", "jax_vjp_opt", "ours")
    rows = [
        f"{e['name']:<{width}} {_ms(e['opt_in'], 'ours_opt')} {_ms(e['opt_in'], 'jax_vjp_opt'):>10}"
        f" {_ms(e['opt_in'], 'ours')} {_speedup_cells([_x(e['opt_in']['speedup'].get(p)) for p in peers])}"
        for e in ops
    ]
    summary = result["summary"]
    return [
        "opt-in: jax.jit(f, compiler_options=jax_conv_bpi.cpu_compiler_options()) applied to ours AND to jax.vjp",
        "        " + ", ".join(f"{k}={v}" for k, v in options.items()),
        *_table(
            head,
            rows,
            [
                *_summary_rows(width + 31, summary.get("op_opt_in", {}), summary.get("op_opt_in_depthwise", {}), peers),
                "speedup = t_peer / t_ours_opt; 'vs dflt' = ours by default / ours with the options",
            ],
        ),
    ]


def op_nd_table(result: dict) -> list[str]:
    """The N-D suite's input gradient: ours (``conv_transpose``) vs the rank's PyTorch functions and jax.vjp."""
    ops = result.get("ops_nd") or []
    if not ops:
        return []
    width = max([len(e["name"]) for e in ops] + [5])
    head = f"{'N-D shape':<{width}} {'rank':>4} {_op_columns('c_in', 8)}"
    note = "ours = jax.jit(conv_transpose); convT = torch conv_transpose{1,2,3}d, c_in = torch grad.conv{1,2,3}d_input"
    rows = [f"{e['name']:<{width}} {str(e['rank']) + '-D':>4} {_op_cells(e, _rank_peers(e['rank']), 8)}" for e in ops]
    return _table(head, rows, [note])


def _rank_row(key: str, r: dict) -> str:
    conv_t, conv_input = torch_op_impls(int(key[:-1]))
    op, tr = r["op"], r["training"]
    return (
        f"{key[:-1] + '-D':<16} {len(r['shapes']):>6} {_geo(op.get(conv_t))} {_geo(op.get(conv_input))}"
        f" {_geo(op.get('jax_vjp'))} {len(r['training_shapes']):>5} {_geo(tr.get('torch_autograd'))}"
        f" {_geo(tr.get('jax_grad')):>11}"
    )


def rank_table(result: dict) -> list[str]:
    """Geomean speedups per rank (1-D, 2-D, 3-D), the op and the training step, over both suites."""
    by_rank = result["summary"].get("by_rank") or {}
    if not by_rank:
        return []
    head = (
        f"{'geomean per rank':<16} {'shapes':>6} {'vs convT':>8} {'vs c_in':>8} {'vs vjp':>8}"
        f" {'train':>5} {'vs torch':>8} {'vs jax.grad':>11}"
    )
    note = "convT / c_in = the rank's torch conv_transpose{r}d / grad.conv{r}d_input; train = training-step shapes"
    return _table(head, [_rank_row(key, r) for key, r in by_rank.items()], [note], rule_below=False)


def train_table(result: dict, key: str = "training") -> list[str]:
    """The training steps of ``result[key]`` (``training``: the 2-D suite, with its geomean; ``training_nd``)."""
    train = result.get(key) or []
    if not train:
        return []
    width = max(len(e["name"]) for e in train)
    title = "training step" if key == "training" else "N-D training step"
    head = (
        f"{title:<{width}} {'ours ms':>9} {'jax.grad ms':>11} {'torch ms':>9}"
        f" {'vs jax.grad':>11} {'vs torch':>8} {'check':>9}"
    )
    rows = [
        f"{e['name']:<{width}} {_ms(e, 'ours')} {_ms(e, 'jax_grad'):>11} {_ms(e, 'torch_autograd')}"
        f" {_x(e['speedup'].get('jax_grad')):>11} {_x(e['speedup'].get('torch_autograd'))} {_check(e):>9}"
        for e in train
    ]
    if key == "training":
        summ = result["summary"].get("training", {})
        footer = [
            f"{'geomean':<{width + 32}} {_geo(summ.get('jax_grad')):>11} {_geo(summ.get('torch_autograd'))}",
            "training step = forward conv2d + gradients w.r.t. input and weight (jax.value_and_grad)",
        ]
    else:
        footer = ["N-D training step = forward conv (jax_conv_bpi.conv_p / lax / torch conv{1,2,3}d) + both gradients"]
    return _table(head, rows, footer)


def _paths(entry: dict) -> str:
    p = entry.get("paths")
    return "/".join(p[k] for k in ("conv", "backprop_input", "backprop_filter")) if p else "-"


def weight_grad_table(result: dict) -> list[str]:
    """The weight gradient alone, every rank, with the CPU formulation of each primitive; geomeans per rank."""
    entries = result.get("weight_grad") or []
    if not entries:
        return []
    width = max([len(e["name"]) for e in entries] + [15])
    pw = max(len(_paths(e)) for e in entries)
    head = (
        f"{'weight gradient':<{width}} {'rank':>4} {'ours ms':>9} {'jax.vjp ms':>10} {'torch ms':>9}"
        f" {'vs vjp':>8} {'vs torch':>8} {'check':>9}  {'paths: conv/input/filter':<{pw}}"
    )
    rows = [
        f"{e['name']:<{width}} {str(e['rank']) + '-D':>4} {_ms(e, 'ours')} {_ms(e, 'jax_vjp'):>10}"
        f" {_ms(e, 'torch_conv_weight')} {_x(e['speedup'].get('jax_vjp'))} {_x(e['speedup'].get('torch_conv_weight'))}"
        f" {_check(e):>9}  {_paths(e)}"
        for e in entries
    ]
    footer = []
    grouped = {e["rank"] for e in entries if not e["dense"]}
    for key, r in (result["summary"].get("weight_grad") or {}).items():
        for kind in ("all", "dense") if int(key[:-1]) in grouped else ("all",):
            g = r[kind]
            label = f"geomean {key[:-1]}-D" + (", groups of 1" if kind == "dense" else "")
            footer.append(
                f"{label:<{width + 36}} {_geo(g.get('jax_vjp'))} {_geo(g.get('torch_conv_weight'))}"
                f"   minimum {_geo(g.get('jax_vjp'), 'min')} {_geo(g.get('torch_conv_weight'), 'min')}"
            )
    footer += [
        "weight gradient = jax.vjp w.r.t. the weight of the library's conv / of lax.conv; torch = grad.conv{r}d_weight;",
        "paths = the CPU formulation each primitive picks (jax_conv_bpi's dispatch rules; '-' off CPU)",
    ]
    return _table(head, rows, footer)


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def memory_lines(result: dict, key: str = "memory") -> list[str]:
    """Peak memory on the largest shape of the 2-D suite (``memory``) or the N-D suite (``memory_nd``)."""
    mem = result.get(key)
    if not mem or not mem["impls"]:
        return []
    suite = "N-D shape" if key == "memory_nd" else "shape"
    lines = [
        f"peak memory on the largest {suite} ({mem['shape']}): inputs + output = {_bytes(mem['io_bytes'])}",
    ]
    for name, m in mem["impls"].items():
        lines.append(f"  {LABELS.get(name, name):<24} {_bytes(m['bytes']):>10}  {m['ratio']:5.2f}x inputs+output")
    lines.append("  (JAX: compiled executable's memory analysis, arguments + outputs + temporaries)")
    return lines


def first_call_lines(result: dict) -> list[str]:
    """The slowest first call (trace + compile + run) of ours, op and training step, over every shape."""
    fc = result.get("first_call")
    if not fc:
        return []
    return [
        f"first call of jax_conv_bpi (jax.jit -> first result: trace + compile + run): at most "
        f"{fc['max_s']:.2f} s over {fc['count']} programs (slowest: {fc['shape']})"
    ]


def format_report(result: dict) -> str:
    parts = machine_lines(result)
    sections = (
        op_table(result),
        opt_in_table(result),
        train_table(result),
        op_nd_table(result),
        train_table(result, "training_nd"),
        rank_table(result),
        weight_grad_table(result),
        memory_lines(result),
        memory_lines(result, "memory_nd"),
        first_call_lines(result),
    )
    for lines in sections:
        if lines:
            parts += [""] + lines
    notes = list(result.get("notes", []))
    entries = result["ops"] + result["training"] + result.get("ops_nd", []) + result.get("training_nd", [])
    entries += result.get("weight_grad", [])
    for e in entries:
        notes += [f"{e['name']}: {n}" for n in e.get("notes", [])]
        ck = e["check"]
        if ck.get("peers_ok") is False:
            bad = {k: f"{v:.1e}" for k, v in ck["rel_err"].items() if k != "ours" and v > ck["rtol"]}
            notes.append(f"{e['name']}: peers disagree with {ck['reference']}: {bad}")
    if notes:
        parts += [""] + [f"note: {n}" for n in notes]
    return "\n".join(parts)


_ND_ROLES = ("torch_conv_transpose", "torch_conv_input", "jax_vjp")
LABELS_ND = {
    "torch_conv_transpose": "torch conv_transpose{1,2,3}d",
    "torch_conv_input": "torch grad.conv{1,2,3}d_input",
    "torch_autograd": "torch autograd(conv{1,2,3}d)",
}


def _by_role(entry: dict) -> dict:
    """An N-D entry with its speedups under rank-free peer names (one bar colour per kind of peer)."""
    conv_t, conv_input = torch_op_impls(entry["rank"])
    roles = {conv_t: "torch_conv_transpose", conv_input: "torch_conv_input"}
    return {**entry, "speedup": {roles.get(p, p): v for p, v in entry["speedup"].items()}}


def plot(result: dict, path: str) -> None:
    """Bar chart of the speedups (log scale, 1x line) per shape and peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ops = result["ops"]
    train = result["training"]
    ops_nd = [_by_role(e) for e in result.get("ops_nd", [])]
    train_nd = result.get("training_nd", [])
    panels = [p for p in (ops, train, ops_nd, train_nd) if p]
    if not panels:
        return
    names = max((len(p) for p in panels), default=1)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.9 * names + 3), 4.2 * len(panels)), squeeze=False)
    row = iter(ax[0] for ax in axes)

    def bars(ax, entries, peer_names, title, labels=LABELS):
        width = 0.8 / max(1, len(peer_names))
        for k, peer in enumerate(peer_names):
            vals = [e["speedup"].get(peer, float("nan")) for e in entries]
            xs = [i + (k - (len(peer_names) - 1) / 2) * width for i in range(len(entries))]
            ax.bar(xs, vals, width, label=f"vs {labels.get(peer, LABELS.get(peer, peer))}")
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

    def peers_of(entries, names):
        return [p for p in names if any(p in e["speedup"] for e in entries)]

    m = result["machine"]
    machine = f"{result['config'].get('dtype', 'float32')} - {m['cpu']}, {m['cores']} cores, JAX {m['jax']}"
    tpeers = ("jax_grad", "torch_autograd")
    if ops:
        bars(next(row), ops, peers_of(ops, _OP_PEERS), f"conv2d_backprop_input, {machine}")
    if train:
        bars(next(row), train, peers_of(train, tpeers), "training step: forward conv2d + both gradients")
    if ops_nd:
        bars(next(row), ops_nd, peers_of(ops_nd, _ND_ROLES), f"N-D conv_transpose, {machine}", LABELS_ND)
    if train_nd:
        title = "N-D training step: forward conv + both gradients"
        bars(next(row), train_nd, peers_of(train_nd, tpeers), title, LABELS_ND)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
