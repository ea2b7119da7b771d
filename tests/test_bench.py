"""Plumbing of the benchmark runner (``python -m jax_conv_bpi.bench``) on tiny shapes.

No timing is asserted: these tests check the suite arithmetic (2-D and N-D),
that the runner's own correctness check passes, and the structure of its
JSON, per-rank summaries included.
"""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

import jax_conv_bpi as jcb
from jax_conv_bpi import bench
from jax_conv_bpi.bench import checks, cli, hazard, impls, runner, timing
from jax_conv_bpi.bench.config import QUICK_TRAINING, Config, quick_training
from jax_conv_bpi.bench.suite import Shape, ShapeND

from .support import reference

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


TINY_ND = [
    # 1-D: strided, grouped, asymmetric padding, an input row no window reaches (spatial 12: output_padding 1).
    {
        "name": "tiny1_s3_g2_asym",
        "N": 2,
        "C_in": 4,
        "C_out": 6,
        "spatial": [12],
        "kernel": [4],
        "stride": [3],
        "pad": [[2, 0]],
        "dilation": [1],
        "group": 2,
    },
    # 1-D dilated, asymmetric padding (PyTorch needs a crop).
    {
        "name": "tiny1_dil",
        "N": 1,
        "C_in": 3,
        "C_out": 5,
        "spatial": [9],
        "kernel": [3],
        "pad": [[1, 3]],
        "dilation": [2],
    },
    # 3-D: a different stride, padding and output_padding per axis.
    {
        "name": "tiny3_s2_op",
        "N": 1,
        "C_in": 3,
        "C_out": 4,
        "spatial": [6, 5, 7],
        "kernel": [3, 2, 3],
        "stride": [2, 1, 2],
        "pad": [[1, 1], [0, 1], [1, 1]],
    },
    # 3-D depthwise.
    {"name": "tiny3_dw", "N": 2, "C_in": 4, "C_out": 4, "spatial": [4, 5, 3], "kernel": [3, 3, 1], "group": 4},
]


def native_loaded() -> bool:
    """Whether the native CPU kernels loaded (the paths the library reports depend on it)."""
    return jcb.native_status().startswith("native kernel: ")


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


def _nd_shapes() -> list[ShapeND]:
    return bench.load_suite_nd() + [ShapeND.from_dict(d) for d in TINY_ND]


def test_suite_nd_geometry_matches_the_library():
    suite = bench.load_suite_nd()
    assert len(suite) == 8 and sorted(s.rank for s in suite) == [1] * 4 + [3] * 4
    names = [s.name for s in bench.load_suite() + suite]
    assert len(set(names)) == len(names)
    for s in _nd_shapes():
        # dout's size: lax's own forward convolution; the result's: the reachable sizes of conv_transpose.
        x = jax.ShapeDtypeStruct(s.x_shape, np.float32)
        w = jax.ShapeDtypeStruct(s.w_shape, np.float32)
        assert jax.eval_shape(lambda x, w, s=s: impls.lax_conv(x, w, s), x, w).shape == s.dout_shape, s.name
        sizes = jcb.conv_transpose_sizes(s.dout_spatial, s.kernel, s.stride, s.pad, rhs_dilation=s.dilation)
        assert all(n in r and n - r.start == op for n, r, op in zip(s.spatial, sizes, s.output_padding)), s.name
        y = jax.ShapeDtypeStruct(s.dout_shape, np.float32)
        assert jax.eval_shape(impls.ours_nd_fn(s), y, w).shape == s.x_shape, s.name
        assert ShapeND.from_dict(s.to_dict()) == s
        small = s.scaled_down(8)  # --quick's shapes: the same output padding, ~1/8 of the work where it fits
        assert small.output_padding == s.output_padding and small.rank == s.rank
        assert small.flops * 7 <= s.flops if s in suite else small.flops <= s.flops
    by = {s.name: s for s in suite}
    assert by["unet3d_deconv_k3s2p1_b1"].output_padding == (1, 1, 1)
    hifigan = by["hifigan_up1_k16s8p4_b16"]
    assert hifigan.dout_shape == (16, 512, 32) and hifigan.flops == 2 * 16 * 32 * 16 * 512 * 256
    assert [s.name for s in _nd_shapes() if s.depthwise] == ["tiny3_dw"]
    with pytest.raises(ValueError, match="pad needs 3"):
        ShapeND.from_dict({**TINY_ND[3], "name": "bad", "pad": [[0, 0]]})
    with pytest.raises(ValueError, match="unknown N-D shape keys"):
        bench.shape_from_dict({**TINY_ND[0], "H": 3})


def test_conv_transpose_padding_arithmetic_nd():
    by = {s.name: s for s in _nd_shapes()}
    assert impls.conv_transpose_args(by["unet3d_deconv_k3s2p1_b1"]) == {
        "padding": (1, 1, 1),
        "output_padding": (1, 1, 1),
    }
    assert impls.conv_transpose_args(by["hifigan_up1_k16s8p4_b16"]) == {"padding": (4,), "output_padding": (0,)}
    assert impls.conv_transpose_args(by["tiny1_dil"]) is None  # asymmetric: cropped instead
    assert impls.op_impls(3) == ("ours", "jax_vjp", "torch_conv_transpose3d", "torch_conv3d_input")


def test_torch_peers_agree_on_tiny_shapes():
    """The PyTorch peers (padding, output_padding, crops) against jax.vjp; the training step on one shape per rank."""
    torch = pytest.importorskip("torch")
    device = jax.devices("cpu")[0]
    shapes = [Shape.from_dict(TINY[0])] + [ShapeND.from_dict(d) for d in TINY_ND]
    for s in shapes:
        dout, w = s.arrays(0)
        ref = impls.prepare_jax_op(s, "jax_vjp", dout, w, device)
        want = ref.to_numpy(ref.call())
        for name in impls.torch_op_impls(s.rank):
            p = impls.prepare_torch_op(torch, s, name, dout, w, "cpu")
            assert checks.rel_error(p.to_numpy(p.call()), want) < 1e-5, (s.name, name)
    for s in (shapes[0], shapes[1], shapes[3]):
        dout, w = s.arrays(0)
        x = np.random.default_rng(1).standard_normal(s.x_shape, dtype=np.float32)
        ref = impls.prepare_jax_train(s, "jax_grad", x, w, dout, device)
        p = impls.prepare_torch_train(torch, s, x, w, dout, "cpu")
        assert checks.rel_error(p.to_numpy(p.call())[1], ref.to_numpy(ref.call())[1]) < 1e-5, s.name
    for s in shapes:  # the weight gradient alone, asymmetric padding (a padded input) included
        dout, _ = s.arrays(0)
        x = np.random.default_rng(2).standard_normal(s.x_shape, dtype=np.float32)
        ref = impls.prepare_jax_weight_grad(s, "jax_vjp", x, dout, device)
        p = impls.prepare_torch_weight_grad(torch, s, x, dout, "cpu")
        assert checks.rel_error(p.to_numpy(p.call()), ref.to_numpy(ref.call())) < 1e-5, s.name


def test_weight_gradient_is_the_reference_and_paths_follow_the_rules():
    """``weight_grad_fn`` against the float64 NumPy reference; ``cpu_paths`` on suite shapes with known paths."""
    device = jax.devices("cpu")[0]
    for s in [Shape.from_dict(TINY[0]), ShapeND.from_dict(TINY_ND[0]), ShapeND.from_dict(TINY_ND[2])]:
        dout, _ = s.arrays(0)
        x = np.random.default_rng(3).standard_normal(s.x_shape)
        want = reference.backprop_filter_nd(
            dout.astype(np.float64), x, s.w_shape, s.stride, s.dilation, s.pad_pairs, s.group
        )
        for name in ("ours", "jax_vjp"):
            p = impls.prepare_jax_weight_grad(s, name, x.astype(np.float32), dout, device)
            assert checks.rel_error(p.to_numpy(p.call()), want) < 1e-5, (s.name, name)
    with pytest.raises(ValueError, match="no JAX weight gradient 'torch'"):
        impls.weight_grad_fn(s, "torch")
    by = {s.name: s for s in bench.load_suite()}
    native = native_loaded()
    assert impls.cpu_paths(by["resnet50_l1_k3s1p1_b32"]) == {
        "conv": "native" if native else "routed",
        "backprop_input": "native" if native else "flipped_conv",
        "backprop_filter": "native" if native else "gemm_batched",
    }
    assert impls.cpu_paths(by["resnet50_l1_k3s1p1_b32"], "bfloat16") == {
        "conv": "routed",
        "backprop_input": "flipped_conv",
        "backprop_filter": "gemm_batched",
    }
    # results over NATIVE_MAX_RESULT elements keep XLA's dot
    assert impls.cpu_paths(by["deeplabv3_dil2_k3p2_b1"])["backprop_filter"] == "gemm"
    assert impls.cpu_paths(by["mobilenetv2_dw_k3s2p1_b32"]) == {  # depthwise
        "conv": "native" if native else "direct",
        "backprop_input": "direct",
        "backprop_filter": "native" if native else "direct",
    }
    assert impls.cpu_paths(by["unet_up_k2s2_b1"])["backprop_input"] == "gemm"  # kernel == stride


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
    nd_path = tmp_path / "tiny_nd.json"
    nd_path.write_text(json.dumps(TINY_ND))
    out_json = tmp_path / "result.json"
    argv = ["--suite", str(suite_path), "--suite-nd", str(nd_path), "--reps", "1", "--warmup", "1"]
    argv += ["--no-torch", "--no-progress"]
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
    assert "tiny3_s2_op" in printed and "N-D training step" in printed and "geomean per rank" in printed
    # a tiny grouped layer: the direct forms, with the native forward and weight gradient where loaded
    assert "weight gradient" in printed
    assert ("native/direct/native" if native_loaded() else "direct/direct/direct") in printed

    result = json.loads(out_json.read_text())
    assert result["schema"] == runner.SCHEMA
    assert result["checks_ok"] is True
    names_nd = [d["name"] for d in TINY_ND]
    assert result["config"]["torch"] is False and result["config"]["shapes"] == [d["name"] for d in TINY] + names_nd
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

    # The N-D suite: its own entries, and per-rank geomeans over both suites.
    assert [e["name"] for e in result["ops_nd"]] == names_nd
    assert [e["name"] for e in result["training_nd"]] == names_nd
    for e in result["ops_nd"] + result["training_nd"]:
        assert e["check"]["reference"] == "jax_vjp" if "io_bytes" in e else "jax_grad"
        assert e["check"]["ok"] is True and set(e["times"]) == {"ours", "jax_vjp" if "io_bytes" in e else "jax_grad"}
    by_op = {e["name"]: e for e in result["ops_nd"]}
    assert by_op["tiny1_s3_g2_asym"]["output_padding"] == [1] and by_op["tiny3_s2_op"]["input_size"] == [1, 3, 6, 5, 7]
    by_rank = summ["by_rank"]
    assert list(by_rank) == ["1d", "2d", "3d"]
    assert by_rank["2d"]["shapes"] == [d["name"] for d in TINY]
    assert by_rank["2d"]["op"]["jax_vjp"] == summ["op"]["jax_vjp"]
    assert set(by_rank["3d"]["op"]) == {"jax_vjp", "torch_conv_transpose3d", "torch_conv3d_input"}
    assert by_rank["3d"]["op"]["torch_conv3d_input"] is None  # --no-torch
    ones = [by_op[n]["speedup"]["jax_vjp"] for n in ("tiny1_s3_g2_asym", "tiny1_dil")]
    assert by_rank["1d"]["op"]["jax_vjp"]["geomean"] == pytest.approx(math.sqrt(ones[0] * ones[1]))
    assert by_rank["1d"]["training"]["jax_grad"]["count"] == 2 and by_rank["1d"]["training"]["torch_autograd"] is None
    assert result["memory_nd"]["shape"] == max(_nd_shapes()[8:], key=lambda s: s.io_bytes).name

    # The weight gradient alone: every shape of both suites, checked against jax.vjp, geomeans per rank.
    names = [d["name"] for d in TINY] + names_nd
    assert [e["name"] for e in result["weight_grad"]] == names == result["config"]["weight_grad"]
    for e in result["weight_grad"]:
        assert e["check"]["reference"] == "jax_vjp" and e["check"]["ok"] is True, e["name"]
        assert set(e["times"]) == {"ours", "jax_vjp"} and set(e["speedup"]) == {"jax_vjp"}
    wg = summ["weight_grad"]
    assert list(wg) == ["1d", "2d", "3d"] and wg["3d"]["shapes"] == ["tiny3_s2_op", "tiny3_dw"]
    assert wg["3d"]["dense"]["jax_vjp"]["count"] == 1 and wg["3d"]["all"]["jax_vjp"]["count"] == 2
    assert wg["3d"]["all"]["torch_conv_weight"] is None  # --no-torch
    # Paths: every tiny shape has few channels per group (C_in/g * C_out/g <= 16), where every primitive is
    # direct, except the forward and the weight gradient where the native kernels are loaded.
    native_path = "native" if native_loaded() else "direct"
    for e in result["ops"] + result["ops_nd"] + result["training"] + result["weight_grad"]:
        d = next(d for d in TINY + TINY_ND if d["name"] == e["name"])
        g = d.get("group", 1)
        assert (d["C_in"] // g) * (d["C_out"] // g) <= 16
        assert e["paths"] == {"conv": native_path, "backprop_input": "direct", "backprop_filter": native_path}, e[
            "name"
        ]

    # First calls (trace + compile + run): one per JAX program, the slowest of ours summarised.
    every = result["ops"] + result["training"] + result["ops_nd"] + result["training_nd"] + result["weight_grad"]
    for e in every:
        assert set(e["times"]) <= set(e["first_call_s"]) and all(v > 0 for v in e["first_call_s"].values())
    fc = result["first_call"]
    assert fc["count"] == len(every)
    assert fc["max_s"] == max(e["first_call_s"]["ours"] for e in every)
    assert fc["shape"] in {e["name"] for e in every}


def test_cli_suites_and_selection(tmp_path):
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([TINY[0], TINY_ND[0]]))
    assert [type(s) for s in bench.load_suite(mixed)] == [Shape, ShapeND]
    nd = tmp_path / "nd.json"
    nd.write_text(json.dumps(TINY_ND[:1]))
    with pytest.raises(ValueError, match="unique across the suites"):
        cli.config_from_args(cli.build_parser().parse_args(["--suite", str(mixed), "--suite-nd", str(nd)]))

    def shapes(*argv):
        return cli.config_from_args(cli.build_parser().parse_args(list(argv))).shapes

    both = shapes()
    assert [type(s) for s in both] == [Shape] * 13 + [ShapeND] * 8
    assert all(isinstance(s, Shape) for s in shapes("--no-nd"))
    picked = shapes("--quick", "--shapes", "vnet_up_k2s2_b1,ms_doc_k3s1_valid")
    assert [s.name for s in picked] == ["vnet_up_k2s2_b1", "ms_doc_k3s1_valid"] and picked[0].spatial == (8, 8, 8)
    quick = Config.quick_config(bench.load_suite() + bench.load_suite_nd())
    assert set(QUICK_TRAINING) == set(quick.training_shapes)
    one_each = quick_training([ShapeND.from_dict(d) for d in TINY_ND])
    assert one_each == ("tiny1_s3_g2_asym", "tiny3_s2_op")


def test_cli_argument_errors_are_usage_errors(tmp_path, capsys):
    """A wrong argument ends in argparse's usage and message (exit status 2), never in a traceback."""
    import os
    import pathlib
    import subprocess
    import sys

    root = str(pathlib.Path(bench.__file__).resolve().parents[2])
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    proc = subprocess.run(
        [sys.executable, "-m", "jax_conv_bpi.bench", "--shapes", "nosuchshape"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("usage: python -m jax_conv_bpi.bench")
    assert "error: unknown shape name(s) ['nosuchshape']; known: ms_doc_k3s1_valid" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""

    nd = tmp_path / "nd.json"
    nd.write_text(json.dumps(TINY_ND[:1]))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "not_a_shape"}]))
    for argv, message in [
        (["--shapes", "nosuchshape,ms_doc_k3s1_valid", "--no-nd"], "unknown shape name(s) ['nosuchshape']"),
        (["--reps", "0"], "--reps must be at least 1, got 0"),
        (["--warmup", "-1"], "--warmup must be at least 0, got -1"),
        (["--suite", str(tmp_path / "missing.json")], "--suite " + str(tmp_path / "missing.json")),
        (["--suite-nd", str(bad)], f"--suite-nd {bad}: "),
        (["--suite", str(nd), "--suite-nd", str(nd)], "shape names must be unique across the suites"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            bench.main(argv)
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("usage: ") and f"error: {message}" in err, (argv, err)


def test_rel_error_flags_a_wrong_result():
    import numpy as np

    ref = np.arange(6.0).reshape(2, 3)
    assert checks.rel_error(ref, ref) == 0.0
    assert checks.check_outputs({"ours": ref + 0.01, "jax_vjp": ref}, "jax_vjp", 1e-4)["ok"] is False
    assert checks.check_outputs({"ours": ref.T, "jax_vjp": ref}, "jax_vjp", 1e-4)["ok"] is False


def test_hazard_probe_reports_a_failing_child():
    risky = Shape.from_dict({**TINY[0], "name": "h", "dilation": [1, 2]})
    assert hazard.baseline_may_abort(risky, impls.jax.devices("cpu")[0])
    assert not hazard.baseline_may_abort(Shape.from_dict(TINY[1]), impls.jax.devices("cpu")[0])
    risky_nd = ShapeND.from_dict({**TINY_ND[0], "name": "h1", "dilation": [2]})
    assert hazard.baseline_may_abort(risky_nd, impls.jax.devices("cpu")[0])
    assert not hazard.baseline_may_abort(ShapeND.from_dict(TINY_ND[1]), impls.jax.devices("cpu")[0])
    # The child's entry point reads an N-D shape as well (run here in-process: a shape that cannot abort).
    assert hazard.run_probe(json.dumps(ShapeND.from_dict(TINY_ND[2]).to_dict())) == 0
    # A child that fails (here: an invalid shape) is reported, never raised.
    survived, detail = hazard.run_probe_process({"name": "not_a_shape"}, timeout=120)
    assert survived is False and "status 1" in detail


def test_dtype_and_precision_options_plumbing(tmp_path):
    """--dtype / --precision reach the Config, every implementation's arrays and the JSON (one tiny shape each)."""
    from jax import lax

    parse = cli.build_parser().parse_args
    default = cli.config_from_args(parse(["--no-nd"]))
    assert (default.dtype, default.precision, checks.effective_rtol(default)) == ("float32", "highest", 1e-4)
    cfg = cli.config_from_args(parse(["--dtype", "bfloat16", "--precision", "default", "--quick"]))
    assert (cfg.dtype, cfg.precision, cfg.quick) == ("bfloat16", "default", True)
    assert checks.effective_rtol(cfg) == checks.BFLOAT16_RTOL
    assert checks.effective_rtol(Config(shapes=[], precision="default")) == checks.TF32_RTOL
    with pytest.raises(SystemExit):
        parse(["--dtype", "float16"])
    with pytest.raises(ValueError, match="precision"):
        Config(shapes=[], precision="high")

    # The 2-D entries (MindSpore's API) stay HIGHEST; the N-D ones follow --precision.
    s2, snd = Shape.from_dict(TINY[0]), ShapeND.from_dict(TINY_ND[0])
    assert impls.jax_precision(s2, "default") == impls.jax_precision(s2, "highest") == lax.Precision.HIGHEST
    assert impls.jax_precision(snd, "default") is None and impls.jax_precision(snd, "highest") == lax.Precision.HIGHEST
    assert impls.geometry(snd, "default").precision is None and not impls.torch_tf32(s2, "default")
    assert impls.torch_tf32(snd, "default") and not impls.torch_tf32(snd, "highest")

    # bfloat16 arrays for JAX and PyTorch; results come back as float32 for the check.
    dev = jax.devices("cpu")[0]
    dout, w = snd.arrays(0)
    p = impls.prepare_jax_op(snd, "ours", dout, w, dev, dtype="bfloat16", precision="default")
    out = p.call()
    assert out.dtype == jax.numpy.bfloat16 and p.to_numpy(out).dtype == np.float32
    torch = impls.import_torch()
    if torch is not None:
        name = impls.torch_op_impls(1)[0]
        t = impls.prepare_torch_op(torch, snd, name, dout, w, "cpu", dtype="bfloat16")
        tout = t.call()
        assert tout.dtype == torch.bfloat16 and t.to_numpy(tout).dtype == np.float32
        assert checks.rel_error(t.to_numpy(tout), p.to_numpy(out)) < checks.BFLOAT16_RTOL

    # One end-to-end run: the options land in the JSON and the report's header.
    nd_path = tmp_path / "one.json"
    nd_path.write_text(json.dumps(TINY_ND[:1]))
    one = Config(
        shapes=bench.load_suite(nd_path),
        reps=1,
        warmup=1,
        torch=False,
        training=False,
        progress=False,
        probe_hazards=False,
        opt_in=False,
        dtype="bfloat16",
        precision="default",
    )
    result = runner.run(one)
    assert result["checks_ok"] is True
    assert result["config"]["dtype"] == "bfloat16" and result["config"]["precision"] == "default"
    assert result["config"]["check_rtol"] == checks.BFLOAT16_RTOL
    assert result["ops_nd"][0]["precision"] == "default"
    header = bench.report.format_report(result)
    assert "bfloat16, precision default" in header
