# The README's commands. Each target creates .venv and installs what it needs on first use.
VENV        ?= .venv
PYTHON      ?= python3
TORCH_SPEC  ?= torch==2.13.0
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
PROFILE     ?= cpu
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help install test sync-check pytest nbtest smoke-run reproduce readme lab export bench docs

help:
	@echo "make reproduce   run the whole reproduction on the embedded Gemma 3 270M (profile: $(PROFILE))"
	@echo "make test        export/clean/README checks, pytest, every notebook in smoke mode, and the smoke profile run"
	@echo "make lab         open the notebooks in JupyterLab"
	@echo "make export      regenerate cai_repro/ and README.md from the notebooks"
	@echo "make bench       performance suite (ratios against naive baselines, measured side by side)"
	@echo "make docs        the nbdev documentation site (needs quarto, which this target does not install)"

# torch first: the pinned CPU wheel; the package's own range (torch>=2.4) then installs nothing more.
$(STAMP): settings.ini setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Fails when the notebooks and cai_repro/ (or README.md) are out of sync, or a notebook is not clean.
sync-check: $(STAMP)
	$(BIN)/python .ci/check_sync.py

pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests

# Every notebook, executed in place by nbdev with its default (smoke) parameters: tiny-random, seconds each.
nbtest: $(STAMP)
	$(BIN)/nbdev_test --n_workers 0 --do_print

# The smoke profile through the runner: papermill, summary.json, HTML and figures, as `make reproduce` does it.
smoke-run: $(STAMP)
	$(BIN)/cai-repro reproduce --profile smoke --out runs/smoke

test: sync-check pytest nbtest smoke-run

export: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	$(MAKE) readme

readme: $(STAMP)
	$(BIN)/python .ci/render_readme.py

reproduce: $(STAMP)
	$(BIN)/cai-repro reproduce --profile $(PROFILE)

lab: $(STAMP)
	$(BIN)/jupyter lab nbs

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --json

# Optional: nbdev's quarto site in _docs/. quarto is a separate install (https://quarto.org); nbdev would try to
# download it, so we check first.
docs: $(STAMP)
	@command -v quarto >/dev/null || { echo "make docs needs quarto on PATH (https://quarto.org/docs/get-started/); README.md is rendered without it by 'make readme'"; exit 1; }
	$(BIN)/nbdev_docs
