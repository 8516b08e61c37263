# Two commands: `make demo` runs the pipeline end to end (retrain, fit, tune, evaluate, a
# valuation and a memorisation analysis from the fitted predictor with their plots, then
# datamodels and the LDS table of every method);
# `make test` runs the tests.
# Both create .venv and install the package into it when missing (fast when already done).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mp-ray-installed

.PHONY: install demo test lint format clean bench-deps

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

DEMO := --config configs/quickstart.yaml

demo: $(STAMP)
	$(BIN)/mp-ray retrain $(DEMO)
	$(BIN)/mp-ray fit $(DEMO) --name quickstart --export runs/predictors/quickstart
	$(BIN)/mp-ray tune $(DEMO) --name quickstart --samples 4
	$(BIN)/mp-ray evaluate $(DEMO) --predictor fit=runs/predictors/quickstart \
		--predictor tuned=runs/tune/quickstart/best
	$(BIN)/mp-ray value $(DEMO) --predictor runs/predictors/quickstart --max-samples 200 \
		--output runs/values.parquet --plots runs/plots
	$(BIN)/mp-ray memorization $(DEMO) --predictor runs/predictors/quickstart --top 5 \
		--plot runs/plots/memorization.png
	$(BIN)/mp-ray datamodels $(DEMO)
	$(BIN)/mp-ray lds $(DEMO) --predictor fit=runs/predictors/quickstart \
		--predictor tuned=runs/tune/quickstart/best

# pyDVL, the peer of benchmarks/valuation.py, pins numpy < 2 (mp-ray uses numpy 2, zarr 3):
# it gets its own environment, which the benchmark runs as a subprocess.
bench-deps: .venv-pydvl/.installed

.venv-pydvl/.installed:
	$(PYTHON) -m venv .venv-pydvl
	.venv-pydvl/bin/python -m pip install --quiet pydvl==0.10.0
	touch $@

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q  # fails when a test fails, and when no test ran (exit 5)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf runs .pytest_cache
