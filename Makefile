# The two commands a user needs: `make run` and `make test`. Each installs what is
# missing (tools/setup.sh), configures with CMake + Ninja, builds and runs.
BUILD    ?= build
ASAN     ?= build-asan
TSAN     ?= build-tsan
JOBS     ?= $(shell nproc)
CMAKE_FLAGS ?=
ifeq ($(CI),true)
  CMAKE_FLAGS += -DKITTEN_WERROR=ON
endif

.PHONY: all setup build run test test-main test-asan test-tsan bench docs format clean

all: build

setup:
	@bash tools/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/bin/kitten devices
	$(BUILD)/bin/kitten graph sum
	$(BUILD)/bin/kitten lower --passes
	$(BUILD)/bin/kitten render matmul --device cpu
	$(BUILD)/bin/kitten simplify '((x*4 + k)/4)*4 + (x*4 + k)%4 < 512' --var x=0..1000 --var k=0..3
	$(BUILD)/bin/kitten simplify 'row*128 + ((col ^ (row & 7)) << 4)' --var row=0..63 --var col=0..7 --dtype int32
	@# The tile-DSL GEMM and attention on the best device present: the GPU at the
	@# benchmark shapes (and a Hopper GPU's own ceilings), else the emulator at small
	@# awkward ones.
	if $(BUILD)/bin/kitten devices | grep -q '^cuda: arch'; then \
	  $(BUILD)/bin/kitten bench gemm --device cuda --shape 4096,4096,4096 --out bfloat16 && \
	  $(BUILD)/bin/kitten bench flash_attention_fwd --device cuda --shape 4,16,16,4096,4096,128 && \
	  $(BUILD)/bin/kitten bench flash_attention_fwd --device cuda --shape 1,32,8,1,4095,128 && \
	  if $(BUILD)/bin/kitten devices | grep -A1 '^cuda: arch' | grep -q wgmma; then \
	    $(BUILD)/bin/kitten bench ceilings --device cuda; \
	  fi; \
	  $(BUILD)/bin/kitten search gemm --device cuda --shape 4095,4095,4095 --budget 60 && \
	  $(BUILD)/bin/kitten search matmul --device cuda --shape 4096,4096,4096 --dtype bfloat16 \
	    --budget 30 && \
	  $(BUILD)/bin/kitten search sum --device cuda --shape 32768,1024 --budget 30; \
	else \
	  $(BUILD)/bin/kitten bench gemm --device emu --shape 256,192,320 && \
	  $(BUILD)/bin/kitten bench flash_attention_fwd --device emu --shape 2,4,2,100,130,64 --causal && \
	  $(BUILD)/bin/kitten search sum --device emu --shape 64,300; \
	fi
	@# The autotuner on this machine's cpu: BEAM searches over generated kernels' schedules,
	@# kept in a tuning database (a second run finds them there and searches nothing).
	$(BUILD)/bin/kitten tune autotune/lists/cpu.yaml --device cpu --db $(BUILD)/tuning/cpu.yaml --budget 30
	$(BUILD)/bin/kitten tune --show --db $(BUILD)/tuning/cpu.yaml
	@# The tensor front end running a real model, all-MiniLM-L6-v2 (its weights fetched into
	@# the cache once), on the best device present: sentence embeddings and similarities.
	$(BUILD)/bin/kitten run minilm "A man is eating food." "A man is eating a piece of bread." \
	  "The girl is carrying a baby." "A man is riding a horse."
	@# Training through the front end: a small causal transformer memorises a token sequence
	@# (AdamW fused into one kernel per step, the step captured and replayed as one graph).
	$(BUILD)/bin/kitten run train-demo
	@# Decoding over a growing KV cache: attention over a length that grows every step, one
	@# captured graph replayed with the position and the length rebound.
	$(BUILD)/bin/kitten run decode-demo

test: test-main test-asan test-tsan

test-main: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# dsl alone under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: setup
	@cmake -S . -B $(ASAN) -G Ninja $(CMAKE_FLAGS) -DKITTEN_DSL_ONLY=ON \
	  -DKITTEN_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build $(ASAN) -j $(JOBS)
	cd $(ASAN) && ctest --output-on-failure -j $(JOBS) -L dsl

# The concurrency tests (dsl and backends) under ThreadSanitizer; the cpu backend there
# compiles with the system C compiler (no LLVM in a sanitized build).
test-tsan: setup
	@cmake -S . -B $(TSAN) -G Ninja $(CMAKE_FLAGS) -DKITTEN_DSL_ONLY=OFF -DKITTEN_WITH_LLVM=OFF \
	  -DKITTEN_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(TSAN) -j $(JOBS) --target dsl_concurrency_tests backend_concurrency_tests
	cd $(TSAN) && ctest --output-on-failure -j $(JOBS) -L concurrency

bench: build
	$(BUILD)/bin/kitten_bench_dsl
	$(BUILD)/bin/kitten_bench_cpu
	$(BUILD)/bin/kitten_bench_emu

# Regenerates docs/uops.md from the op registry (a test fails when it is stale).
docs: build
	$(BUILD)/bin/kitten uops --doc > docs/uops.md

format:
	@git ls-files '*.cpp' '*.h' | xargs -r clang-format -i

clean:
	rm -rf $(BUILD) $(ASAN) $(TSAN)
