# LAKE: two entry points on a fresh machine.
#   make demo   the main job
#   make test   every test (C++ via CTest, Python via pytest)
# Both install what is missing (Debian packages, a virtual environment) and rebuild
# only what is out of date.

SHELL      := /bin/bash
PYTHON     ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
BUILD      := build
JOBS       ?= 2
SYS_PKGS   := cmake ninja-build g++ zlib1g-dev libpng-dev libjpeg-dev nlohmann-json3-dev catch2 git
# Installed without their recommended packages: headless Chromium opens report.html in
# tests/python/test_report.py (Debian 12: 25 packages, about 122 MB to download, 350 MB on disk,
# about 30 s; its recommends would add some 100 desktop packages).
SYS_PKGS_LEAN := chromium
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: all demo test build develop deps venv ctest pytest clean

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

demo: build
	$(PY) examples/python/02_demo.py --workdir $(BUILD)/demo

clean:
	rm -rf $(BUILD) python/pylake/_C*.so
