# anyq: `make run` trains and compares on the embedded synthetic data; `make test` runs the tests.
# Every target that runs the app passes ARGS="..." through as Hydra overrides.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
ARGS ?=
# set on the commands that take $(ARGS): a quoting hint then gives the ARGS="..." form, since
# the recipe's shell removes one level of quotes before the app sees them
VIA_MAKE := ANYQ_ARGS_FROM_MAKE=1
HOST ?= 127.0.0.1
export ANYQ_ROOT := $(CURDIR)

.PHONY: help env env-scale-out run test test-all bench sweep confirm ablate report ui ui-check dashboard tensorboard serve services services-stop clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install -q -c $(CONSTRAINTS) "torch==$$(grep -E '^torch==' $(CONSTRAINTS) | cut -d= -f3)"
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[test]"
	@# hydra-optuna-sweeper declares optuna<3 but works with current optuna: no deps
	$(PY) -m pip install -q --no-deps -c $(CONSTRAINTS) hydra-optuna-sweeper
	@touch $@

env: $(STAMP) ## create the virtual environment with pinned dependencies

$(VENV)/.scale-out: $(STAMP) requirements/scale-out.txt
	$(PY) -m pip install -q -c $(CONSTRAINTS) -r requirements/scale-out.txt
	@touch $@

env-scale-out: $(VENV)/.scale-out ## add the Ray and Submitit launchers (pins: requirements/scale-out.txt)

run: $(STAMP) ## main job: baseline adaptive vs adaptive attention on synthetic data, one study, then the table
	@# the two models train side by side, one torch thread each (experiment=cpu_demo)
	$(VIA_MAKE) $(BIN)/anyq-train -m experiment=cpu_demo study=main hydra/launcher=joblib hydra.launcher.n_jobs=2 $(ARGS)

# Test files run in parallel, one pytest-xdist worker per core up to TEST_JOBS (a file's tests stay
# on one worker, so module fixtures such as the PostgreSQL + MLflow services start once per file).
TEST_JOBS ?= 4
test: $(STAMP) ## run the test suite (PYTEST_ARGS="..." to pass pytest options, TEST_JOBS=1 for one process)
	$(BIN)/pytest -q -n auto --maxprocesses=$(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

test-all: $(VENV)/.scale-out ## the suite with the integration tests (services, Ray, Submitit, Chromium), as CI runs it
	ANYQ_INTEGRATION=1 $(MAKE) test

bench: $(STAMP) ## model benchmarks (throughput, attention cost, sampler update share)
	$(PY) benchmarks/bench_model.py

# The real-data benchmark's peers (neuralforecast, LightGBM) live in their own environment with
# their own pins. DATA=<long csv> with TRAIN_END / VAL_END / TEST_END runs a user's file instead
# of the panel; DATASETS=<a,b> runs part of the panel.
VENV_BENCH ?= .venv-bench
BENCH_REQ := requirements/bench-real.txt
BENCH_STAMP := $(VENV_BENCH)/.installed
BENCH_ARGS ?=
DATA ?=
DATASETS ?=
BENCH_DATA_ARGS = $(if $(DATA),--data '$(DATA)' --train-end '$(TRAIN_END)' --val-end '$(VAL_END)' --test-end '$(TEST_END)',) \
  $(if $(DATASETS),--datasets '$(DATASETS)',)
.PHONY: bench-real bench-cost

$(BENCH_STAMP): $(BENCH_REQ)
	@test -x $(VENV_BENCH)/bin/python || $(PYTHON) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/python -m pip install -q --upgrade pip
	@# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build
	$(VENV_BENCH)/bin/python -m pip install -q "torch==$$(grep -E '^torch==' $(BENCH_REQ) | cut -d= -f3)"
	$(VENV_BENCH)/bin/python -m pip install -q -r $(BENCH_REQ)
	@touch $@

bench-real: $(STAMP) $(BENCH_STAMP) ## panel of real load (or DATA=file.csv TRAIN_END= VAL_END= TEST_END=): anyq vs naive, NBEATS, LightGBM
	$(PY) benchmarks/bench_real.py --peer-python $(VENV_BENCH)/bin/python $(BENCH_DATA_ARGS) $(BENCH_ARGS)

bench-cost: $(STAMP) ## data preparation time, windows/s and peak memory against panel size
	$(PY) benchmarks/bench_cost.py $(BENCH_ARGS)

sweep: $(STAMP) ## Optuna sweep (default sweep=adaptive_attention, 8 trials x 300 steps, 2 at a time)
	@# two trials side by side, one torch thread each (the sweep sets trainer.num_threads=1)
	$(VIA_MAKE) $(BIN)/anyq-train -m sweep=adaptive_attention hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweeper.n_jobs=2 $(ARGS)

confirm: $(STAMP) ## retrain a sweep's best trial over seeds vs the baseline: STUDY=<sweep> [SEEDS=5]
	@test -n "$(STUDY)" || { echo "usage: make confirm STUDY=<sweep study name> [SEEDS=5]" >&2; exit 2; }
	$(VIA_MAKE) $(BIN)/anyq-confirm $(STUDY) --seeds $(or $(SEEDS),5) $(ARGS)

ablate: $(STAMP) ## ablation study: every variant x 3 seeds at a demo budget
	$(VIA_MAKE) $(BIN)/anyq-train -m ablation=variants $(ARGS)

report: $(STAMP) ## compare the newest study (or single runs), write reports/<name>/index.html (STUDY=<name> or EXPERIMENT=<name>)
	$(BIN)/anyq-report $(if $(STUDY),--study $(STUDY),) $(if $(EXPERIMENT),--experiment $(EXPERIMENT),) $(REPORT_ARGS)

ui: $(STAMP) ## MLflow UI on 127.0.0.1:5000; saved view "anyq comparison" (test CRPS, Δ vs baseline, coverage)
	@# The UI keeps visible columns in the browser; the saved view (an experiment tag) is what a server can offer.
	-@test ! -f $(CURDIR)/mlruns/mlflow.db || $(BIN)/anyq-report --view-only --tracking-uri sqlite:///$(CURDIR)/mlruns/mlflow.db $(if $(STUDY),--study $(STUDY),) --ui-url http://$(HOST):5000
	$(BIN)/mlflow ui --host $(HOST) --port 5000 --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db --default-artifact-root $(CURDIR)/mlruns/artifacts

ui-check: $(STAMP) ## headless Chromium on the MLflow runs page of EXPERIMENT (default main): checks columns, writes a screenshot
	$(PY) -m anyq.app.ui_check --experiment $(or $(EXPERIMENT),main) --out reports/ui/$(or $(EXPERIMENT),main)_runs.png \
	  $(if $(wildcard reports/$(or $(EXPERIMENT),main)/index.html),--report reports/$(or $(EXPERIMENT),main)/index.html,)

dashboard: $(STAMP) ## optuna-dashboard on the study storage, 127.0.0.1:8080
	$(BIN)/optuna-dashboard --host $(HOST) --port 8080 sqlite:///$(CURDIR)/mlruns/optuna.db

tensorboard: $(STAMP) ## TensorBoard on 127.0.0.1:6006 for runs trained with tracking=mlflow_tensorboard
	$(BIN)/tensorboard --logdir $(CURDIR)/tb_logs --host $(HOST) --port 6006

serve: $(STAMP) ## serve a run's logged model on 127.0.0.1:5001 (RUN=<run id>)
	@test -n "$(RUN)" || { echo "usage: make serve RUN=<mlflow run id>" >&2; exit 2; }
	@# PATH: the scoring server is started as `uvicorn`, which lives in the environment;
	@# the run is checked first, so a wrong id is one line instead of MLflow's traceback
	export PATH="$(CURDIR)/$(BIN):$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns/mlflow.db}"; \
	  run=$$($(PY) -m anyq.serving.publish $(RUN)) && \
	  $(BIN)/mlflow models serve -m runs:/$$run/model --env-manager local -h $(HOST) -p 5001

services: $(STAMP) ## PostgreSQL + MLflow server on loopback for shared sweeps (docs/scale-out.md)
	scripts/services.sh start

services-stop: ## stop what `make services` started
	scripts/services.sh stop

clean: ## remove outputs (keeps mlruns/ and the environment)
	rm -rf outputs multirun reports
