# ftwin-migrate — see README.md.
#   make demo    the main job: a digital twin live-migrated cloud→fog→cloud under load, verified
#   make test    everything, real containerd + CRIU + Kafka (installs what it needs first)
#   make unit    the fast tests: no root, no daemons
#   make check   gofmt, go vet and staticcheck; fails on any finding
SHELL := /bin/bash
GO ?= go
BIN := bin
export GOFLAGS ?= -mod=mod

.PHONY: all install build java demo test unit vet check fuzz soak bench bench-short bench-streams clean lab-down protos

all: build

install:
	bash hack/install.sh

build: java
	$(GO) build -o $(BIN)/ftwin-migrate ./cmd/ftwin-migrate
	CGO_ENABLED=0 $(GO) build -o $(BIN)/counter ./test/workloads/counter
	CGO_ENABLED=0 $(GO) build -o $(BIN)/twin ./test/workloads/twin

# The Kafka Streams twin and the Java hook library (twins/streams): Maven, from Maven Central
# (hack/install.sh fetches what it needs once), with their unit tests (Surefire). The app lands
# in twins/streams/twin/target/app (its jar and lib/), which the streams image is made of.
# MAVEN_REPO=DIR uses DIR as Maven's local repository (CI caches it); MVN_FLAGS=-o builds offline.
# It runs again only when a source, pom or resource changed since the last good build.
MVN ?= mvn
MVN_ARGS := -B -q -f twins/streams/pom.xml $(if $(MAVEN_REPO),-Dmaven.repo.local=$(MAVEN_REPO)) $(MVN_FLAGS)
# (the stamp is written only after the tests passed; install.sh's pre-fetch leaves none).
STREAMS_STAMP := twins/streams/target/.built-and-tested
STREAMS_SRC := $(shell find twins/streams -path '*/target' -prune -o -type f -print 2>/dev/null)
java: $(STREAMS_STAMP)

$(STREAMS_STAMP): $(STREAMS_SRC)
	$(MVN) $(MVN_ARGS) clean install
	mkdir -p $(@D) && touch $@

demo: install build
	$(BIN)/ftwin-migrate demo

vet:
	$(GO) vet ./...

# staticcheck, pinned, built from its module into bin/tools (not committed) on first use.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BIN)/tools/staticcheck-$(STATICCHECK_VERSION)/staticcheck

$(STATICCHECK):
	GOBIN=$(abspath $(dir $@)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

check: vet $(STATICCHECK)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt: run gofmt -w on:"; echo "$$unformatted"; exit 1; fi
	$(STATICCHECK) ./...

# The gRPC API (api/services/migrate/v1): the generated Go code is checked in; `make protos`
# regenerates it with pinned generators built from their modules into bin/tools (not
# committed): buf compiles the .proto files itself (no protoc to install, the same compiler on
# every machine), protoc-gen-go and protoc-gen-go-grpc write the Go code.
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
BUF := $(BIN)/tools/buf-$(BUF_VERSION)/buf
PROTOC_GEN_GO := $(BIN)/tools/protoc-gen-go-$(PROTOC_GEN_GO_VERSION)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(BIN)/tools/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION)/protoc-gen-go-grpc

$(BUF):
	GOBIN=$(abspath $(dir $@)) GOFLAGS= $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(PROTOC_GEN_GO):
	GOBIN=$(abspath $(dir $@)) GOFLAGS= $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(PROTOC_GEN_GO_GRPC):
	GOBIN=$(abspath $(dir $@)) GOFLAGS= $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

protos: $(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC)
	$(BUF) generate api --template '{"version":"v2","plugins":[{"local":"$(abspath $(PROTOC_GEN_GO))","out":"api","opt":"paths=source_relative"},{"local":"$(abspath $(PROTOC_GEN_GO_GRPC))","out":"api","opt":"paths=source_relative"}]}'

unit:
	$(GO) test -short -count=1 ./...

# The fuzzers (peer input: the CRIU image tar reader, the agent's session requests, the hook
# server and client), FUZZTIME each; their seed corpora also run in every `go test`.
FUZZTIME ?= 10s
FUZZERS := transfer:FuzzReadFlatTar agent:FuzzSessionRequest kafkahooks:FuzzServer kafkahooks:FuzzClient
fuzz:
	@set -eo pipefail; for f in $(FUZZERS); do \
	  echo "fuzz ./$${f%%:*} $${f##*:} for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$${f##*:}$$" -fuzztime $(FUZZTIME) ./$${f%%:*} | grep -v '^fuzz: elapsed'; \
	done

# The soak: 100 back-to-back migrations of the twin under load on Apache Kafka; nothing lost or
# duplicated, no growth of what the migrator and the agents hold (make test runs it 6 times).
soak: install build
	FTWIN_SOAK=100 $(GO) test -count=1 -timeout 60m -run '^TestSoak$$' -v ./test/e2e

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

# The Kafka Streams twin: ftwin-migrate beside a restart from the changelog and a standby
# replica, on Apache Kafka, unthrottled and 100 Mbit/s, five repeats (about 12 minutes).
bench-streams: install build
	$(BIN)/ftwin-migrate bench --streams --link-mbit 0,100 --repeats 5 --out results-streams $(BENCH_FLAGS)

lab-down:
	$(BIN)/ftwin-migrate lab down

clean:
	rm -rf $(BIN)
