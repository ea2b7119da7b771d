"""The package's shape: which module may import which, and a public API that changes only by addition.

Import rules, read from the source (``ast``: every ``import`` and
``from ... import``, at module level or inside functions, relative ones
resolved; modules found by walking the folders, so new and renamed modules are
covered without a list to keep):

* ``jax_conv_bpi/_src`` is layered, lowest first: ``base``, ``native``,
  ``lowering``, ``op``, ``mindspore`` (its sub-packages, ``nn/`` and
  ``checkpoint/``, are ``mindspore``). A module imports ``_src`` modules of its
  own layer or lower ones only, and never the public modules
  (``jax_conv_bpi``, ``ops``, ``nn``, ``bench``, ``__main__``);
* no module of the package uses another module's underscored name
  (``from jax_conv_bpi._src.x import _y``, or ``x._y`` on an imported module);
  importing a package path (``_src``) is no such use;
* the benchmark, ``jax_conv_bpi/bench``, uses the public API only: it imports
  nothing from ``jax_conv_bpi._src``.

Public API: ``public_api.json`` holds, for ``jax_conv_bpi``,
``jax_conv_bpi.ops`` and ``jax_conv_bpi.nn``, every name of ``__all__`` with its
kind and, for functions and classes, ``inspect.signature`` (classes:
``__init__``, ``__call__`` and their public methods, those the package defines).
Every recorded name must still be there with the same signature; every name in
``__all__`` must be recorded, so an addition is deliberate. After one, from the
repository's root::

    python -m tests.test_architecture --update-api
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import json
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "jax_conv_bpi"
SRC = f"{PACKAGE}._src"
LAYERS = ("base", "native", "lowering", "op", "mindspore")  # lowest first
API_MODULES = ("jax_conv_bpi", "jax_conv_bpi.ops", "jax_conv_bpi.nn")
API_FILE = pathlib.Path(__file__).with_name("public_api.json")
UPDATE = "python -m tests.test_architecture --update-api"

# ---------------------------------------------------------------------------
# The package's modules and their imports, from the source
# ---------------------------------------------------------------------------


def module_name(path: pathlib.Path) -> str:
    """``jax_conv_bpi/_src/op/args.py`` -> ``jax_conv_bpi._src.op.args``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def modules() -> dict[str, pathlib.Path]:
    """Every module of the package (``.py`` under ``jax_conv_bpi/``), by dotted name."""
    found = {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py")) if "__pycache__" not in p.parts}
    assert found, f"no modules found under {ROOT / PACKAGE}"
    return found


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


@dataclasses.dataclass(frozen=True)
class Import:
    """One imported thing: ``target`` (a module of the package, or outside it) and ``name`` (a name of ``target``,
    or None when a module itself is imported)."""

    importer: str
    line: int
    target: str
    name: str | None

    def __str__(self) -> str:
        what = self.target if self.name is None else f"{self.target}.{self.name}"
        return f"{self.importer} (line {self.line}) imports {what}"


def resolve_relative(importer: str, level: int, module: str | None) -> str:
    """The absolute module of ``from <level dots><module> import ...`` written in ``importer``."""
    package = importer if is_package(importer) else importer.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    assert package, f"{importer}: a relative import ({'.' * level}{module or ''}) beyond the top-level package"
    return f"{package}.{module}" if module else package


@functools.cache
def imports_of(importer: str) -> tuple[Import, ...]:
    """Every import of ``importer`` (any nesting), relative ones resolved, ``from m import sub`` as module ``m.sub``."""
    tree = ast.parse(modules()[importer].read_text(), filename=str(modules()[importer]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(importer, node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(importer, node.level, node.module) if node.level else node.module
            for alias in node.names:
                if alias.name == "*":
                    found.append(Import(importer, node.lineno, base, "*"))
                elif f"{base}.{alias.name}" in modules():  # a submodule
                    found.append(Import(importer, node.lineno, f"{base}.{alias.name}", None))
                else:
                    found.append(Import(importer, node.lineno, base, alias.name))
    return tuple(sorted(found, key=lambda i: (i.line, i.target, i.name or "")))


def in_package(module: str) -> bool:
    return module == PACKAGE or module.startswith(f"{PACKAGE}.")


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def layer(module: str) -> str | None:
    """The ``_src`` layer of a module (``jax_conv_bpi._src.mindspore.nn.layers`` -> ``mindspore``), else None."""
    if not module.startswith(f"{SRC}."):
        return None
    return module.split(".")[2]


def private(name: str | None) -> bool:
    return name is not None and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def report(title: str, violations) -> str:
    lines = sorted({str(v) for v in violations})
    return f"{title}: {len(lines)} offending import(s)\n  " + "\n  ".join(lines)


# ---------------------------------------------------------------------------
# The walker sees what it should
# ---------------------------------------------------------------------------


def test_every_src_module_is_in_a_layer():
    """Each module under ``_src`` (its own ``__init__`` aside) sits in one of the known layers' folders."""
    src = [m for m in modules() if under(m, SRC) and m != SRC]
    assert src, "no modules under jax_conv_bpi/_src"
    outside = [m for m in src if layer(m) not in LAYERS]
    assert not outside, f"modules of _src outside the layers {LAYERS} (add the folder to LAYERS, in order): {outside}"
    assert {layer(m) for m in src} == set(LAYERS), f"a layer without modules: {set(LAYERS) - {layer(m) for m in src}}"


def test_imports_are_read_and_resolved():
    """The reader finds the public modules' imports of ``_src``, and resolves relative imports of either form."""
    assert any(under(i.target, SRC) for i in imports_of(PACKAGE)), imports_of(PACKAGE)
    bench = [m for m in modules() if under(m, f"{PACKAGE}.bench")]
    assert any(in_package(i.target) for m in bench for i in imports_of(m)), "no package imports found in bench/"
    some = next(m for m in modules() if not is_package(m) and under(m, SRC))
    package = some.rpartition(".")[0]
    assert resolve_relative(some, 1, "x") == f"{package}.x"
    assert resolve_relative(some, 2, None) == package.rpartition(".")[0]
    assert resolve_relative(SRC, 1, "op") == f"{SRC}.op"  # in a package's __init__, "." is the package


# ---------------------------------------------------------------------------
# The import rules
# ---------------------------------------------------------------------------


def test_src_layers_import_downwards_only():
    """A ``_src`` module of layer L imports ``_src`` modules of layers up to L, and no public module."""
    upward, public = [], []
    for importer in modules():
        own = layer(importer)
        if own not in LAYERS:  # outside _src, or in no known layer (test_every_src_module_is_in_a_layer)
            continue
        for imp in imports_of(importer):
            if not in_package(imp.target):
                continue
            if not under(imp.target, SRC):
                public.append(imp)
            elif layer(imp.target) in LAYERS and LAYERS.index(layer(imp.target)) > LAYERS.index(own):
                upward.append(f"{imp}  [{own} -> {layer(imp.target)}]")
    problems = []
    if upward:
        problems.append(report(f"_src imports a higher layer (order: {' < '.join(LAYERS)})", upward))
    if public:
        problems.append(report("_src imports the public modules", public))
    assert not problems, "\n".join(problems)


def _module_aliases(importer: str, tree: ast.Module) -> dict[str, str]:
    """Local names bound to modules of the package by ``importer``'s imports (``import a.b as m``, ``from a import b``)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if in_package(alias.name):
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    elif "." not in alias.name:
                        aliases[alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(importer, node.level, node.module) if node.level else node.module
            for alias in node.names:
                if f"{base}.{alias.name}" in modules():
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    return aliases


def test_no_module_uses_another_modules_private_names():
    """``from jax_conv_bpi._src.x import _y`` and ``x._y`` (on an imported module of the package) are both out."""
    violations = []
    for importer in modules():
        for imp in imports_of(importer):
            if in_package(imp.target) and private(imp.name):
                violations.append(imp)
        tree = ast.parse(modules()[importer].read_text())
        aliases = _module_aliases(importer, tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and private(node.attr)
                and f"{aliases[node.value.id]}.{node.attr}" not in modules()
            ):
                used = f"{aliases[node.value.id]}.{node.attr}"
                violations.append(f"{importer} (line {node.lineno}) uses {used} (an attribute of the imported module)")
    assert not violations, report("underscored names used across modules", violations)


def test_bench_uses_the_public_api_only():
    """``jax_conv_bpi/bench`` imports nothing from ``jax_conv_bpi._src``."""
    violations = [
        imp
        for importer in modules()
        if under(importer, f"{PACKAGE}.bench")
        for imp in imports_of(importer)
        if under(imp.target, SRC) or (imp.target == PACKAGE and imp.name == "_src")
    ]
    assert not violations, report("the benchmark imports jax_conv_bpi._src", violations)


def test_test_modules_share_code_through_support_only():
    """The suite's own rule: no module of ``tests/`` imports a ``conftest`` or a test module, or a file of ``tests/``
    as a top-level module (``import helpers``): shared code is ``tests.support``."""
    tests = pathlib.Path(__file__).resolve().parent
    local = {p.stem for p in tests.glob("*.py")} | {p.name for p in tests.iterdir() if (p / "__init__.py").exists()}
    violations = []
    for path in sorted(tests.rglob("*.py")):
        package = ".".join(path.relative_to(ROOT).parts[:-1])  # tests, tests.support
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                last, first = target.rpartition(".")[2], target.partition(".")[0]
                if first not in local and first != "tests":
                    continue  # outside the suite (jax.test_util is no test module of ours)
                if last == "conftest" or last.startswith("test_") or first != "tests":
                    violations.append(f"{path.relative_to(ROOT)} (line {node.lineno}) imports {target}")
                    break  # one report per statement
    assert not violations, "test modules share code through tests.support only:\n  " + "\n  ".join(violations)


# ---------------------------------------------------------------------------
# The public API
# ---------------------------------------------------------------------------

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _signature(obj) -> str:
    """``inspect.signature`` as text, memory addresses of default objects removed (``<object object>``)."""
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):  # a builtin without a signature
        return "(?)"
    return _ADDRESS.sub("", text)


def _class_members(cls) -> dict[str, str]:
    """``__init__``, ``__call__`` and the public members that the package's classes of ``cls``'s MRO define."""
    out = {}
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()  # in __init__
    for klass in cls.__mro__:
        if not klass.__module__.startswith(PACKAGE):
            continue
        for name, attr in vars(klass).items():
            if name in out or name in fields or (name.startswith("_") and name not in ("__init__", "__call__")):
                continue
            if isinstance(attr, property):
                out[name] = "property"
            elif isinstance(attr, (staticmethod, classmethod)):
                out[name] = f"{type(attr).__name__} {_signature(attr.__func__)}"
            elif inspect.isfunction(attr):
                out[name] = f"method {_signature(attr)}"
            else:
                out[name] = f"attribute {type(attr).__name__}"
    for special in ("__init__", "__call__"):  # inherited from outside the package: what the class answers to
        if special not in out and special in dir(cls) and getattr(cls, special) is not getattr(object, special, None):
            out[special] = f"method {_signature(getattr(cls, special))}"
    return dict(sorted(out.items()))


def describe(obj) -> dict:
    """The recorded form of one public name."""
    if inspect.ismodule(obj):
        return {"kind": "module", "module": obj.__name__}
    if inspect.isclass(obj):
        return {"kind": "class", "members": _class_members(obj)}
    if callable(obj) and (inspect.isfunction(obj) or inspect.isbuiltin(obj) or hasattr(obj, "__wrapped__")):
        return {"kind": "function", "signature": _signature(obj)}
    public_type = next(t for t in type(obj).__mro__ if not t.__name__.startswith("_"))  # _ConvPrimitive: Primitive
    return {"kind": "object", "type": public_type.__name__}


def snapshot_of(module_name_: str) -> dict[str, dict]:
    module = importlib.import_module(module_name_)
    names = list(module.__all__)
    assert len(names) == len(set(names)), f"{module_name_}.__all__ repeats a name"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module_name_}.__all__ names what the module lacks: {missing}"
    return {name: describe(getattr(module, name)) for name in sorted(names)}


def flatten(module_name_: str, entries: dict[str, dict]) -> dict[str, str]:
    """``{"module.Name": kind and signature, "module.Class.member": signature}``: the units compared."""
    flat = {}
    for name, entry in entries.items():
        key = f"{module_name_}.{name}"
        if entry["kind"] == "class":
            flat[key] = "class"
            flat.update({f"{key}.{member}": sig for member, sig in entry["members"].items()})
        else:
            flat[key] = " ".join(f"{k}={v}" for k, v in entry.items())
    return flat


def _recorded() -> dict[str, dict[str, dict]]:
    assert API_FILE.exists(), f"{API_FILE.name} is missing: write it with `{UPDATE}`"
    return json.loads(API_FILE.read_text())


def _current(module_name_: str) -> dict[str, dict]:
    if module_name_ == "jax_conv_bpi.nn":
        pytest.importorskip("flax.nnx", reason="the nn extra is not installed: pip install -e '.[nn]'")
    return snapshot_of(module_name_)


@pytest.mark.parametrize("module", API_MODULES)
def test_public_api_keeps_every_recorded_name_and_signature(module):
    """Nothing recorded in ``public_api.json`` is gone or has changed: the public API changes only by addition."""
    recorded = _recorded()
    assert module in recorded, f"{API_FILE.name} has no entry for {module}: `{UPDATE}`"
    want, got = flatten(module, recorded[module]), flatten(module, _current(module))
    gone = sorted(set(want) - set(got))
    changed = [
        f"{k}\n      was: {want[k]}\n      now: {got[k]}" for k in sorted(want) if k in got and got[k] != want[k]
    ]
    assert not gone and not changed, (
        f"the public API of {module} lost or changed names (a breaking change):\n"
        + "".join(f"  gone: {k}\n" for k in gone)
        + "".join(f"  changed: {c}\n" for c in changed)
        + f"If deliberate, record the new API with `{UPDATE}` and say so in the change."
    )


@pytest.mark.parametrize("module", API_MODULES)
def test_every_public_name_is_recorded(module):
    """Every name of ``__all__`` (and public member of its classes) is in ``public_api.json``: additions are deliberate."""
    recorded = _recorded().get(module, {})
    want, got = flatten(module, recorded), flatten(module, _current(module))
    new = sorted(set(got) - set(want))
    assert not new, (
        f"{module} has public names that {API_FILE.name} does not record:\n"
        + "".join(f"  {k}: {got[k]}\n" for k in new)
        + f"An addition to the public API is deliberate: record it with `{UPDATE}` (from the repository's root)."
    )


def test_snapshot_is_stable():
    """Describing the API twice gives the same text, with no memory address in it (the file stays reproducible)."""
    for module in API_MODULES:
        try:
            first = json.dumps(_current(module), sort_keys=True)
        except pytest.skip.Exception:
            continue
        assert first == json.dumps(snapshot_of(module), sort_keys=True)
        assert not re.search(r"0x[0-9a-fA-F]{6,}", first), f"{module}: an address in the snapshot"


def update_api() -> None:
    """Write ``public_api.json`` from the installed code (the nn extra must be installed)."""
    api = {module: snapshot_of(module) for module in API_MODULES}
    API_FILE.write_text(json.dumps(api, indent=2, sort_keys=True) + "\n")
    print(f"wrote {API_FILE} ({sum(len(v) for v in api.values())} names)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update-api"]:
        sys.exit(f"usage: {UPDATE}")
    update_api()
