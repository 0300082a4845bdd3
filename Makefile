# Foundry developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
# make bench's many-runs benchmark: 0 and 1,000 active runs by default; --runs 10000 for 0/1k/5k/10k.
BENCH_SCALE_ARGS ?=
# Two xdist workers (the default), each test module a group of its own, the real-node and slow
# ones first (tests/support/pytest_groups.py). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
PYTEST_DIST := -p tests.support.pytest_groups -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder

.PHONY: help demo test venv binaries postgres node-runtime bench kind-e2e agent-clis images clean
help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[make] installing Foundry and its test dependencies into $(VENV)"
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create the virtualenv with Foundry installed (editable)

binaries: ## build or reuse kube-apiserver, etcd, kubectl, helm, the node binaries and CoreDNS (cached in ~/.cache/foundry)
	@bash tools/controlplane.sh >/dev/null
	@bash tools/coredns.sh >/dev/null

postgres: ## install PostgreSQL from Debian's packages if it is missing
	@bash tools/ensure-postgres.sh >/dev/null

agent-clis: ## install or reuse the pinned Claude Code, Codex and Aider (cached in ~/.cache/foundry)
	@bash tools/agent-clis.sh >/dev/null

images: venv agent-clis ## build or reuse the Foundry, agent and PostgreSQL images without Docker (needs root; tarballs in ~/.cache/foundry/images)
	@bash tools/images.sh

node-runtime: ## install containerd, runc, CNI plugins and image tools from Debian's packages if missing (real node)
	@bash tools/node-runtime.sh

test: venv binaries postgres node-runtime agent-clis ## run the whole test suite (real kube-apiserver, etcd and PostgreSQL)
	$(PY) -m pytest $(PYTEST_DIST) $(PYTEST_ARGS)

demo: venv binaries agent-clis ## run Foundry locally end to end: a ticket becomes a merged PR
	$(VENV)/bin/foundry dev demo

bench: venv binaries postgres node-runtime agent-clis ## print the benchmark figures (docs/benchmarks.md; the last two need root)
	$(PY) tools/bench_claims.py
	$(PY) tools/bench_kube_create.py
	$(PY) tools/bench_bridge.py
	$(PY) tools/bench_operator.py
	$(PY) tools/bench_scale.py $(BENCH_SCALE_ARGS)
	$(PY) tools/bench_node_dispatch.py
	$(PY) tools/bench_agent_pod.py --plan

kind-e2e: venv ## the chart, RBAC, image and real-node tests in a kind cluster (needs Docker and kind)
	bash tools/kind-e2e.sh

clean: ## remove the virtualenv and caches inside the checkout
	rm -rf $(VENV) .pytest_cache .hypothesis
