# sessiongate — see README.md. `make test` and `make demo` work on a fresh
# Debian machine with Go: they install the Debian packages they need.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build test vet cross fmt-check fuzz-quick fuzz demo bench bench-queue deps clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sessiongate ./cmd/sessiongate

deps:
	scripts/deps.sh test

vet:
	$(GO) vet ./...

# sessiongate builds on systems without internal/sockio's raw system
# calls (Linux only) too; the test helpers and the bench are Unix/Linux-only.
cross:
	GOOS=windows $(GO) build ./...
	GOOS=darwin $(GO) build ./...
	GOOS=windows $(GO) vet ./proxy/... ./config/...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The fuzz targets' seed corpora run as part of `go test`; fuzz-quick also
# explores the config loader, the upstream client's reuse decision (against
# net/http's Transport) and the PHP session decoder briefly. New inputs are
# not minimised: by default each gets up to 60 s of it, which took most of
# the time. The budgets are counts of inputs (5-10 s each on 2 cores), not
# durations: Go 1.26's fuzzing coordinator can fail a run with "context
# deadline exceeded" and no failing input as a -fuzztime duration ends
# (go.dev/issue/75804, fixed in Go 1.27; seen in a fresh-clone make test).
fuzz-quick:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 100000x -fuzzminimizetime 1x ./config
	$(GO) test -run '^$$' -fuzz '^FuzzReuse$$' -fuzztime 5000x -fuzzminimizetime 1x ./proxy/upstream
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 150000x -fuzzminimizetime 1x ./sessionstore/phpsession

test: deps vet cross fmt-check
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(GO) test -race -count=1 -timeout 20m ./...
	@# The race build swaps internal/sockio's raw system calls for the
	@# annotated ones, so the proxy's and sockio's tests run once more without it.
	$(GO) test -count=1 -timeout 5m ./proxy/... ./internal/...
	$(MAKE) --no-print-directory fuzz-quick

# Every fuzz target for a minute each.
fuzz:
	@set -eo pipefail; \
	targets=$$($(GO) test -list '^Fuzz' ./... | awk '/^Fuzz/{f=f" "$$1} /^(ok|FAIL)/{if($$1=="ok")for(i=split(f,a," ");i>0;i--) print $$2":"a[i]; f=""}'); \
	for t in $$targets; do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$fn ($$pkg)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime 60s $$pkg; \
	done

demo: build
	scripts/deps.sh demo
	SESSIONGATE=$(CURDIR)/bin/sessiongate deploy/demo/run.sh

# Every contender on every workload, under 10 minutes; writes bench/results.md.
# BENCH_FLAGS: e.g. -workloads tls,h2 -wduration 5s, -quick,
# -profile DIR (see bench/main.go).
bench: build
	scripts/deps.sh bench
	$(GO) run ./bench $(BENCH_FLAGS)

# Issue 16: the session queue on and off in front of real PHP with 4 workers,
# both session handlers; writes bench/queue-results.md.
bench-queue:
	scripts/deps.sh test
	QUEUEBENCH_OUT=$(CURDIR)/bench/queue-results.md $(GO) test -tags queuebench -run '^TestQueueBench$$' -count=1 -timeout 20m -v ./cmd/sessiongate

clean:
	rm -rf bin
