# emqx-exhook: `make start` serves the example provider on :9000, `make test` runs everything CI runs.
SHELL := /bin/bash
PORT ?= 9000
HOST ?= 0.0.0.0
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: install generate lint-proto drift breaking build start test typecheck bench soak clean

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

# Fails when gen/ is not what `buf generate` makes from proto/ (run in `make test`, so in CI).
drift: generate
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
	  echo "gen/ drifted from proto/: run 'make generate' and commit gen/"; git status --short -- gen; git --no-pager diff --stat -- gen; exit 1; \
	else echo "gen/ matches proto/"; fi

# For users changing the protos: wire-breaking changes against the main branch.
breaking: install
	buf breaking --against '.git#branch=main'

build: install
	tsc -p tsconfig.build.json

# Serves the bundled example provider (PORT/HOST env or `make start PORT=9100`).
start: build
	node dist/src/cli.js serve dist/examples/demo-provider.js --port $(PORT) --host $(HOST)

typecheck: install
	npm run typecheck

test: install lint-proto drift
	npm test

clean:
	rm -rf dist
