"""Plumbing of the benchmark runner (``python -m jax_conv_bpi.bench``) on tiny shapes.

No timing is asserted: these tests check the suite arithmetic, that the
runner's own correctness check passes, and the structure of its JSON.
"""

from __future__ import annotations

import json
import math

import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi import bench
from jax_conv_bpi.bench import impls, runner, timing
from jax_conv_bpi.bench.suite import Shape

TINY = [
    # Strided, grouped, asymmetric padding, and a last input row no window reaches (H=11).
    {
        "name": "tiny_s2_g2_asym",
        "N": 2,
        "C_in": 4,
        "C_out": 6,
        "H": 11,
        "W": 9,
        "KH": 3,
        "KW": 4,
        "stride": [2, 3],
        "pad": [0, 2, 1, 0],
        "dilation": [1, 1],
        "group": 2,
    },
    {
        "name": "tiny_dw_dil",
        "N": 1,
        "C_in": 3,
        "C_out": 3,
        "H": 8,
        "W": 7,
        "KH": 3,
        "KW": 3,
        "dilation": [2, 1],
        "group": 3,
    },
]


def test_suite_geometry_matches_the_library():
    suite = bench.load_suite()
    assert len(suite) == 13 and len({s.name for s in suite}) == 13
    for s in suite:
        hw = jcb.conv2d_output_size(
            (s.H, s.W), (s.KH, s.KW), stride=s.stride, dilation=s.dilation, pad_mode="pad", pad=s.pad
        )
        assert s.dout_hw == hw, s.name
    doc = bench.select(suite, ["ms_doc_k3s1_valid"])[0]
    assert doc.dout_shape == (10, 32, 30, 30) and doc.w_shape == (32, 32, 3, 3)
    assert doc.flops == 2 * 10 * 30 * 30 * 32 * 32 * 9
    assert [s.name for s in suite if s.depthwise] == ["mobilenetv2_dw_k3s2p1_b32"]
    with pytest.raises(ValueError, match="unknown shape"):
        bench.select(suite, ["nope"])


def test_conv_transpose2d_padding_arithmetic():
    # Symmetric padding: output_padding makes torch's output exactly input_size.
    by = {s.name: s for s in bench.load_suite()}
    assert impls.conv_transpose2d_args(by["cyclegan_up_k3s2p1op1_b1"]) == {"padding": (1, 1), "output_padding": (1, 1)}
    assert impls.conv_transpose2d_args(by["stylegan2_up_k3s2p0_b1"]) == {"padding": (0, 0), "output_padding": (0, 0)}
    # --quick's smaller shapes keep the stride residue, hence the output padding.
    for s in by.values():
        small = s.scaled_down(8)
        assert small.flops * 4 <= s.flops and impls.conv_transpose2d_args(small) == impls.conv_transpose2d_args(s)
    # Asymmetric padding has no such form: the runner crops instead.
    assert impls.conv_transpose2d_args(Shape.from_dict(TINY[0])) is None


def test_measure_is_interleaved_and_counts_samples():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    samples = timing.measure(calls, reps=3, warmup=1, min_sample_s=0.0)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    timed = order[3:]  # after one warm-up call each
    assert timed == list("abc" + "bca" + "cab")
    assert timing.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert timing.geomean([None]) is None


def test_run_in_process_checks_and_json(tmp_path, capsys):
    suite_path = tmp_path / "tiny.json"
    suite_path.write_text(json.dumps(TINY))
    out_json = tmp_path / "result.json"
    argv = ["--suite", str(suite_path), "--reps", "1", "--warmup", "1", "--no-torch", "--no-progress"]
    with pytest.warns(UserWarning, match="fewer than 7"):
        rc = bench.main([*argv, "--json", str(out_json), "--png", str(tmp_path / "chart.png")])
    assert rc == 0
    try:
        import matplotlib  # noqa: F401 - the chart is optional (the bench extra)
    except ImportError:
        pass
    else:
        assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "tiny_s2_g2_asym" in printed and "training step" in printed and "GFLOP/s" in printed

    result = json.loads(out_json.read_text())
    assert result["schema"] == runner.SCHEMA
    assert result["checks_ok"] is True
    assert result["config"]["torch"] is False and result["config"]["shapes"] == [d["name"] for d in TINY]
    for key in ("cpu", "cores", "jax", "jaxlib", "jax_platform", "platform"):
        assert result["machine"][key]
    assert result["peak"]["gflops"] > 0

    assert [e["name"] for e in result["ops"]] == [d["name"] for d in TINY]
    for e in result["ops"]:
        assert e["check"]["reference"] == "jax_vjp" and e["check"]["ok"] is True
        assert e["check"]["rel_err"]["ours"] <= e["check"]["rtol"]
        assert set(e["times"]) == {"ours", "jax_vjp"}
        for t in e["times"].values():
            assert len(t["samples_ms"]) == 1 and t["median_ms"] > 0
        assert e["speedup"]["jax_vjp"] == pytest.approx(
            e["times"]["jax_vjp"]["median_ms"] / e["times"]["ours"]["median_ms"]
        )
        assert e["gflops"]["ours"] == pytest.approx(e["flops"] / e["times"]["ours"]["median_ms"] / 1e6)
        assert 0 < e["peak_share"]["ours"] == pytest.approx(e["gflops"]["ours"] / result["peak"]["gflops"])
        assert e["memory"]["ours"]["total"] >= e["memory"]["ours"]["argument"] > 0
    for e in result["training"]:
        assert e["check"]["reference"] == "jax_grad" and e["check"]["ok"] is True
        assert set(e["speedup"]) == {"jax_grad"}

    summ = result["summary"]
    assert summ["op"]["jax_vjp"]["count"] == 2
    assert summ["op"]["jax_vjp"]["geomean"] == pytest.approx(
        math.sqrt(result["ops"][0]["speedup"]["jax_vjp"] * result["ops"][1]["speedup"]["jax_vjp"])
    )
    assert summ["op_depthwise"]["jax_vjp"]["count"] == 1
    mem = result["memory"]
    big = max((Shape.from_dict(d) for d in TINY), key=lambda s: s.io_bytes)
    assert mem["shape"] == big.name and mem["io_bytes"] == big.io_bytes
    assert set(mem["impls"]) == {"ours", "jax_vjp"}


def test_rel_error_flags_a_wrong_result():
    import numpy as np

    ref = np.arange(6.0).reshape(2, 3)
    assert runner.rel_error(ref, ref) == 0.0
    assert runner.check_outputs({"ours": ref + 0.01, "jax_vjp": ref}, "jax_vjp", 1e-4)["ok"] is False
    assert runner.check_outputs({"ours": ref.T, "jax_vjp": ref}, "jax_vjp", 1e-4)["ok"] is False


def test_hazard_probe_reports_a_failing_child():
    hazard = Shape.from_dict({**TINY[0], "name": "h", "dilation": [1, 2]})
    assert runner.baseline_may_abort(hazard, impls.jax.devices("cpu")[0])
    assert not runner.baseline_may_abort(Shape.from_dict(TINY[1]), impls.jax.devices("cpu")[0])
    # A child that fails (here: an invalid shape) is reported, never raised.
    survived, detail = runner.run_probe_process({"name": "not_a_shape"}, timeout=120)
    assert survived is False and "status 1" in detail
