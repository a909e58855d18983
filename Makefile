# LAKE: two entry points on a fresh machine.
#   make demo   the main job
#   make test   every test (C++ via CTest, Python via pytest)
#   make sanitize  liblake and the C++ tests under ASan + UBSan, then CTest (build-sanitize/)
#   make fuzz   every reader's libFuzzer harness for FUZZ_SECONDS each, or FUZZ_RUNS executions (clang; build-fuzz/)
# Both install what is missing (Debian packages, a virtual environment) and rebuild
# only what is out of date.

SHELL      := /bin/bash
PYTHON     ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
BUILD      := build
JOBS       ?= 2
SYS_PKGS   := cmake ninja-build g++ zlib1g-dev libpng-dev libjpeg-dev nlohmann-json3-dev catch2 libeigen3-dev libfmt-dev git
# Installed without their recommended packages: headless Chromium opens report.html in
# tests/python/test_report.py (Debian 12: 25 packages, about 122 MB to download, 350 MB on disk,
# about 30 s; its recommends would add some 100 desktop packages).
SYS_PKGS_LEAN := chromium
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: all demo test build develop deps venv ctest pytest clean sanitize sanitize-build fuzz fuzz-build

all: build

# Debian packages: install only those missing (dpkg -s is cheap, so this is checked each time).
deps:
	@set -e; missing=$$(for p in $(SYS_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	lean=$$(for p in $(SYS_PKGS_LEAN); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing$$lean" ]; then \
	  echo "make: installing Debian packages:" $$missing $$lean; \
	  $(SUDO) apt-get update -qq; \
	fi; \
	if [ -n "$$missing" ]; then \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi; \
	if [ -n "$$lean" ]; then \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$lean \
	    || echo "make: could not install $$lean: the tests that open report.html in a browser will be skipped"; \
	fi

$(VENV)/.installed: requirements.txt | deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

venv: $(VENV)/.installed

$(BUILD)/build.ninja: CMakeLists.txt $(VENV)/.installed
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(abspath $(PY)) \
	  -DLAKE_BUILD_TESTS=ON -DLAKE_BUILD_PYTHON=ON -DLAKE_BUILD_EXAMPLES=ON

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)
	@$(PY) tools/dev_install.py

# The in-tree package in .venv (cheap, idempotent): a .pth file puts python/ (where CMake writes
# the extension) on .venv's path, and .venv/bin/lake runs pylake.cli:main. A rebuild needs no
# reinstall. See docs/setup.md.
develop: $(VENV)/.installed
	@$(PY) tools/dev_install.py

ctest: build
	ctest --test-dir $(BUILD) --output-on-failure -j 1

pytest: build
	LAKE_FIXTURES_DIR=$(abspath $(BUILD))/fixtures $(PY) -m pytest tests/python -ra $(PYTEST_ARGS)

test: ctest pytest

# ---- sanitizers (docs/setup.md, "Sanitizers") -------------------------------------------------
# A separate build folder (build/ is not touched): RelWithDebInfo (line numbers in reports),
# no Python extension (ASan's runtime would have to be preloaded into python), no CUDA kernels
# (nvcc does not take -fsanitize, and ASan reserves address ranges the CUDA driver wants).
# The options are exported for the build too: catch_discover_tests runs lake_tests after linking.
# CUDA_VISIBLE_DEVICES is empty: a CPU-only run, no CUDA driver in an ASan process.
SAN_BUILD  := build-sanitize
SANITIZE   ?= address,undefined
SAN_SUPP   := $(abspath tests/sanitizers/lsan.supp)
SAN_ENV    := ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:check_initialization_order=1 \
              UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
              LSAN_OPTIONS=suppressions=$(SAN_SUPP):print_suppressions=0 \
              CUDA_VISIBLE_DEVICES=

$(SAN_BUILD)/build.ninja: CMakeLists.txt $(VENV)/.installed
	cmake -S . -B $(SAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPython3_EXECUTABLE=$(abspath $(PY)) \
	  -DLAKE_BUILD_TESTS=ON -DLAKE_BUILD_PYTHON=OFF -DLAKE_BUILD_EXAMPLES=ON -DLAKE_WITH_CUDA=OFF \
	  -DLAKE_SANITIZE=$(SANITIZE)
	@echo '*' > $(SAN_BUILD)/.gitignore

sanitize-build: deps $(SAN_BUILD)/build.ninja
	$(SAN_ENV) cmake --build $(SAN_BUILD) -j $(JOBS)

sanitize: sanitize-build
	$(SAN_ENV) ctest --test-dir $(SAN_BUILD) --output-on-failure -j 1

# ---- fuzzing (docs/archives.md, "Fuzzing") ---------------------------------------------------
# clang's libFuzzer over every reader of untrusted files, with ASan + UBSan, in build-fuzz/
# (build/ is not touched). tests/fuzz/run.sh runs each target for FUZZ_SECONDS with the seeds of
# tests/fuzz/seeds/ and a working corpus in build-fuzz/corpus/, prints executions, time, exec/s,
# peak RSS and crashes per target, and keeps minimised crashing inputs in tests/fuzz/corpus/
# (replayed by lake_tests "[fuzz]"). The .lake target uses build/fixtures/tiny_export.pt (make
# ctest generates it; without it that target is skipped).
FUZZ_BUILD   := build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_RUNS    ?=

$(FUZZ_BUILD)/build.ninja: CMakeLists.txt tests/fuzz/CMakeLists.txt $(VENV)/.installed
	@command -v clang++ >/dev/null || { echo "make fuzz needs clang (apt-get install clang)"; exit 1; }
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPython3_EXECUTABLE=$(abspath $(PY)) -DLAKE_FUZZ=ON -DLAKE_BUILD_TESTS=OFF -DLAKE_BUILD_PYTHON=OFF \
	  -DLAKE_BUILD_EXAMPLES=OFF -DLAKE_WITH_CUDA=OFF
	@echo '*' > $(FUZZ_BUILD)/.gitignore

fuzz-build: deps $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

fuzz: fuzz-build
	$(PY) tests/fuzz/make_seeds.py --archives $(FUZZ_BUILD)/seeds
	FUZZ_RUNS=$(FUZZ_RUNS) tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

demo: build
	$(PY) examples/python/02_demo.py --workdir $(BUILD)/demo

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(FUZZ_BUILD) python/pylake/_C*.so
