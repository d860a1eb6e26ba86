# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv when missing, installs, runs the end-to-end demo on the offline bundle
#   make test   creates .venv when missing, installs, runs the test suite
# A second call finds .venv/.installed newer than pyproject.toml and requirements.lock and installs nothing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUNDLE ?= ../shared/data/stocknet
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test check install bench clean-venv dashboard

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/advisor demo --bundle $(BUNDLE)

test: $(STAMP) check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Static checks, part of `make test`: ruff (lint and import order) and mypy (typed signatures everywhere; config in pyproject.toml).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

dashboard: $(STAMP)
	$(BIN)/streamlit run dashboard/app.py

clean-venv:
	rm -rf $(VENV)
