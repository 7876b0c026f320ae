# make train: set up .venv if needed, train the default job (synthetic data), print results.
# make test:  set up .venv if needed, run make lint, then the whole test suite.
# make lint:  ruff (lint rules and format, line length 120) and mypy over seg/, as configured in pyproject.toml.
# make lock:  re-resolve requirements.lock from pyproject.toml (deliberately; see below).
# make gpu-bundle: .gpu/ for a GPU machine without network: py3.12 wheels from the lock, the data in
#             parts (README: "Running on a GPU machine"; scripts/gpu_visit.sh runs there).
#
# .venv is installed from requirements.lock (every package pinned with ==), then the
# project itself with --no-deps, so a fresh clone gets the same packages on any day.
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.seg-installed
LOCK   := requirements.lock

export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export WANDB_SILENT := true

# Installs exactly the lock, then the project without its dependencies.
INSTALL_LOCK := $(PY) -m pip install --quiet -r $(LOCK) && $(PY) -m pip install --quiet --no-deps -e .

.PHONY: install check-lock lock lint train test benchmark gpu-bundle clean

install: $(STAMP)

# Re-runs whenever requirements.lock or pyproject.toml is newer than the stamp.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(INSTALL_LOCK)
	touch $(STAMP)

# The installed versions must equal the lock. A .venv that has drifted (an older install,
# a package upgraded by hand) is reinstalled from the lock once; if it still differs,
# stop with the check's message (then: rm -rf .venv && make test).
check-lock: $(STAMP)
	@$(PY) scripts/check_lock.py || { echo "make: reinstalling $(VENV) from $(LOCK)"; \
	    $(INSTALL_LOCK) && $(PY) scripts/check_lock.py; }

# Re-resolve requirements.lock from pyproject.toml (dependencies + the test extra) for
# CPython 3.11 on Linux x86_64 (manylinux_2_28, so torch's nvidia-* CUDA wheels are pinned
# too), with torch/torchvision held by lock-constraints.txt. uv only resolves here (from
# PyPI metadata, no wheel downloads); pip installs. Pins already in the lock are kept where
# they still fit; `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed.
# The command:
#   uv pip compile pyproject.toml --extra test --constraint lock-constraints.txt \
#     --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
#     --custom-compile-command "make lock" --quiet --output-file requirements.lock
# Then `make install` (or `make test`) brings .venv in line with the new lock.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/uv || $(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --constraint lock-constraints.txt \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	    --custom-compile-command "make lock" --quiet $(LOCK_ARGS) --output-file $(LOCK)
	@echo "wrote $(LOCK); make install brings .venv in line with it"

train: check-lock
	$(PY) scripts/train.py --config configs/synthetic.yaml

# The same checks as .pre-commit-config.yaml; no finding is allowed.
lint: check-lock
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

benchmark: check-lock
	$(PY) scripts/benchmark.py | tee BENCHMARKS.md

gpu-bundle: check-lock
	$(PY) scripts/gpu_bundle.py

clean:
	rm -rf runs data/synthetic .pytest_cache
