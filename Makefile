# Thin wrappers of the CLI and pytest (the recovery plan's make targets).
EPOCHS ?= 3
BATCH_SIZE ?=
LR ?=
START ?= 2020-01-01
END ?= 2025-01-01
PRICES ?= data/prices.parquet
OUT ?= output/ml_dataset_latest_full.parquet
ATFT ?= atft

_opt = $(if $(BATCH_SIZE),--batch-size $(BATCH_SIZE)) $(if $(LR),--lr $(LR))

.PHONY: train-quick train-safe dataset-rebuild smoke slow cuda test

train-quick:
	$(ATFT) train --config configs/quick.yaml --max-epochs $(EPOCHS) $(_opt)

train-safe:
	FORCE_SINGLE_PROCESS=1 $(ATFT) train --config configs/safe.yaml --max-epochs $(EPOCHS) $(_opt)

dataset-rebuild:
	$(ATFT) build-dataset --prices $(PRICES) --out $(OUT) --start $(START) --end $(END)

smoke:
	pytest -m smoke health_tests

slow:
	pytest -m slow health_tests

cuda:
	pytest -m cuda --require-cuda health_tests

test:
	pytest -n 2
