# Entry points named in the README. Every target installs first (idempotent, fast when done).
VENV ?= .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-all lint

install:
	./scripts/install.sh

# The main job on embedded defaults: encode the shipped example prime with the shipped
# codec and decode every level (top = coarse ... bottom = fine) to out/.
demo: install
	$(BIN)/tokgen encode tokgen/assets/examples/prime.flac out/prime.npz
	$(BIN)/tokgen decode out/prime.npz out/prime_level0_top.wav --level 0
	$(BIN)/tokgen decode out/prime.npz out/prime_level1_middle.wav --level 1
	$(BIN)/tokgen decode out/prime.npz out/prime_level2_bottom.wav --level 2
	@echo "demo: wrote out/prime.npz and out/prime_level*.wav"

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ''

lint: install
	$(BIN)/ruff check tokgen tests
	$(BIN)/ruff format --check tokgen tests
	$(BIN)/mypy tokgen
