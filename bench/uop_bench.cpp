// UOp creation speed (ns per node, one thread and two), the hash-cons hit rate on a large
// index graph, and graph_rewrite throughput of the symbolic rules on it.
// Run: build/bin/kitten_bench_dsl (or `make bench`).
#include <benchmark/benchmark.h>

#include <string>

#include "dsl/printer.h"
#include "dsl/symbolic.h"

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

// The unsimplified addresses and gates of a 16x16 upcast of a tiled 2-D access into a
// 4000x4000 buffer: each lane's row and column, split into tile and offset again with /
// and %, and a bounds gate per lane, as a naive lowering writes them.
UOp index_graph() {
  UOp g0 = range(250, 0, AxisKind::Global), g1 = range(250, 1, AxisKind::Global);
  UOp l0 = range(16, 2, AxisKind::Local), l1 = range(16, 3, AxisKind::Local);
  std::vector<UOp> lanes;
  for (int u = 0; u < 16; ++u)
    for (int v = 0; v < 16; ++v) {
      UOp row = (g0 * 16 + l0) * 16 + const_int(dtypes::int32, u);
      UOp col = (g1 * 16 + l1) * 16 + const_int(dtypes::int32, v);
      UOp row_again = (row / 16) * 16 + row % 16;
      UOp idx = row_again * 4000 + (col % 4000);
      UOp valid = UOp::make(Op::AND, {row < 4000, col < 4000});
      lanes.push_back(UOp::make(Op::WHERE, {valid, idx, const_int(dtypes::int32, 0)}));
    }
  return UOp::make(Op::VECTORIZE, std::span<const UOp>(lanes));
}

// Hash-consing shares the common parts of the lanes: hit_rate is the fraction of make()
// calls that found an existing node while building the graph from scratch.
void BM_IndexGraphHitRate(benchmark::State& state) {
  InternStats before = intern_stats();
  size_t nodes = 0;
  for (auto _ : state) nodes = toposort(index_graph()).size();
  InternStats after = intern_stats();
  double lookups = double(after.lookups - before.lookups);
  state.counters["hit_rate"] = double(after.hits - before.hits) / lookups;
  state.counters["makes"] = benchmark::Counter(lookups, benchmark::Counter::kAvgIterations);
  state.counters["nodes"] = double(nodes);
}
BENCHMARK(BM_IndexGraphHitRate);

// graph_rewrite throughput of the symbolic rules: input nodes rewritten per second.
void BM_SymbolicRewrite(benchmark::State& state) {
  UOp g = index_graph();
  size_t nodes = toposort(g).size(), out_nodes = 0;
  for (auto _ : state) {
    UOp s = simplify(g);
    out_nodes = toposort(s).size();
    benchmark::DoNotOptimize(s.id());
  }
  state.SetItemsProcessed(int64_t(state.iterations() * nodes));
  state.counters["nodes_in"] = double(nodes);
  state.counters["nodes_out"] = double(out_nodes);
}
BENCHMARK(BM_SymbolicRewrite)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kitten

BENCHMARK_MAIN();
