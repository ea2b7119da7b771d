"""Seeded fuzzing of ``load_checkpoint``: damaged ``.ckpt`` and ``.safetensors`` files are refused or loaded, never worse.

Each mutant of a small checkpoint (truncations, bit flips in headers and in
names, bytes overwritten or inserted, unterminated varints, names that are not
UTF-8 or absent, dims no array can have, safetensors header lengths, shapes,
dtypes and data offsets) must either be refused with a ``ValueError`` that
names the file, or load what the file holds: every name a non-empty ``str``
found in the file, every array's bytes and every string found in the file.
A name flipped into another valid name cannot be told apart from a real one
without a CRC and counts as loaded. Each load must take under 2 s, and the
whole loop runs in a child process under a 4 GiB address-space limit
(``RLIMIT_AS``), so that an attempted giant allocation fails there instead of
swapping, and a crash or hang fails the test instead of killing the run.

The child is this module run as ``python -m tests.test_checkpoint_fuzz``; it
prints one JSON line of counts and failures. The files come from
``jax_conv_bpi.save_checkpoint``, from the ``safetensors`` package directly and
from a protobuf encoder written here, and (second test) MindSpore's own
``dcgan_g`` files from the golden set.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .support import GOLDEN_DIR, GOLDEN_MISSING, golden_available

pytest.importorskip("google.protobuf", reason="the nn extra is not installed: pip install 'jax_conv_bpi[nn]'")
pytest.importorskip("safetensors", reason="the nn extra is not installed: pip install 'jax_conv_bpi[nn]'")

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
MUTANTS_PER_FILE = 160  # random mutants per base file and seed, besides the exhaustive and hand-made ones
ADDRESS_SPACE = 4 << 30  # bytes
PER_LOAD_S = 2.0
CHILD_TIMEOUT_S = 180.0


# ---------------------------------------------------------------------------
# The parent: run the child, check its report
# ---------------------------------------------------------------------------


def _run_child(tmp_path: Path, which: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.test_checkpoint_fuzz", which, str(tmp_path), str(GOLDEN_DIR)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the fuzz child hung (no result in {CHILD_TIMEOUT_S} s); its output:\n{e.stdout}\n{e.stderr}")
    assert done.returncode == 0, (
        f"the fuzz child died (exit status {done.returncode}; negative: killed by that signal):\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(report: dict, kinds: set[str]) -> None:
    assert report["failures"] == [], (
        f"{report['n_failures']} of {report['mutants']} mutants failed (first ones shown):\n"
        + "\n".join(report["failures"])
    )
    assert report["address_space"] == ADDRESS_SPACE
    assert report["max_s"] < PER_LOAD_S, report["slowest"]
    # Every kind of damage was tried and refused at least once, and some mutants load (e.g. a flipped data bit).
    assert set(report["rejected_by_kind"]) >= kinds, sorted(kinds - set(report["rejected_by_kind"]))
    assert report["loaded"] > 0 and report["rejected"] > report["mutants"] // 2, report


_KINDS = {
    "truncate",
    "flip-header",
    "flip-name",
    "flip-any",
    "overwrite",
    "insert",
    "bad-varint",
    "bad-utf8-name",
}


def test_mutants_of_small_checkpoints_are_refused_or_loaded(tmp_path):
    report = _run_child(tmp_path, "made")
    _check(report, _KINDS | {"crafted-ckpt", "safetensors-header-length", "safetensors-header-field"})
    assert report["mutants"] >= 2000, report["mutants"]


@pytest.mark.skipif(not golden_available(), reason=GOLDEN_MISSING)
def test_mutants_of_mindspores_own_files_are_refused_or_loaded(tmp_path):
    report = _run_child(tmp_path, "golden")
    # Random overwrites and flips of 75 kB files land mostly in tensor data, which loads (there is no CRC).
    _check(report, _KINDS - {"overwrite", "flip-any"} | {"safetensors-header-length", "safetensors-header-field"})
    assert report["loaded"] >= 100, report["loaded"]
    assert report["mutants"] >= 1000, report["mutants"]


def test_the_test_encoder_writes_mindspores_records():
    """The hand-made records below are the bytes save_checkpoint writes for the same entry (the encoder is right)."""
    import tempfile

    import jax_conv_bpi as jcb

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.ckpt"
        jcb.save_checkpoint({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": 7}, path)
        expected = path.read_bytes()
    made = _record(b"w", [2, 3], b"Float32", np.arange(6, dtype="<f4").tobytes())
    made += _record(b"n", [], b"Int64", np.int64(7).tobytes())
    assert made == expected


# ---------------------------------------------------------------------------
# A protobuf encoder for hand-made .ckpt records (independent of the library's message class)
# ---------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # an int64 field writes a negative value as its 64-bit two's complement
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _record(tag: bytes | None, dims: list[int], tensor_type: bytes, content: bytes) -> bytes:
    """One ``Checkpoint`` message of one ``Value`` (``tag=None``: the required tag left out)."""
    tensor = b"".join(_varint(1 << 3) + _varint(d) for d in dims) + _field(2, tensor_type) + _field(3, content)
    value = (b"" if tag is None else _field(1, tag)) + _field(2, tensor)
    return _field(1, value)


def _crafted_ckpts() -> list[tuple[str, bytes]]:
    """Hand-made files: names absent, empty or not UTF-8, dims no array can have, odd types and sizes."""
    good = _record(b"w", [2], b"Float32", bytes(8))
    out = []
    for tag in (None, b"", b"\xff", b"bo\xe4y.0.weight", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x00b", "é".encode()):
        out.append((f"tag {tag!r}", good + _record(tag, [1], b"Float32", bytes(4))))
    huge = [
        [2**63 - 1],
        [0, 2**63 - 1],
        [0, 2**62],
        [2**62, 4],
        [2**32, 2**32],
        [2**31, 2**31, 2],
        [-1],
        [2**64 - 1],
        [2**63],
        [1] * 65,
        [1] * 64,
        [0],
        [0, 0, 0],
        [3, 0],
        [2**40, 0, 2**40],
    ]
    for dims in huge:
        for content in (b"", bytes(4), bytes(12)):
            out.append(
                (
                    f"dims {dims[:4]}{'...' if len(dims) > 4 else ''} content {len(content)}",
                    _record(b"big", dims, b"Float32", content),
                )
            )
    for tensor_type in (b"", b"\xff\xfe", b"str", b"BFloat16", b"Float32\x00", b"float32"):
        for content in (b"", bytes(3), bytes(4), "ab".encode("utf-32-le")):
            out.append((f"type {tensor_type!r} content {len(content)}", _record(b"t", [1], tensor_type, content)))
    # Two records with one tag: chunks that disagree or overflow.
    out.append(("chunks", _record(b"c", [2], b"Float32", bytes(4)) + _record(b"c", [3], b"Float32", bytes(4))))
    out.append(("chunks", _record(b"c", [1], b"Float32", bytes(4)) * 3))
    return [(f"crafted-ckpt: {what}", data) for what, data in out]


# ---------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------


def _name_spans(data: bytes, names: list[str]) -> list[tuple[int, int]]:
    spans = []
    for name in names:
        raw = name.encode()
        at = data.find(raw)
        while at >= 0:
            spans.append((at, at + len(raw)))
            at = data.find(raw, at + 1)
    return spans


def _header_span(data: bytes, is_safetensors: bool) -> tuple[int, int]:
    if is_safetensors:
        return 0, 8 + int.from_bytes(data[:8], "little")
    return 0, min(len(data), 64)  # the first record's lengths, tag and dims


def _truncations(data: bytes, rng: np.random.Generator):
    """Every truncation of a small file; of a big one, 80 random cuts and those around the safetensors length."""
    n = len(data)
    cuts = range(n) if n <= 600 else sorted({int(c) for c in rng.integers(0, n, 80)} | {0, 1, 7, 8, 9, n - 1})
    for cut in cuts:
        yield "truncate", f"first {cut} bytes", data[:cut]


def _mutants(data: bytes, names: list[str], is_safetensors: bool, rng: np.random.Generator, count: int):
    """(kind, description, bytes) of ``count`` random mutants of ``data``."""
    n = len(data)
    spans = _name_spans(data, names) or [(0, n)]
    header = _header_span(data, is_safetensors)
    kinds = ["flip-header", "flip-name", "flip-any", "overwrite", "insert", "bad-varint", "bad-utf8-name"]
    for _ in range(count):
        kind = kinds[int(rng.integers(len(kinds)))]
        mutant = bytearray(data)
        if kind.startswith("flip"):
            lo, hi = {"flip-header": header, "flip-name": spans[int(rng.integers(len(spans)))]}.get(kind, (0, n))
            flips = []
            for _ in range(int(rng.integers(1, 4))):
                at, bit = int(rng.integers(lo, hi)), int(rng.integers(8))
                mutant[at] ^= 1 << bit
                flips.append(f"bit {bit} of byte {at}")
            yield kind, ", ".join(flips), bytes(mutant)
        elif kind == "overwrite":
            at, length = int(rng.integers(n)), int(rng.integers(1, 9))
            junk = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            mutant[at : at + length] = junk
            yield kind, f"{junk!r} at byte {at}", bytes(mutant)
        elif kind == "insert":
            at = int(rng.integers(n))
            if rng.random() < 0.5:
                junk = rng.integers(0, 256, int(rng.integers(1, 5)), dtype=np.uint8).tobytes()
                yield kind, f"{junk!r} inserted at byte {at}", bytes(mutant[:at] + junk + mutant[at:])
            else:
                yield kind, f"byte {at} deleted", bytes(mutant[:at] + mutant[at + 1 :])
        elif kind == "bad-varint":
            at, length = int(rng.integers(min(n, header[1] + 64))), int(rng.integers(1, 12))
            fill = (b"\xff", b"\x80")[int(rng.integers(2))] * length
            mutant[at : at + length] = fill
            yield kind, f"{fill!r} at byte {at}", bytes(mutant)
        else:  # bad-utf8-name: a byte of a name made a lead byte without its continuation, or a lone one
            lo, hi = spans[int(rng.integers(len(spans)))]
            at = int(rng.integers(lo, hi))
            mutant[at] = (0x80, 0xBF, 0xC0, 0xC3, 0xE2, 0xED, 0xF0, 0xFF)[int(rng.integers(8))]
            yield kind, f"byte {at} = {mutant[at]:#04x}", bytes(mutant)


def _safetensors_mutants(data: bytes, rng: np.random.Generator, count: int):
    """Header lengths, and header fields (offsets, shapes, dtypes, names) set to what no valid file has."""
    header_len = int.from_bytes(data[:8], "little")
    header, body = json.loads(data[8 : 8 + header_len]), data[8 + header_len :]
    for length in (0, 1, 2, 7, header_len - 1, header_len + 1, len(data), 2**31, 2**32 + header_len, 2**63, 2**64 - 1):
        yield "safetensors-header-length", f"length {length}", length.to_bytes(8, "little") + data[8:]
    names = [k for k in header if k != "__metadata__"]
    values = {
        "data_offsets": [
            [0, 2**64],
            [-1, 4],
            [5, 3],
            [0, len(body) + 1],
            [2**63, 2**63 + 4],
            ["0", 4],
            [0.5, 4],
            [0],
            7,
        ],
        "shape": [[2**62, 0], [2**31] * 4, [-1], [], [1] * 100, [2**63], "3", [True], None],
        "dtype": ["F8", "f32", "", 5, "I128", "BOOL", "BF16", "U64"],
    }
    for _ in range(count):
        mutated = json.loads(json.dumps(header))
        name = names[int(rng.integers(len(names)))]
        choice = int(rng.integers(5))
        if choice < 3:
            field = ("data_offsets", "shape", "dtype")[choice]
            options = values[field]
            mutated[name][field] = options[int(rng.integers(len(options)))]
            what = f"{name}.{field} = {mutated[name][field]!r}"
        elif choice == 3:
            new = ("", "\ud800", "a\udfff", name + "\x00", "__metadata__")[int(rng.integers(5))]
            mutated[new] = mutated.pop(name)
            what = f"name {name!r} -> {new!r}"
        else:
            mutated["__metadata__"] = ({"crc_num": 5}, [1], "ms", {"format": None})[int(rng.integers(4))]
            what = f"__metadata__ = {mutated['__metadata__']!r}"
        text = json.dumps(mutated).encode()
        yield "safetensors-header-field", what, len(text).to_bytes(8, "little") + text + body


# ---------------------------------------------------------------------------
# The child: build the files, load every mutant, report
# ---------------------------------------------------------------------------


class _Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Hang


def _holds(data: bytes, loaded: dict, is_safetensors: bool) -> str:
    """'' if ``loaded`` is what ``data`` holds, as far as can be seen without parsing it again; else why not."""
    header_names: set[str] = set()
    if is_safetensors:
        header_names = set(json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]))
    for name, value in loaded.items():
        if not isinstance(name, str) or not name:
            return f"a name that is not a non-empty str: {name!r}"
        try:
            raw = name.encode("utf-8")
        except UnicodeEncodeError:
            return f"a name that is not valid UTF-8: {name!r}"
        if (name not in header_names) if is_safetensors else (raw not in data):
            return f"the name {name!r} is not in the file"
        if isinstance(value, str):
            if value.encode("utf-32-le") not in data:
                return f"the string entry {name!r} is not in the file"
        elif not isinstance(value, np.ndarray):
            return f"entry {name!r} is a {type(value).__name__}"
        elif value.tobytes() not in data:
            return f"the bytes of entry {name!r} ({value.dtype}, {value.shape}) are not in the file"
    return ""


def _base_files(which: str, golden: Path) -> list[tuple[str, bytes, list[str]]]:
    """(suffix, bytes, names) of the files to mutate."""
    import tempfile

    import ml_dtypes
    import safetensors.numpy

    import jax_conv_bpi as jcb

    if which == "golden":
        net = golden / "networks" / "dcgan_g"
        names = list(jcb.load_checkpoint(net / "model.ckpt"))
        return [
            (".ckpt", (net / "model.ckpt").read_bytes(), names),
            (".safetensors", (net / "model.safetensors").read_bytes(), names),
        ]
    rng = np.random.default_rng(1234)
    params = {
        "body.0.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "body.0.bias": rng.standard_normal(3).astype(np.float16),
        "head.weight": rng.standard_normal((2, 2)).astype(ml_dtypes.bfloat16),
        "head.scale": np.float32(0.5),
        "table": np.arange(6, dtype=np.int64).reshape(3, 2),
    }
    files = []
    with tempfile.TemporaryDirectory() as folder:
        for crc in (False, True):
            path = Path(folder) / f"m{crc}.ckpt"
            jcb.save_checkpoint({**params, "step": 7, "epoch_name": "e1"}, path, crc_check=crc)
            files.append((".ckpt", path.read_bytes(), [*params, "step", "epoch_name"]))
        path = Path(folder) / "m.safetensors"
        jcb.save_checkpoint(params, path, format="safetensors", crc_check=True)
        files.append((".safetensors", path.read_bytes(), list(params)))
    plain = {k: np.asarray(v) for k, v in params.items() if k != "head.weight"}
    files.append((".safetensors", safetensors.numpy.save(plain), list(plain)))  # no metadata, the package's layout
    return files


def _child(which: str, folder: Path, golden: Path) -> dict:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    import jax_conv_bpi as jcb

    signal.signal(signal.SIGALRM, _on_alarm)
    mutants: list[tuple[str, str, bytes]] = []
    for index, (suffix, data, _) in enumerate(_base_files(which, golden)):
        for kind, what, mutant in _truncations(data, np.random.default_rng(index)):
            mutants.append((suffix, f"{kind}|file {index} ({suffix}): {what}", mutant))
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        for index, (suffix, data, names) in enumerate(_base_files(which, golden)):
            label = f"seed {seed} file {index} ({suffix})"
            is_st = suffix == ".safetensors"
            for kind, what, mutant in _mutants(data, names, is_st, rng, MUTANTS_PER_FILE):
                mutants.append((suffix, f"{kind}|{label}: {what}", mutant))
            if is_st:
                for kind, what, mutant in _safetensors_mutants(data, rng, MUTANTS_PER_FILE // 2):
                    mutants.append((suffix, f"{kind}|{label}: {what}", mutant))
    if which == "made":
        mutants += [(".ckpt", f"crafted-ckpt|{what}", data) for what, data in _crafted_ckpts()]

    failures: list[str] = []
    rejected_by_kind: dict[str, int] = {}
    loaded = 0
    times: list[tuple[float, str]] = []
    for suffix, description, data in mutants:
        kind = description.split("|")[0].split(":")[0]
        path = folder / f"mutant{suffix}"
        path.write_bytes(data)
        problem = ""
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, 10 * PER_LOAD_S)
        try:
            result = jcb.load_checkpoint(path)
        except ValueError as e:
            problem = "" if str(path) in str(e) else f"a ValueError that does not name the file: {e}"
            rejected_by_kind[kind] = rejected_by_kind.get(kind, 0) + 1
        except _Hang:
            problem = f"no result in {10 * PER_LOAD_S} s"
        except BaseException as e:  # noqa: BLE001 - any other type is the failure this test looks for
            problem = f"{type(e).__name__}: {str(e)[:300]}"
        else:
            problem = _holds(data, result, suffix == ".safetensors")
            loaded += 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - start
        times.append((elapsed, description))
        if not problem and elapsed >= PER_LOAD_S:
            problem = f"took {elapsed:.2f} s"
        if problem:
            failures.append(f"{description}: {problem}")
    slowest = max(times)
    return {
        "mutants": len(mutants),
        "loaded": loaded,
        "rejected": sum(rejected_by_kind.values()),
        "rejected_by_kind": rejected_by_kind,
        "n_failures": len(failures),
        "failures": failures[:20],
        "max_s": slowest[0],
        "slowest": slowest[1],
        "address_space": resource.getrlimit(resource.RLIMIT_AS)[0],
    }


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))))
