# NeuralLog Tenant Operator. Everything builds on Linux from the Rust and Go toolchains and a C
# compiler (for ring) alone; the pinned upstream components (tools/) and cargo's target directory
# are cached outside the clone, keyed by version, so a fresh clone reuses them.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CACHE ?= $(HOME)/.cache/neurallog-tenant-operator
export CARGO_TARGET_DIR ?= $(CACHE)/target
# The shared target directory serves every clone: incremental state, keyed by each clone's path,
# would only pile up there (about 10 GB a run), so it is off unless the caller turns it on.
export CARGO_INCREMENTAL ?= 0
export NEURALLOG_TOOLS_CACHE ?= $(CACHE)/tools

# The version being built (from Cargo.toml: x.y.z-dev between releases) and the operator image the
# CSV and config/manager name.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMG ?= neurallog/tenant-operator:$(VERSION)

.PHONY: help tools build generate run run-once run-node-once test test-build test-clusters test-node e2e bench chaos lint fmt bundle catalog release check-packaging images node-packages coverage operatorhub

help: ## List the targets.
	@awk -F':.*## ' '/^[a-z0-9-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

tools: ## Build the pinned etcd, Kubernetes (kubelet and kube-proxy too), Jaeger, opm, operator-sdk, kube-router, versitygw, Prometheus (with promtool) and Prometheus Operator (with its CRDs) binaries once (cached).
	@tools/build.sh etcd >/dev/null
	@tools/build.sh kubernetes >/dev/null
	@tools/build.sh jaeger >/dev/null
	@tools/build.sh opm >/dev/null
	@tools/build.sh operator-sdk >/dev/null
	@tools/build.sh kube-router >/dev/null
	@tools/build.sh versitygw >/dev/null
	@tools/build.sh prometheus >/dev/null
	@tools/build.sh prometheus-operator >/dev/null

build: ## Build the operator and the local control plane launcher.
	cargo build --workspace --locked

generate: ## Regenerate the committed CRDs from the Rust types, docs/configuration.md from the command line, docs/api-reference.md from the CRDs and the operator's Event and condition reasons, and the alerting rules and dashboard (config/monitoring/).
	cargo run --locked --quiet --bin tenant-operator -- crd > config/crd/bases/neurallog.io_tenants.yaml
	cargo run --locked --quiet --bin tenant-operator -- crd tenantbackups > config/crd/bases/neurallog.io_tenantbackups.yaml
	cargo run --locked --quiet --bin configuration-reference > docs/configuration.md
	cargo run --locked --quiet --bin api-reference > docs/api-reference.md
	cargo run --locked --quiet --bin tenant-operator -- monitoring rules > config/monitoring/rules.yaml
	cargo run --locked --quiet --bin tenant-operator -- monitoring dashboard > config/monitoring/dashboard.json

# `make run OLM=1`: install through OLM from the catalog instead; `FROM=0.1.0` installs that release
# first and leaves the upgrade to this checkout's bundle for you to approve.
# `make run NODE=1`: on a real node instead (root; containerd, kubelet; the images of `make images`),
# the operator from its image and the sample tenant's pods really running.
OLM ?=
FROM ?=
NODE ?=

run: tools build $(if $(filter 1,$(NODE)),images node-packages) ## Start a simulated (KWOK) cluster, the operator and the sample tenant, Running (Ctrl-C stops all). OLM=1 [FROM=0.1.0]: through OLM. NODE=1: on a real node.
ifeq ($(NODE),1)
	TESTENV_ETCD_BIN="$$(tools/build.sh etcd)" TESTENV_KUBERNETES_BIN="$$(tools/build.sh kubernetes)" \
		TESTENV_JAEGER_BIN="$$(tools/build.sh jaeger)" TESTENV_IMAGES="$(IMAGES_RECORD)" \
		"$(CARGO_TARGET_DIR)/debug/testenv" run-node --dir .local/run-node $(if $(RUN_ONCE),--once)
else ifeq ($(OLM),1)
	@tools/build.sh kwok >/dev/null
	@tools/build.sh olm >/dev/null
	@$(if $(FROM),tools/released-operator.sh $(FROM) >/dev/null)
	TESTENV_OLM_BIN="$$(tools/build.sh olm)" TESTENV_OPM_BIN="$$(tools/build.sh opm)" \
		"$(CARGO_TARGET_DIR)/debug/testenv" olm --dir .local/run-olm --operator "$(CARGO_TARGET_DIR)/debug/tenant-operator" \
		$(if $(FROM),--from $(FROM)) $(if $(RUN_ONCE),--once)
else
	@tools/build.sh kwok >/dev/null
	tools/run-local.sh
endif

# Where `make images` records what it built; the real node's tests read it.
IMAGES_RECORD ?= $(CURDIR)/.local/images/images.tsv
export IMAGES_RECORD

# What the tests need from the environment: the cached upstream binaries and the images' record.
TEST_ENV = TESTENV_ETCD_BIN="$$(tools/build.sh etcd)" TESTENV_KUBERNETES_BIN="$$(tools/build.sh kubernetes)" \
	TESTENV_JAEGER_BIN="$$(tools/build.sh jaeger)" TESTENV_KWOK_BIN="$$(tools/build.sh kwok)" \
	TESTENV_OLM_BIN="$$(tools/build.sh olm)" TESTENV_OPM_BIN="$$(tools/build.sh opm)" \
	TESTENV_KUBE_ROUTER_BIN="$$(tools/build.sh kube-router)" TESTENV_VERSITYGW_BIN="$$(tools/build.sh versitygw)" \
	TESTENV_PROMETHEUS_BIN="$$(tools/build.sh prometheus)" \
	TESTENV_PROMETHEUS_OPERATOR_BIN="$$(tools/build.sh prometheus-operator)" \
	TESTENV_OPERATOR_SDK_BIN="$$(tools/build.sh operator-sdk)" TESTENV_IMAGES="$(IMAGES_RECORD)"
# One feature set for every test target, so that the library builds once for all of them.
TEST_FEATURES := --features neurallog-tenant-operator/e2e
# The tests that need the machine's one real node live in modules whose names end in `_node`; they
# run one after another in their own lane, beside the lane of the simulated and in-process clusters.
NODE_TESTS := _node::

test: ## Run every test: lint, packaging, unit, generated-file staleness, integration on a real API server, e2e on KWOK and on the real node, make run-once (two jobs at a time, the lanes below side by side).
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-node test-clusters

test-build: tools ## Build every test binary, the tools the tests start and 0.1.0's operator (the lanes then only run).
	@tools/build.sh olm >/dev/null
	@tools/build.sh kwok >/dev/null
	@tools/released-operator.sh 0.1.0 >/dev/null
	cargo test --workspace --locked $(TEST_FEATURES) --no-run
	cargo test --locked $(TEST_FEATURES) --test e2e --no-run
	cargo build --workspace --locked

test-clusters: lint check-packaging test-build ## The lane on in-process and simulated (KWOK) clusters: unit, docs, integration, stand-ins, e2e through OLM on KWOK, make run-once.
	$(TEST_ENV) cargo test --workspace --locked $(TEST_FEATURES) -- --skip $(NODE_TESTS)
	cd tools/standins && go test ./...
	$(TEST_ENV) cargo test --locked $(TEST_FEATURES) --test e2e -- --test-threads=1 --nocapture --skip $(NODE_TESTS)
	@$(MAKE) --no-print-directory run-once

test-node: images node-packages test-build ## The lane on the real node: the node itself, the operator's image and tenants (installed and shown by make run NODE=1's code), OperatorHub's path with isolation enforced.
	$(TEST_ENV) cargo test --workspace --locked $(TEST_FEATURES) --tests -- --test-threads=1 $(NODE_TESTS)
	$(TEST_ENV) cargo test --locked $(TEST_FEATURES) --test e2e -- --test-threads=1 --nocapture $(NODE_TESTS)

run-once: tools build ## `make run` once, non-interactively: the sample tenant Running and registered, then a deletion per policy.
	@tools/build.sh kwok >/dev/null
	@mkdir -p .local
	@RUN_ONCE=1 ADMIN_ADDRESS=127.0.0.1:0 tools/run-local.sh >.local/run-once.log 2>&1 \
		|| { tail -40 .local/run-once.log; echo "make run failed; full output in .local/run-once.log"; exit 1; }
	@echo "make run: sample tenant Running and registered; deletion completed for both policies (output in .local/run-once.log)"

run-node-once: ## `make run NODE=1` once: the sample tenant's pods running on a real node, its logs, an exec into Redis, the operator's traces in Jaeger.
	@mkdir -p .local
	@$(MAKE) --no-print-directory run NODE=1 RUN_ONCE=1 >.local/run-node-once.log 2>&1 \
		|| { tail -40 .local/run-node-once.log; echo "make run NODE=1 failed; full output in .local/run-node-once.log"; exit 1; }
	@echo "make run NODE=1: the sample tenant Running on a real node; logs, exec and traces shown (output in .local/run-node-once.log)"

e2e: tools images node-packages ## Through real OLM on a simulated (KWOK) cluster: install and uninstall, the upgrades from 0.1.0, the refused upgrade; the operator's image, its tenants and OperatorHub's path on a real node.
	@tools/build.sh olm >/dev/null
	@tools/build.sh kwok >/dev/null
	@tools/released-operator.sh 0.1.0 >/dev/null
	$(TEST_ENV) cargo test --locked $(TEST_FEATURES) --test e2e -- --test-threads=1 --nocapture

coverage: tools ## Line coverage of the unit, docs and integration tests (cargo-llvm-cov, installed once into the tools cache): the summary, and HTML in .local/coverage/html.
	@tools/build.sh olm >/dev/null
	@tools/build.sh kwok >/dev/null
	@tools/released-operator.sh 0.1.0 >/dev/null
	$(TEST_ENV) tools/coverage.sh -- --skip $(NODE_TESTS)

bench: tools images ## The fleet (BENCH_FLEET=200,1000), reconciles per second by tracing setup (BENCH_TENANTS=40), conversion latency, storage migration (BENCH_MIGRATION=10000), a NeuralLog rollout on KWOK (BENCH_ROLLOUT_TENANTS=100), backup and restore (BENCH_BACKUP_RECORDS=1000,100000).
	TESTENV_ETCD_BIN="$$(tools/build.sh etcd)" TESTENV_KUBERNETES_BIN="$$(tools/build.sh kubernetes)" \
		TESTENV_JAEGER_BIN="$$(tools/build.sh jaeger)" TESTENV_KWOK_BIN="$$(tools/build.sh kwok)" \
		TESTENV_VERSITYGW_BIN="$$(tools/build.sh versitygw)" TESTENV_IMAGES="$(IMAGES_RECORD)" \
		cargo bench --locked --bench fleet --bench throughput --bench conversion --bench migration --bench rollout --bench backup

chaos: tools ## Faults at full size: SIGKILL the operator 20 times while 100 tenants converge and 20 more while 20 are deleted.
	CHAOS_TENANTS=$${CHAOS_TENANTS:-100} CHAOS_KILLS=$${CHAOS_KILLS:-20} CHAOS_DELETIONS=$${CHAOS_DELETIONS:-20} \
		TESTENV_ETCD_BIN="$$(tools/build.sh etcd)" TESTENV_KUBERNETES_BIN="$$(tools/build.sh kubernetes)" \
		TESTENV_JAEGER_BIN="$$(tools/build.sh jaeger)" cargo test --locked --test integration chaos:: -- --nocapture

bundle: ## Generate bundle/ and bundle.Dockerfile for VERSION and IMG from config/.
	tools/bundle.sh . $(VERSION) $(IMG)

catalog: ## Recompute the catalog's package and channels from catalog/releases.yaml.
	tools/catalog.sh .

images: ## Build the operator, bundle and catalog images (and the test images, CoreDNS's among them) with podman, offline; digests in .local/images/images.tsv.
	@tools/images.sh >/dev/null

node-packages: ## Install the Debian packages the real node needs (containerd, runc, CNI plugins, iptables, registry) when missing.
	@tools/packages.sh node

release: ## Cut a release from a clean tree: make release VERSION=x.y.z (Cargo version, bundle, frozen catalog entry, graph).
	$(if $(filter command line,$(origin VERSION)),,$(error make release needs VERSION=x.y.z on the command line))
	tools/release.sh $(VERSION)

operatorhub: ## Write the OperatorHub.io submission of every release (operators/neurallog-tenant-operator/, ci.yaml) to .local/operatorhub and validate it as OperatorHub.io does.
	tools/operatorhub.sh

check-packaging: ## Validate bundle/ (operator-sdk, OperatorHub suite) and catalog/ (opm), check both fresh and released bundles unchanged.
	tools/check-packaging.sh $(VERSION) $(IMG)

lint: ## cargo fmt --check and clippy with warnings as errors; gofmt and go vet of the stand-ins.
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked $(TEST_FEATURES) -- -D warnings
	cargo clippy --locked $(TEST_FEATURES) --test e2e -- -D warnings
	@test -z "$$(gofmt -l tools/standins)" || { gofmt -l tools/standins; echo "gofmt: the files above need formatting"; exit 1; }
	cd tools/standins && go vet ./...

fmt: ## Format the code.
	cargo fmt --all
