# NeuralLog Tenant Operator. Everything builds from the Rust and Go toolchains alone; the pinned
# upstream components (tools/) and cargo's target directory are cached outside the clone, keyed by
# version, so a fresh clone reuses them.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CACHE ?= $(HOME)/.cache/neurallog-tenant-operator
export CARGO_TARGET_DIR ?= $(CACHE)/target
export NEURALLOG_TOOLS_CACHE ?= $(CACHE)/tools

.PHONY: help tools build generate run test bench lint fmt

help: ## List the targets.
	@awk -F':.*## ' '/^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

tools: ## Build the pinned etcd, Kubernetes and Jaeger binaries once (cached).
	@tools/build.sh etcd >/dev/null
	@tools/build.sh kubernetes >/dev/null
	@tools/build.sh jaeger >/dev/null

build: ## Build the operator and the local control plane launcher.
	cargo build --workspace --locked

generate: ## Regenerate the committed CRD from the Rust types.
	cargo run --locked --quiet --bin tenant-operator -- crd > config/crd/bases/neurallog.io_tenants.yaml

run: tools build ## Start a local control plane, the operator and the sample tenant (Ctrl-C stops all).
	tools/run-local.sh

test: tools lint ## Run every test: lint, unit, generated-file staleness, integration on a real API server.
	TESTENV_ETCD_BIN="$$(tools/build.sh etcd)" TESTENV_KUBERNETES_BIN="$$(tools/build.sh kubernetes)" \
		TESTENV_JAEGER_BIN="$$(tools/build.sh jaeger)" cargo test --workspace --locked

bench: tools ## Reconciles per second: tracing off, to an unreachable endpoint, to Jaeger (BENCH_TENANTS=40).
	TESTENV_ETCD_BIN="$$(tools/build.sh etcd)" TESTENV_KUBERNETES_BIN="$$(tools/build.sh kubernetes)" \
		TESTENV_JAEGER_BIN="$$(tools/build.sh jaeger)" cargo bench --locked --bench throughput

lint: ## cargo fmt --check and clippy with warnings as errors.
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code.
	cargo fmt --all
