# Postern: the two commands that matter are `make run` and `make check`.
# Both install what is missing from Debian's archive first (scripts/deps.sh).

BUILD       ?= build
CHECK_BUILD ?= build-check
FUZZ_BUILD  ?= build-fuzz
PYTHON      ?= /usr/bin/python3
JOBS        ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 10
POSTERN      = $(BUILD)/postern

.PHONY: all build run check unit fuzz-check integration fuzz bench soak clean deps

all: build

deps:
	@scripts/deps.sh run

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSTERN_TESTS=OFF >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target postern

# Build, create ./postern-data (or the configured data_dir) if needed, start in the foreground.
run: build
	@$(POSTERN) init
	@exec $(POSTERN) serve

# Everything CI runs: sanitizer build with -Werror, unit tests, fuzz targets
# (briefly, with libFuzzer), integration tests against the real binary.
check:
	@scripts/deps.sh check
	cmake -S . -B $(CHECK_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPOSTERN_SANITIZE=ON -DPOSTERN_WERROR=ON >/dev/null
	cmake --build $(CHECK_BUILD) -j $(JOBS)
	cd $(CHECK_BUILD) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) --no-print-directory fuzz-check
	POSTERN_BIN=$(CURDIR)/$(CHECK_BUILD)/postern $(PYTHON) -m pytest -q -p no:cacheprovider tests

unit:
	cmake -S . -B $(CHECK_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPOSTERN_SANITIZE=ON -DPOSTERN_WERROR=ON >/dev/null
	cmake --build $(CHECK_BUILD) -j $(JOBS)
	cd $(CHECK_BUILD) && ctest --output-on-failure -j $(JOBS)

integration:
	cmake -S . -B $(CHECK_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPOSTERN_SANITIZE=ON -DPOSTERN_WERROR=ON >/dev/null
	cmake --build $(CHECK_BUILD) -j $(JOBS) --target postern
	POSTERN_BIN=$(CURDIR)/$(CHECK_BUILD)/postern $(PYTHON) -m pytest -q -p no:cacheprovider tests

# libFuzzer targets, each for FUZZ_SECONDS on its seed corpus.
fuzz-check:
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPOSTERN_FUZZ=ON -DPOSTERN_TESTS=OFF >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@scripts/run-fuzzers.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz:
	$(MAKE) --no-print-directory fuzz-check FUZZ_SECONDS=300

bench: 
	@scripts/deps.sh bench
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSTERN_TESTS=OFF >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target postern
	$(PYTHON) bench/smtp-ingest --postern $(CURDIR)/$(POSTERN)
	@cmake --build $(BUILD) -j $(JOBS) --target bench-imap-load
	$(PYTHON) bench/imap-bench --postern $(CURDIR)/$(POSTERN)
	@cmake --build $(BUILD) -j $(JOBS) --target bench-smtp-load
	$(PYTHON) bench/smtp-relay --postern $(CURDIR)/$(POSTERN)
	@cmake --build $(BUILD) -j $(JOBS) --target bench-dkim
	$(PYTHON) bench/dkim-bench --bench $(CURDIR)/$(BUILD)/bench-dkim
	$(PYTHON) bench/summary

# The fault tests with longer runs (more kill -9 rounds, bigger loads): POSTERN_SOAK=1.
soak:
	@scripts/deps.sh check
	cmake -S . -B $(CHECK_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPOSTERN_SANITIZE=ON -DPOSTERN_WERROR=ON >/dev/null
	cmake --build $(CHECK_BUILD) -j $(JOBS) --target postern
	POSTERN_SOAK=1 POSTERN_BIN=$(CURDIR)/$(CHECK_BUILD)/postern $(PYTHON) -m pytest -q -p no:cacheprovider tests/fault

clean:
	rm -rf $(BUILD) $(CHECK_BUILD) $(FUZZ_BUILD)
