# Entry points named in the README. Every target installs first (idempotent, fast when done).
VENV ?= .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-all lint

install:
	./scripts/install.sh

# The main job on embedded defaults: continue the shipped example prime by 10 s with the
# shipped codec and priors (all levels, through the default engine), no network.
demo: install
	$(BIN)/tokgen generate --prime tokgen/assets/examples/prime.flac --seconds 10 \
		--out out/continuation.wav --save-codes out/continuation.npz --seed 0
	@echo "demo: wrote out/continuation.wav (10 s after the prime) and out/continuation.npz (codes)"

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ''

lint: install
	./scripts/proto.sh check
	$(BIN)/ruff check tokgen tests loadtests scripts
	$(BIN)/ruff format --check tokgen tests loadtests scripts
	$(BIN)/mypy tokgen loadtests
