# latch: the two commands a newcomer runs are `make run` and `make test`.
# Everything is built by CMake in build/ (release with debug info) and
# build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer).

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
HOST ?= 127.0.0.1
PORT ?= 8080
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?=

.PHONY: all build run test test-fast test-asan test-fuzz-seeds fuzz bench install \
	clean deps

all: build

deps:
	@scripts/deps.sh build

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLATCH_TESTS=OFF \
	    $(CMAKE_FLAGS) >/dev/null
	@cmake --build build -j $(JOBS) --target latch

run: build
	./build/latch demo --host $(HOST) --port $(PORT)

# The format check (clang-format, STYLE.md), the layering check (src/LAYERS
# against the objects), every test, then the whole suite again under
# ASan + UBSan, then both fuzz targets built and run over their seeds once
# (fuzz/run.sh --seeds: ~25 s). Warnings are errors here, as in CI.
test:
	@scripts/deps.sh build test fuzz
	@scripts/check_format.sh
	@$(MAKE) --no-print-directory test-fast test-asan test-fuzz-seeds

test-fuzz-seeds:
	@mkdir -p build-fuzz
	@fuzz/run.sh --seeds >build-fuzz/seeds.log 2>&1 || \
	    { tail -40 build-fuzz/seeds.log; echo "fuzz seeds: FAILED"; exit 1; }
	@echo "fuzz seeds: parser and lifecycle targets pass every seed"

test-fast:
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLATCH_TESTS=ON \
	    -DLATCH_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build -j $(JOBS)
	@scripts/check_layers.sh build/CMakeFiles/latch_obj.dir/src
	@cd build && ctest --output-on-failure -j $(JOBS)

test-asan:
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLATCH_TESTS=ON \
	    -DLATCH_WERROR=ON -DLATCH_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j $(JOBS)

fuzz:
	@scripts/deps.sh build fuzz
	@fuzz/run.sh $(FUZZ_SECONDS)

# latch beside nginx, h2o, node:http, Express and Fastify on this machine,
# with a table of ratios; bench/README.md. Quick: ROUNDS=1 DURATION=2 make bench
bench:
	@scripts/deps.sh build bench
	@bench/run.sh

install: build
	@cmake --install build

clean:
	rm -rf build build-asan build-fuzz
