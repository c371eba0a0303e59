// graph_rewrite throughput of the symbolic rules on a large index graph: nodes of the
// input graph rewritten per second. Run: build/bin/kitten_bench_rewrite.
#include <benchmark/benchmark.h>

#include "dsl/printer.h"
#include "dsl/symbolic.h"

namespace kitten {
namespace {

// The unsimplified addresses and gates of a 16x16 upcast of a tiled 2-D access into a
// 4000x4000 buffer: each lane's row/column, split into tile and offset again with / and %,
// and a bounds gate per lane, as a naive lowering writes them.
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

void BM_SymbolicRewrite(benchmark::State& state) {
  UOp g = index_graph();
  size_t nodes = toposort(g).size();
  size_t out_nodes = 0;
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
