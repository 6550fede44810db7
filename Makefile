# Tasklane developer commands. `make help` lists them.
GO ?= go
PKGS := ./...
# Scenarios that restart a broker other tests use: they run last, alone.
RESTART_TESTS := ^TestIntegration(RabbitMQ|Redis)Restart$$
# Modules of their own (not in ./...): deploy/k8s checks the Kubernetes
# manifests against k8s.io/api and KEDA's types, kept out of the main module.
SUBMODULES := deploy/k8s
# golangci-lint, pinned; `go run` builds it once into the Go build cache.
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT ?= $(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: help test test/short test/k8s test/unit test/rabbitcluster vet build dev fuzz bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z0-9/_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

test: vet ## Every test, unit and integration (needs RabbitMQ on :5672 and Redis on :6379), with -race; then the latency measurements without it, then the broker restarts alone, then deploy/k8s (its own module)
	$(GO) test -race -count=1 -tags integration -timeout 30m -skip '$(RESTART_TESTS)' $(PKGS)
	$(GO) test -count=1 -tags integration -timeout 10m -run 'NoisyNeighbour' ./integration/
	$(GO) test -race -count=1 -tags integration -timeout 10m -run '$(RESTART_TESTS)' ./integration/
	for m in $(SUBMODULES); do (cd $$m && $(GO) test -count=1 -timeout 20m ./...) || exit 1; done

# test/short is the quick check: without -race by default (RACE=-race adds
# it; make test always has it). Linking some forty test binaries is most of
# its CPU, and many tests wait on timers and sockets: it runs twice as many
# packages at once as there are CPUs (SHORT_P), so that links go on while
# tests wait.
RACE ?=
SHORT_P ?= $(shell echo $$(( $$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2) * 2 )))
test/short: ## Unit tests of the main module without services (-short), under a minute on 2 cores: Redis is embedded (miniredis), tests needing RabbitMQ or the real Redis skip; not deploy/k8s (make test/k8s). RACE=-race adds the race detector
	$(GO) test $(RACE) -short -count=1 -timeout 5m -p $(SHORT_P) $(PKGS)

# deploy/k8s builds k8s.io/api, client-go and KEDA: minutes of CPU from a
# cold cache, more than the main module's tests, so test/short leaves it out.
test/k8s: ## The Kubernetes manifests' tests (deploy/k8s, its own module; make test runs them too)
	for m in $(SUBMODULES); do (cd $$m && $(GO) test -count=1 -timeout 20m ./...) || exit 1; done

test/rabbitcluster: ## RabbitMQ cluster drill: starts 3 RabbitMQ nodes of its own (ports 5681-5683, 25681-25683), kills one under load (not in `make test`)
	$(GO) test -count=1 -tags 'integration rabbitcluster' -timeout 15m -run '^TestRabbitMQClusterDrill$$' -v ./integration/

test/unit: test/short ## Same as test/short (the old name)

vet: ## gofmt, go vet (with and without the integration tag), golangci-lint (.golangci.yml: the layers' import rules)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)
	$(GO) vet -tags integration $(PKGS)
	for m in $(SUBMODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done
	$(GOLANGCI_LINT) run --allow-parallel-runners $(PKGS)

build: ## Build bin/tasklane
	$(GO) build -o bin/tasklane ./cmd/tasklane

dev: ## Run every role in one process, no services needed
	$(GO) run ./cmd/tasklane dev

fuzz: ## Run each fuzz target for 30s
	$(GO) test -run=^$$ -fuzz=FuzzParse -fuzztime=30s ./pkg/config/
	$(GO) test -run=^$$ -fuzz=FuzzParseEvents -fuzztime=30s ./services/gateway/

BENCH ?= .
BENCHTIME ?= 1s
BENCHCOUNT ?= 1
bench: ## Go benchmarks of the hot paths (the ledger's need Redis on :6379); BENCH=regexp BENCHTIME=2s BENCHCOUNT=6
	$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -benchtime=$(BENCHTIME) -count=$(BENCHCOUNT) $(PKGS)

clean: ## Remove build output
	rm -rf bin
