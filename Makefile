# Thin wrappers of the CLI and pytest (the recovery plan's make targets).
EPOCHS ?= 3
BATCH_SIZE ?=
LR ?=
START ?= 2020-01-01
END ?= 2025-01-01
PRICES ?= data/prices.parquet
OUT ?= output/ml_dataset_latest_full.parquet
# the project's venv when it exists (README command 1 creates .venv), else what is on PATH
VENV ?= .venv
ATFT ?= $(if $(wildcard $(VENV)/bin/atft),$(VENV)/bin/atft,atft)
PYTEST ?= $(if $(wildcard $(VENV)/bin/pytest),$(VENV)/bin/pytest,pytest)
NEED = @command -v $(firstword $(1)) >/dev/null 2>&1 || { echo "make: '$(firstword $(1))' not found. Fix: create the venv first: python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e '.[dev]'"; exit 2; }

_opt = $(if $(BATCH_SIZE),--batch-size $(BATCH_SIZE)) $(if $(LR),--lr $(LR))

.PHONY: train-quick train-safe dataset-rebuild smoke slow cuda test

train-quick:
	$(call NEED,$(ATFT))
	$(ATFT) train --config configs/quick.yaml --max-epochs $(EPOCHS) $(_opt)

train-safe:
	$(call NEED,$(ATFT))
	FORCE_SINGLE_PROCESS=1 $(ATFT) train --config configs/safe.yaml --max-epochs $(EPOCHS) $(_opt)

dataset-rebuild:
	$(call NEED,$(ATFT))
	$(ATFT) build-dataset --prices $(PRICES) --out $(OUT) --start $(START) --end $(END)

smoke:
	$(call NEED,$(ATFT))
	$(ATFT) health smoke

slow:
	$(call NEED,$(ATFT))
	$(ATFT) health slow

cuda:
	$(call NEED,$(ATFT))
	$(ATFT) health cuda --require-cuda

test:
	$(call NEED,$(PYTEST))
	$(PYTEST) -n 2
