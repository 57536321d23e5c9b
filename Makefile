# The README's commands. Each target creates .venv and installs what it needs on first use.
VENV        ?= .venv
PYTHON      ?= python3
TORCH_SPEC  ?= torch==2.13.0
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
PROFILE     ?= cpu
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help install test sync-check pytest nbtest smoke-run reproduce record readme lab export bench docs

help:
	@echo "make reproduce   run the whole reproduction on the embedded Gemma 3 270M (profile: $(PROFILE))"
	@echo "make test        export/clean/README checks, pytest, every notebook in smoke mode, and the smoke profile run"
	@echo "make lab         open JupyterLab at the project root, on nbs/index.ipynb (LAB_PORT=$(LAB_PORT), LAB_ARGS=...)"
	@echo "make export      regenerate cai_repro/ and README.md from the notebooks"
	@echo "make bench       performance suite (ratios against naive baselines, measured side by side)"
	@echo "make docs        the nbdev documentation site (needs quarto, which this target does not install)"

# torch first: the pinned CPU wheel; the package's own range (torch>=2.4) then installs nothing more. Then the Jupyter
# config that enables the server extension cleaning this project's notebooks on save, in any `jupyter lab` or `jupyter
# notebook` of this environment: a wheel installs it (setup.py's data_files), an editable install does not, so it is
# copied here.
$(STAMP): settings.ini setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d
	cp jupyter-config/jupyter_server_config.d/cai_repro.artifacts.json $(VENV)/etc/jupyter/jupyter_server_config.d/
	touch $(STAMP)

install: $(STAMP)

# llama.cpp's OpenAI-compatible server (`cai-repro serve`, and the engine tests). The index has no wheel, so pip builds
# it once (5-8 minutes on 2 cores) and then reuses its cached wheel. Portable CPU flags: a native build chose AMX
# kernels that crashed on our machines.
LLAMA_SPEC  ?= llama-cpp-python[server]==0.3.36
LLAMA_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_STAMP := $(VENV)/.llama-installed
$(LLAMA_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/python -m pip install --quiet "$(LLAMA_SPEC)"
	touch $(LLAMA_STAMP)

# Fails when the notebooks and cai_repro/ (or README.md) are out of sync, or a notebook is not clean.
sync-check: $(STAMP)
	$(BIN)/python .ci/check_sync.py

pytest: $(STAMP) $(LLAMA_STAMP)
	$(BIN)/python -m pytest -q tests

# The library notebooks (config, pipeline, cli, ...), executed in place by nbdev. The numbered ones run (with all their
# checks) in smoke-run below, through papermill as `make reproduce` runs them; `nbdev_test --path nbs/NAME.ipynb`
# runs one of them alone.
nbtest: $(STAMP)
	$(BIN)/nbdev_test --n_workers 0 --do_print --skip_file_re '^([_.]|[0-9])'


# The smoke profile through the runner: papermill, summary.json, HTML and figures, as `make reproduce` does it; then the
# same profile under the medical constitution, from 01 (any valid constitution runs the whole pipeline; 00-00c read none).
smoke-run: $(STAMP)
	$(BIN)/cai-repro reproduce --profile smoke --out runs/smoke
	$(BIN)/cai-repro reproduce --profile smoke --constitution medical --from 01_constitution --out runs/smoke-medical

test: sync-check pytest nbtest smoke-run

# .ci/nbclean.py is nbdev_clean plus the kernelspec ipykernel advertises (nbdev_clean alone stores "python3").
export: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/python .ci/nbclean.py
	$(MAKE) readme

# The readings (nbs/*.ipynb) and README.md, rendered from the committed record and nbs/index.ipynb.
readme: $(STAMP)
	$(BIN)/python .ci/render_readings.py
	$(BIN)/python .ci/render_readme.py

reproduce: $(STAMP)
	$(BIN)/cai-repro reproduce --profile $(PROFILE)

# After `make reproduce`: the run becomes the committed record (report/), and the readings are rendered from it.
record: $(STAMP)
	$(BIN)/cai-repro record runs/$(PROFILE) --to report
	$(MAKE) readme

# JupyterLab rooted at the project (so runs/ and report/ are in its file browser), on the index notebook. The config
# cleans a source notebook on save, so browsing leaves the tree clean. --allow-root only lifts Jupyter's refusal to
# run as root (containers, cloud machines); for any other user it changes nothing. On a remote machine:
#   make lab LAB_ARGS=--no-browser   then, on your computer: ssh -N -L 8888:localhost:8888 user@host
# and open the http://localhost:8888/lab/tree/nbs/index.ipynb?token=... URL that Jupyter prints.
# It also registers git's clean filter for nbs/*.ipynb (.gitattributes): outputs of cells run in Lab stay in the files
# but not in `git status` or a commit.
LAB_PORT    ?= 8888
LAB_ARGS    ?=
lab: $(STAMP)
	-git config filter.cai-nbclean.clean '$(BIN)/python .ci/nbclean.py --git-filter' 2>/dev/null
	$(BIN)/jupyter lab --config="$(CURDIR)/.ci/jupyter_server_config.py" --notebook-dir="$(CURDIR)" \
		--LabApp.default_url=/lab/tree/nbs/index.ipynb --port=$(LAB_PORT) --allow-root $(LAB_ARGS)

# The performance suite; its record is report/bench.json (with the commit it measured). BENCH_ARGS=--quick: fewer items.
BENCH_ARGS ?=
bench: $(STAMP) $(LLAMA_STAMP)
	mkdir -p report
	$(BIN)/python benchmarks/run.py --json --out report/bench.json $(BENCH_ARGS)

# Optional: nbdev's quarto site in _docs/. quarto is a separate install (https://quarto.org); nbdev would try to
# download it, so we check first.
docs: $(STAMP)
	@command -v quarto >/dev/null || { echo "make docs needs quarto on PATH (https://quarto.org/docs/get-started/); README.md is rendered without it by 'make readme'"; exit 1; }
	$(BIN)/nbdev_docs
