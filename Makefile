# Two entry points that work on a fresh machine with Python 3.11+ and pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-min-jax test-xla-defaults test-native-sanitize test-native-isa native-cross-aarch64 bench notebook-png lint typecheck docs docs-check

# The core alone (jax, jaxlib, numpy): all the demo needs.
$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# Everything the tests, notebooks and linters need, on top of the core; first the native kernels'
# plugin (native/: CMake through scikit-build-core), compiled against this venv's jaxlib (no build
# isolation, so the FFI headers are those of the jaxlib it runs with) with warnings as errors. It
# prints where the kernels are, or why they are off (the tests then cover the fallback).
$(VENV)/.installed: $(VENV)/.core $(wildcard native/pyproject.toml native/CMakeLists.txt native/src/* native/python/*/*)
	$(PY) -m pip install --quiet "scikit-build-core>=0.10" "cmake>=3.18" ninja
	$(PY) -m pip install --quiet --no-build-isolation -C cmake.define.JCB_NATIVE_WERROR=ON ./native
	$(PY) -m pip install --quiet -e ".[test,notebook,nn,dev,native,peers]"
	$(PY) -c "import jax_conv_bpi; print(jax_conv_bpi.native_status())"
	touch $@

demo: $(VENV)/.core
	$(PY) -m jax_conv_bpi

# The documentation pages' examples are doctested with the README's.
DOC_PAGES := $(wildcard docs/*.md)

test: $(VENV)/.installed
	$(PY) -m pytest jax_conv_bpi tests README.md $(DOC_PAGES) --doctest-glob='*.md' -q -n 2

# The lowest JAX that pyproject.toml claims (jax>=0.4.36), in a venv of its own: the golden
# tests and the N-D oracle, transformation and path tests run against it. CI runs it after
# `make test` (.ci/run).
MIN_VENV ?= .venv-min-jax
MIN_PY := $(MIN_VENV)/bin/python
MIN_JAX := jax==0.4.36 jaxlib==0.4.36 numpy<2.2

$(MIN_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_PY) -m pip install --quiet --upgrade pip
	$(MIN_PY) -m pip install --quiet $(foreach r,$(MIN_JAX),"$(r)") -e ".[test]"
	touch $@

test-min-jax: $(MIN_VENV)/.installed
	$(MIN_PY) -c "import jax; assert jax.__version__ == '0.4.36', jax.__version__"
	$(MIN_PY) -m pytest tests/test_golden.py tests/test_conv_transpose.py tests/test_transforms_nd.py tests/test_paths_nd.py tests/test_sharding.py -q -n 2 -p no:cacheprovider

# The session's fast-compile XLA flags (tests/support/xla_flags.py) off: every CPU path on the reference
# geometries and the MindSpore network, compiled as users compile them (the per-path golden
# sweeps, hundreds of programs, stay in `make test`). CI runs it too.
test-xla-defaults: $(VENV)/.installed
	JCB_TEST_XLA_DEFAULTS=1 $(PY) -m pytest tests/test_paths.py tests/test_paths_nd.py tests/test_network_dcgan.py -q -n 2 -p no:cacheprovider -k "not whole_golden and not mindspores_vjps"

# The native kernels under AddressSanitizer + UBSan, in a venv of their own: the plugin built with
# JCB_NATIVE_SANITIZE (-O1 -g, every masked vector access touched lane by lane, a checking reference
# sgemm in place of OpenBLAS's: native/CMakeLists.txt), the native tests and a seeded sweep of
# JCB_SWEEP_COUNT random geometries through every kernel (tests/test_native_sweep.py), with the
# compiler's runtimes preloaded into Python. A report stops the process (halt_on_error), so the
# run fails. CI runs it (.ci/run).
SAN_VENV ?= .venv-sanitize
SAN_PY := $(SAN_VENV)/bin/python
SAN_PRELOAD = $(shell $(CXX) -print-file-name=libasan.so) $(shell $(CXX) -print-file-name=libubsan.so)
SAN_ENV = LD_PRELOAD="$(SAN_PRELOAD)" \
  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:alloc_dealloc_mismatch=0:detect_odr_violation=0 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
SWEEP_COUNT ?= 2000

$(SAN_VENV)/.installed: pyproject.toml $(wildcard native/pyproject.toml native/CMakeLists.txt native/src/* native/python/*/*)
	$(PYTHON) -m venv $(SAN_VENV)
	$(SAN_PY) -m pip install --quiet --upgrade pip
	$(SAN_PY) -m pip install --quiet -e ".[test]" "scipy-openblas32>=0.3.34" "scikit-build-core>=0.10" "cmake>=3.18" ninja
	CXX=$(CXX) $(SAN_PY) -m pip install --quiet --no-build-isolation -C cmake.define.JCB_NATIVE_SANITIZE=ON \
	  -C cmake.define.JCB_NATIVE_WERROR=ON ./native
	touch $@

test-native-sanitize: $(SAN_VENV)/.installed
	$(SAN_ENV) $(SAN_PY) -c "import jax_conv_bpi as j, jax_conv_bpi_native as n; \
	  assert '-fsanitize=address' in n.FLAGS, n.FLAGS; s = j.native_status(); print(s); assert 'native kernel off' not in s"
	$(SAN_ENV) JCB_SWEEP_COUNT=$(SWEEP_COUNT) $(SAN_PY) -m pytest tests/test_native.py tests/test_native_sweep.py \
	  tests/test_regressions.py::test_a_tap_wholly_outside_the_input_does_not_read_past_it -q -n 2 -p no:cacheprovider

# The native tests with the kernels forced to the instruction set without SIMD target
# (JCB_NATIVE_ISA=generic: native/src/isa.h), as on a CPU with neither AVX2 nor AVX-512; each forced
# instruction set against the references is tests/test_native_isa.py, in `make test`.
test-native-isa: $(VENV)/.installed
	JCB_NATIVE_ISA=generic $(PY) -m pytest tests/test_native.py tests/test_native_determinism.py -q -n 2 -p no:cacheprovider

# Every source of the native plugin compiled for aarch64 (Debian's cross compiler, installed here
# when missing and run as root) with the project's warnings as errors, against this venv's XLA FFI
# headers; objects only, in a temporary folder: the x86-64 variants must stay behind their #ifs
# and the generic code must build anywhere. CI runs it (.ci/run).
AARCH64_CXX ?= aarch64-linux-gnu-g++
NATIVE_SOURCES := $(wildcard native/src/*.cc)

native-cross-aarch64: $(VENV)/.installed
	@if ! command -v $(AARCH64_CXX) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null; \
	  else \
	    echo "native-cross-aarch64 needs an aarch64 C++ compiler: install Debian's package (sudo apt-get install g++-aarch64-linux-gnu) or set AARCH64_CXX" >&2; \
	    exit 1; \
	  fi; \
	fi
	@ffi=$$($(PY) -c "import jax; print(jax.ffi.include_dir())") && out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
	for src in $(NATIVE_SOURCES); do \
	  for sanitize in "" -DJCB_NATIVE_SANITIZE=1; do \
	    $(AARCH64_CXX) -std=c++17 -O2 -Wall -Wextra -Werror $$sanitize -isystem "$$ffi" -c "$$src" \
	      -o "$$out/$$(basename $$src .cc)$$sanitize.o" || exit 1; \
	  done; \
	done && echo "native-cross-aarch64: $(words $(NATIVE_SOURCES)) sources compile for aarch64 ($$($(AARCH64_CXX) -dumpfullversion), plain and JCB_NATIVE_SANITIZE)"

bench: $(VENV)/.installed
	$(PY) -m jax_conv_bpi.bench

notebook-png: $(VENV)/.installed  # executes both notebooks, saving their pictures to docs/img
	$(PY) notebooks/make_figures.py docs/img

lint: typecheck
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

# pyright on the package ([tool.pyright] in pyproject.toml): 0 errors. CI runs it (.ci/run).
typecheck: $(VENV)/.installed
	$(VENV)/bin/pyright

# The documentation site (docs/, Sphinx + MyST + myst-nb): built offline into docs/_build/html, with
# warnings as errors (-W) and every cross-reference checked (-n); the notebooks are executed (their
# outputs are cached in docs/_build/.jupyter_cache).
$(VENV)/.docs: $(VENV)/.core
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

docs: $(VENV)/.docs
	$(PY) -m sphinx -b html -W --keep-going -n -q docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# The built site in headless Chromium (Debian's chromium package, installed here when missing and
# run as root): the home page, the API entry of conv_transpose and a rendered notebook must show
# their title, a code block and an image; screenshots go to docs/_build/screenshots/.
docs-check: docs
	@if ! command -v chromium >/dev/null 2>&1 && [ -z "$$CHROMIUM" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "docs-check needs Chromium: install Debian's package (sudo apt-get install chromium) or set CHROMIUM" >&2; \
	    exit 1; \
	  fi; \
	fi
	$(PY) scripts/docs_check.py docs/_build/html docs/_build/screenshots
