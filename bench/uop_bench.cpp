// UOp creation speed (ns per node, one thread and two) and the hash-cons hit rate on a
// large index graph. Run: build/bin/kitten_bench_dsl (or `make bench`).
#include <benchmark/benchmark.h>

#include <string>

#include "dsl/uop.h"

namespace kitten {
namespace {

constexpr int kChain = 10000;

// Every node new: a chain of ADDs of fresh constants (2 nodes per step), then freed.
// With two threads each builds its own chain (no shared nodes, only the shared table).
void BM_CreateNewNodes(benchmark::State& state) {
  UOp x = define_var("t" + std::to_string(state.thread_index()), 0, 1 << 20, dtypes::int64);
  int64_t base = int64_t(state.thread_index()) << 32;
  for (auto _ : state) {
    UOp chain = x;
    for (int i = 0; i < kChain; ++i) chain = chain + const_int(dtypes::int64, base + i);
    benchmark::DoNotOptimize(chain.id());
  }
  state.SetItemsProcessed(state.iterations() * kChain * 2);
}
BENCHMARK(BM_CreateNewNodes)->Threads(1)->Threads(2)->UseRealTime();

// Every make() a hit: the same chain rebuilt while a copy of it is held.
void BM_CreateExistingNodes(benchmark::State& state) {
  UOp x = define_var("h", 0, 1 << 20, dtypes::int64);
  UOp held = x;
  for (int i = 0; i < kChain; ++i) held = held + const_int(dtypes::int64, i);
  for (auto _ : state) {
    UOp chain = x;
    for (int i = 0; i < kChain; ++i) chain = chain + const_int(dtypes::int64, i);
    benchmark::DoNotOptimize(chain.id());
  }
  state.SetItemsProcessed(state.iterations() * kChain * 2);
}
BENCHMARK(BM_CreateExistingNodes)->Threads(1)->Threads(2)->UseRealTime();

// The index expressions of a 16x16 upcast of a tiled 2-D access, written the way a naive
// lowering writes them: every lane spells out its whole address. Hash-consing shares the
// common parts; the counter hit_rate is the fraction of make() calls that found a node.
void BM_IndexGraphHitRate(benchmark::State& state) {
  InternStats before = intern_stats();
  uint64_t nodes = 0;
  for (auto _ : state) {
    UOp g0 = range(256, 0, AxisKind::Global), g1 = range(256, 1, AxisKind::Global);
    UOp l0 = range(16, 2, AxisKind::Local), l1 = range(16, 3, AxisKind::Local);
    std::vector<UOp> lanes;
    for (int u = 0; u < 16; ++u)
      for (int v = 0; v < 16; ++v) {
        UOp row = (g0 * 16 + l0) * 16 + const_int(dtypes::int32, u);
        UOp col = (g1 * 16 + l1) * 16 + const_int(dtypes::int32, v);
        lanes.push_back(row * 4096 + col);
      }
    nodes = 0;
    for (auto& l : lanes) nodes += l ? 1 : 0;
    benchmark::DoNotOptimize(lanes.data());
  }
  InternStats after = intern_stats();
  double lookups = double(after.lookups - before.lookups);
  state.counters["hit_rate"] = (after.hits - before.hits) / lookups;
  state.counters["makes"] = benchmark::Counter(lookups, benchmark::Counter::kAvgIterations);
  state.counters["lanes"] = double(nodes);
}
BENCHMARK(BM_IndexGraphHitRate);

}  // namespace
}  // namespace kitten

BENCHMARK_MAIN();
