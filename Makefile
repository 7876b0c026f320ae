# make train: set up .venv if needed, train the default job (synthetic data), print results.
# make test:  set up .venv if needed, run the whole test suite.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.seg-installed

export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export WANDB_SILENT := true

.PHONY: install train test benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) scripts/train.py --config configs/synthetic.yaml

test: $(STAMP)
	$(PY) -m pytest -q

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py | tee BENCHMARKS.md

clean:
	rm -rf runs data/synthetic .pytest_cache
