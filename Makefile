# ftwin-migrate — see README.md.
#   make demo    the main job: a digital twin live-migrated cloud→fog→cloud under load, verified
#   make test    everything, real containerd + CRIU + Kafka (installs what it needs first)
#   make unit    the fast tests: no root, no daemons
SHELL := /bin/bash
GO ?= go
BIN := bin
export GOFLAGS ?= -mod=mod

.PHONY: all install build demo test unit vet bench bench-short clean lab-down

all: build

install:
	bash hack/install.sh

build:
	$(GO) build -o $(BIN)/ftwin-migrate ./cmd/ftwin-migrate
	CGO_ENABLED=0 $(GO) build -o $(BIN)/counter ./test/workloads/counter
	CGO_ENABLED=0 $(GO) build -o $(BIN)/twin ./test/workloads/twin

demo: install build
	$(BIN)/ftwin-migrate demo

vet:
	$(GO) vet ./...

unit:
	$(GO) test -short -count=1 ./...

# Packages run one at a time (-p 1): the integration tests bring up labs and daemons, and the
# machine has 2 cores.
test: install build vet
	$(GO) test -p 1 -count=1 -timeout 40m ./...

# The downtime benchmark: all methods side by side, 16/128/512 MiB, unthrottled and 100 Mbit/s.
bench: install build
	$(BIN)/ftwin-migrate bench --out results $(BENCH_FLAGS)

# The short version CI runs on every run: 16 MiB, both links; prints the table.
bench-short: install build
	$(BIN)/ftwin-migrate bench --short --out results-short $(BENCH_FLAGS)

lab-down:
	$(BIN)/ftwin-migrate lab down

clean:
	rm -rf $(BIN)
