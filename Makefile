# lightning-resnet: common commands. `make install train` is the newcomer's first command.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev
ARGS   ?=

.PHONY: install train sweep reproduce test test-fast lint format tensorboard bench gpu-check slurm-up slurm-down clean

install: $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

train:            ## one run on the default config; pass overrides with ARGS="model=resnet50 data=mask"
	$(BIN)/python -m lightning_resnet $(ARGS)

sweep:            ## a multirun; e.g. ARGS="model=resnet18,resnet34 optimizer=adam,sgd"
	$(BIN)/python -m lightning_resnet -m $(ARGS)

STUDY ?=
DATA  ?=
SINGLE_RUN_STUDIES := yoga_finetune
reproduce:        ## a study of docs/studies.md: make reproduce STUDY=flatfoot_depth DATA=/path/to/flatfoot
	@test -n "$(STUDY)" -a -n "$(DATA)" || { echo "usage: make reproduce STUDY=<experiment> DATA=<dataset folder>"; \
	  ls conf/experiment | sed 's/\.yaml$$//; s/^/  /'; exit 2; }
	$(BIN)/python -m lightning_resnet $(if $(filter $(STUDY),$(SINGLE_RUN_STUDIES)),,-m) \
	  experiment=$(STUDY) data.root=$(abspath $(DATA)) $(ARGS)

test:             ## the whole suite, as CI runs it (2 workers, one torch thread each)
	$(BIN)/python -m pytest -q -n 2

test-fast:        ## skip the end-to-end runs
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

lint:
	$(BIN)/ruff check lightning_resnet hydra_plugins tests benchmarks
	$(BIN)/ruff format --check lightning_resnet hydra_plugins tests benchmarks

format:
	$(BIN)/ruff check --fix lightning_resnet hydra_plugins tests benchmarks
	$(BIN)/ruff format lightning_resnet hydra_plugins tests benchmarks

tensorboard:      ## dashboards of every run and sweep
	$(BIN)/tensorboard --logdir . --host 127.0.0.1

bench:            ## speed figures into benchmarks/results/ (see README, Speed); ARGS="--quick" for a smoke run
	$(BIN)/python -m benchmarks $(ARGS)

gpu-check:        ## GPU acceptance checks on a CUDA machine: benchmarks/results/<gpu>-<date>.md and a log
	bash benchmarks/gpu_check.sh

slurm-up:         ## a single-node SLURM cluster on this machine (state in .slurm-local/); then: eval "$$(scripts/slurm-local.sh env)"
	bash scripts/slurm-local.sh up

slurm-down:       ## stop that cluster's jobs and daemons (only the processes it started, by their pid files)
	bash scripts/slurm-local.sh down

clean:
	rm -rf outputs lightning_logs .pytest_cache .ruff_cache
	find multirun -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	find . -name __pycache__ -prune -exec rm -rf {} +
