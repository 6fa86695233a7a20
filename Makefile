# Millrace: the single entry point for building, testing and running locally.
# Build caches and the local environment live outside the checkout, under MILLRACE_HOME.

SHELL := /bin/bash
MILLRACE_HOME ?= $(HOME)/.cache/millrace
export MILLRACE_HOME
export CARGO_TARGET_DIR ?= $(MILLRACE_HOME)/target
export KUBECONFIG_LOCAL := $(MILLRACE_HOME)/env/kubeconfig
CARGO ?= cargo

.PHONY: help build lint fmt crds crds-check test test-unit test-integration env-up env-down env-status env-kubeconfig bench bench-cli demo demo-down

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## Build every crate (debug)
	$(CARGO) build --workspace --all-targets

lint: ## rustfmt check, then clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate the checked-in CRD YAML (crds/yaml and the chart)
	hack/gen-crds.sh

test: env-up ## Bring the local environment up, then run every test
	$(CARGO) build -p millrace-operator -p millrace-worker -p millrace-simulator -p millrace-cli
	$(CARGO) test --workspace --no-fail-fast

test-unit: ## Unit tests only (no services needed)
	$(CARGO) test --workspace --lib --bins

env-up: ## Build (once) and start the local control plane and RabbitMQ
	@hack/env-up.sh

env-down: ## Stop what env-up started; keep the caches
	@hack/env-down.sh

env-status: ## Show what runs, its versions and its endpoints
	@hack/env-status.sh

env-kubeconfig: ## Print the path of the local kubeconfig
	@echo $(KUBECONFIG_LOCAL)

bench: env-up ## Benchmarks: worker pipeline vs a bare lapin loop, side by side, then the CLI (see docs/benchmarks.md)
	@hack/bench.sh
	@hack/bench-cli.sh

bench-cli: ## Benchmark: millrace validate and render of 1,000 generated flows (no services needed)
	@hack/bench-cli.sh

demo: ## Build, start the local environment, run the manufacturing scenario and account for every event
	@hack/demo.sh

demo-down: ## Stop the demo's processes and delete its namespace (the environment stays up)
	@hack/demo-down.sh
