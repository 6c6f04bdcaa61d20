# maniflow_nb — the two quick-start commands are `make train` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export WANDB_MODE ?= offline
DATA ?= data/metaworld_$(TASK).zarr
TASK ?= reach-v3
EPISODES ?= 10

.PHONY: install sysdeps train test export-check nbtest doccheck pytest bench clean

$(VENV)/.installed: settings.ini setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0      # pinned first: an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed sysdeps

sysdeps:  ## EGL/OSMesa for offscreen MuJoCo rendering
	@bash tools/sysdeps.sh

$(DATA): | install
	$(BIN)/maniflow-demos --env metaworld --task $(TASK) --episodes $(EPISODES) --point-cloud --out $(DATA)

train: install $(DATA)  ## install + real MetaWorld demos + train + evaluate (CPU)
	$(BIN)/maniflow-info $(DATA)
	TASK=$(TASK) bash tools/quickstart.sh $(DATA)

export-check: install  ## nbdev_export and nbdev_clean must leave the tree unchanged
	bash tools/check_sync.sh

nbtest: install  ## one torch thread per notebook worker: two workers on two cores (oversubscribed threads slowed small-tensor cells)
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --skip_file_re '^(_|train|compare_runs)' --timing

doccheck: install  ## every notebook goes through nbdev's doc processors and renders to HTML
	$(PY) tools/check_docs.py

pytest: install
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -q -p no:cacheprovider --durations=15

test: install export-check nbtest doccheck pytest

bench: install
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf _proc _docs .pytest_cache
