# emqx-exhook: `make start` serves the example provider on :9000, `make test` runs everything CI runs.
SHELL := /bin/bash
PORT ?= 9000
HOST ?= 0.0.0.0
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: install generate lint-proto lint format drift breaking build start test typecheck bench bench-bridge bench-workers soak clean docker-check test-postgres

# Installs exactly what package-lock.json pins, once (re-run when the lock file changes).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

install: node_modules/.installed

# Regenerates gen/ from proto/ (buf + local protoc-gen-es, offline).
generate: install
	buf generate

lint-proto: install
	buf lint

# Biome (biome.json): lint rules (unused variables/imports/parameters are errors) and the formatter's
# check; gen/, dist/ and node_modules are left alone. `make format` rewrites the tree.
lint: install
	biome ci .

format: install
	biome format --write .

# Fails when gen/ is not what `buf generate` makes from proto/ (run in `make test`, so in CI).
drift: generate
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
	  echo "gen/ drifted from proto/: run 'make generate' and commit gen/"; git status --short -- gen; git --no-pager diff --stat -- gen; exit 1; \
	else echo "gen/ matches proto/"; fi

# For users changing the protos: wire-breaking changes against the main branch.
breaking: install
	buf breaking --against '.git#branch=main'

# CommonJS (dist/src, dist/gen) and ESM (dist/esm) builds with types (scripts/build.mjs; npm pack runs it too).
build: install
	node scripts/build.mjs

# Serves the use-case stack (examples/stack-provider.ts: auth, ACL, persistence, presence) with
# its SQLite store in ./data (PORT/HOST env or `make start PORT=9100`). Two ports: the ExHook port
# PORT on HOST, and the operations port (metrics, probes, read API) on 127.0.0.1:PORT+10.
start: build
	EXHOOK_DATA_DIR=$${EXHOOK_DATA_DIR:-./data} node dist/src/cli.js serve dist/examples/stack-provider.js --port $(PORT) --host $(HOST)

# The whole test suite with a throwaway PostgreSQL (scripts/with-postgres.sh), so the use-case
# storage tests also run against PostgreSQL.
test-postgres: install
	scripts/with-postgres.sh npm test

typecheck: install
	npm run typecheck

# Everything CI runs: proto lint, gen/ drift, Biome, then type check + jest (including the package
# test: npm pack, installed into consumer projects), with a throwaway PostgreSQL (installed from
# Debian's postgresql package when missing) so the storage tests run on both backends, and
# NATS/RabbitMQ/Redis for the bridge tests (scripts/with-brokers.sh: the running ones, else throwaway).
test: install lint-proto drift lint
	scripts/with-postgres.sh scripts/with-brokers.sh npm test

# Replays the Dockerfile without a Docker engine (npm ci, build, prune in a temp copy) and starts
# the image's CMD: it must answer OnProviderLoaded, /healthz, /metrics and drain on SIGTERM.
docker-check:
	scripts/check-docker.sh

# Benchmark (bench/README.md): every server pinned to CPU 0, load from CPU 1; prints the table and
# writes bench/results/latest.json, then the bridging rows (bench/results/bridge-latest.json;
# BENCH_BRIDGE=0 skips them). Parameters: BENCH_* env vars (see bench/run.ts, bench/bridge.ts).
bench: install
	tsc -p bench/tsconfig.json
	node dist/bench-build/bench/run.js
	@if [ "$${BENCH_BRIDGE:-1}" != 0 ]; then node dist/bench-build/bench/bridge.js; fi

# The bridging rows alone (bench/README.md, "Bridging"): forwarding per sink and store, publish hook p99 with bridging off/on.
bench-bridge: install
	tsc -p bench/tsconfig.json
	node dist/bench-build/bench/bridge.js

# --workers scaling on this machine (1 vs 2 workers, nothing pinned): bench/results/workers-latest.json.
bench-workers: install
	tsc -p bench/tsconfig.json
	node dist/bench-build/bench/workers.js

# Memory soak: fixed rate for SOAK_SECONDS (default 600), RSS sampled every 10 s, must stay within ±10%.
soak: install
	tsc -p bench/tsconfig.json
	node dist/bench-build/bench/soak.js

clean:
	rm -rf dist
