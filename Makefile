# Callplane — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
TOOLS := $(GO) tool -modfile=tools/go.mod
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: help build run test unit e2e faults demo bench abuse generate verify lint clean

help: ## Show the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

build: ## Build callmanager and nodeagent into bin/
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/callmanager ./cmd/nodeagent

run: build ## Run a call manager on https://127.0.0.1:8443 (local Postgres under .data/ unless DATABASE_URL is set)
	./$(BIN)/callmanager serve

test: ## Everything a contributor keeps green: unit, integration and browser tests (starts its own Postgres)
	$(GO) test -count=1 -timeout 20m ./...

unit: ## Only the package tests (no browser suite)
	$(GO) test -count=1 -timeout 15m $$($(GO) list ./... | grep -v /e2e)

e2e: ## The browser and multi-process tests (real binaries, Chromium, SMTP sink)
	$(GO) test -count=1 -timeout 15m -v ./e2e/

faults: ## The fault suite: real processes, faults by a TCP fault proxy and signals; prints a table (FAULTS_LONG=1: every scenario)
	$(GO) test -count=1 -timeout 30m -v -run TestFaults ./e2e/faults/

demo: build $(BIN)/mailpit ## make run + one agent of each kind, sample work and a mail sink (mailpit)
	$(GO) run ./e2e/demo -version $(VERSION)

MAILPIT_VERSION := v1.33.1
$(BIN)/mailpit: # the demo's mail sink with a web inbox, built from source once
	GOBIN=$(CURDIR)/$(BIN) GOTOOLCHAIN=local $(GO) install github.com/axllent/mailpit@$(MAILPIT_VERSION)

bench: ## Load driver against a real call manager and Postgres, then the SIP scene (sipp, Kamailio); prints the figures
	$(GO) run ./e2e/bench
	$(GO) run ./e2e/sipbench

abuse: ## Hostile clients against a real call manager, follower and agents on loopback; prints a table
	$(GO) run ./e2e/abuse

generate: ## Regenerate sqlc and templ output
	$(TOOLS) sqlc generate
	$(TOOLS) templ generate -path web

verify: ## Fail on unformatted code, vet findings or stale generated code
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(TOOLS) sqlc vet
	$(TOOLS) sqlc diff
	$(TOOLS) templ fmt -fail web
	$(MAKE) generate
	git diff --exit-code -- db/dbsqlc web

lint: ## staticcheck (pinned in tools/go.mod) over every package
	$(TOOLS) staticcheck ./...

clean: ## Remove build output (keeps .data/)
	rm -rf $(BIN)
