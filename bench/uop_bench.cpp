// UOp creation speed (ns per node, one thread and two), the hash-cons hit rate on a large
// index graph, graph_rewrite throughput of the symbolic rules on it, and the linearizer on
// kernels of about 100,000 nodes.
// Run: build/bin/kitten_bench_dsl (or `make bench`).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>

#include <span>
#include <string>
#include <vector>

#include "dsl/linearize.h"
#include "dsl/lower.h"
#include "dsl/printer.h"
#include "dsl/symbolic.h"
#include "dsl/verify.h"

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

// A sum of 1,000 distinct variables in shuffled order (the worst case of the canonical
// sum: each new term lands inside the sorted prefix) and one of x/2 + ... + x/1001 in
// order (each term appends).
void BM_SimplifyThousandTermSum(benchmark::State& state) {
  bool shuffled = state.range(0) != 0;
  std::vector<int> order(1000);
  for (int i = 0; i < 1000; ++i) order[i] = i;
  if (shuffled) std::shuffle(order.begin(), order.end(), std::mt19937(7));
  UOp x = define_var("x", 0, 100000, dtypes::int64), sum;
  for (int i : order) {
    UOp t = shuffled ? define_var("v" + std::to_string(i), 0, 9, dtypes::int64) : x / (i + 2);
    sum = sum ? sum + t : t;
  }
  for (auto _ : state) benchmark::DoNotOptimize(simplify(sum).id());
}
BENCHMARK(BM_SimplifyThousandTermSum)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

UOp i32(int64_t v) { return const_int(dtypes::int32, v); }

// The body of one lane: a chain of `depth` ALU ops, each on a fresh load of x, as an
// unrolled elementwise prologue is written (about 5 nodes a step).
UOp lane_chain(const UOp& x, const UOp& base, int64_t first, int depth) {
  DType f = dtypes::float32;
  UOp v = load(index(x, base + first));
  for (int d = 1; d < depth; ++d) {
    UOp w = load(index(x, base + (first + d)));
    v = d % 3 == 0 ? v * w : d % 3 == 1 ? v + w : alu(Op::MAX, v, w * const_(f, d % 8));
  }
  return v;
}

// A fused, upcast reduction: output ranges i, j (global), reduce ranges k and l (l inside
// k), `lanes` register accumulators each updated by a chain of `depth` ops on loads, a
// loop-invariant weight per lane, then every result scaled and stored.
UOp nested_reduce_kernel(int lanes, int depth) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr()), w = param(2, f.ptr());
  UOp i = range(64, 0, AxisKind::Global), j = range(64, 1, AxisKind::Global);
  UOp k = range(16, 2, AxisKind::Reduce), l = range(16, 3, AxisKind::Reduce);
  UOp row = (i * 64 + j) * lanes, base = (k * 16 + l) * (int64_t(lanes) * depth);
  std::vector<UOp> accs, updates;
  for (int a = 0; a < lanes; ++a) {
    UOp acc = define_reg(f, 1, a);
    UOp init = store(index(after(acc, {i, j}), i32(0)), const_(f, 0.0));
    UOp in_loop = after(acc, {init, l});
    UOp v = lane_chain(x, base, int64_t(a) * depth, depth) * load(index(w, row + a));
    updates.push_back(store(index(in_loop, i32(0)), load(index(in_loop, i32(0))) + v));
    accs.push_back(acc);
  }
  UOp loop_k = end(end(UOp::make(Op::GROUP, std::span<const UOp>(updates)), {l}), {k});
  std::vector<UOp> stores;
  for (int a = 0; a < lanes; ++a) {
    UOp result = load(index(after(accs[size_t(a)], {loop_k}), i32(0)));
    stores.push_back(store(index(out, row + a), result * const_(f, 0.5)));
  }
  return sink({end(UOp::make(Op::GROUP, std::span<const UOp>(stores)), {i, j})}, "nested");
}

// Many sibling loops in one global range: loop t reads x and, for odd t, the buffer the
// loop before it wrote (ordered by AFTER); every third loop has an inner loop closed by
// the same END. Each loop body is a chain of `depth` ops.
UOp sibling_loops_kernel(int loops, int depth) {
  DType f = dtypes::float32;
  UOp tmp = param(0, f.ptr()), x = param(1, f.ptr());
  UOp i = range(1024, 0, AxisKind::Global);
  std::vector<UOp> ends;
  for (int t = 0; t < loops; ++t) {
    UOp r = range(32, 1 + 2 * t, AxisKind::Loop);
    UOp inner = t % 3 == 0 ? range(4, 2 + 2 * t, AxisKind::Loop) : UOp();
    UOp at = inner ? (i * 32 + r) * 4 + inner : i * 32 + r;
    UOp v = lane_chain(x, at * loops, int64_t(t) * depth, depth);
    if (t % 2 == 1) v = v + load(index(after(tmp, {ends.back()}), at));
    UOp st = store(index(tmp, at + int64_t(t) * 1024 * 128), v);
    ends.push_back(inner ? end(st, {r, inner}) : end(st, {r}));
  }
  return sink({end(UOp::make(Op::GROUP, std::span<const UOp>(ends)), {i})}, "siblings");
}

// Linearizing a built graph (verification included); `nodes` is the graph's size.
void linearize_bench(benchmark::State& state, const UOp& kernel) {
  size_t nodes = toposort(kernel).size();
  for (auto _ : state) benchmark::DoNotOptimize(linearize(kernel).ops.data());
  state.SetItemsProcessed(int64_t(state.iterations() * nodes));
  state.counters["nodes"] = double(nodes);
}
void BM_LinearizeNested(benchmark::State& state) {
  linearize_bench(state, nested_reduce_kernel(256, 78));
}
BENCHMARK(BM_LinearizeNested)->Unit(benchmark::kMillisecond);
void BM_LinearizeSiblings(benchmark::State& state) {
  linearize_bench(state, sibling_loops_kernel(1000, 20));
}
BENCHMARK(BM_LinearizeSiblings)->Unit(benchmark::kMillisecond);

// The lowering pipeline on a kernel of about 2,000 nodes: 100 sibling loops whose loads
// and stores go through tiled index arithmetic and gates, as a generated kernel's do.
// Each iteration builds fresh nodes (a new axis offset), so no rewrite is remembered.
UOp lower_bench_kernel(int64_t round) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  std::vector<UOp> effects;
  for (int64_t l = 0; l < 100; ++l) {
    UOp r = range(64 + round % 7, 100 * round + l, AxisKind::Loop);
    UOp idx = ((r * 4 + l % 4) / 4) * 8 + (r * 8 + 3) % 8;
    UOp v = load(index(x, idx, r < 64 + round % 7), const_(f, 0.0));
    effects.push_back(end(store(index(out, r * 100 + l), v * v + v), {r}));
  }
  return sink({UOp::make(Op::GROUP, std::span<const UOp>(effects))}, "lower_bench");
}

void BM_Lower2000(benchmark::State& state) {
  Target t = h100_target();
  int64_t round = 0, nodes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    UOp k = lower_bench_kernel(round++);
    nodes = int64_t(toposort(k).size());
    state.ResumeTiming();
    benchmark::DoNotOptimize(lower(k, t));
  }
  state.counters["nodes"] = double(nodes);
}
BENCHMARK(BM_Lower2000)->Unit(benchmark::kMillisecond);

// The same, pass by pass (each output verified, as lower does): a counter per pass, in
// milliseconds per kernel.
void BM_Lower2000ByPass(benchmark::State& state) {
  Target t = h100_target();
  Schedule none;
  LowerContext ctx{t, none};
  std::map<std::string, double> ms;
  int64_t round = 0;
  for (auto _ : state) {
    state.PauseTiming();
    UOp g = lower_bench_kernel(round++);
    state.ResumeTiming();
    for (const Pass* p : passes()) {
      auto t0 = std::chrono::steady_clock::now();
      g = p->run(g, ctx);
      verify(g);
      ms[p->name] +=
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
  }
  for (const auto& [name, total] : ms)
    state.counters[name + "_ms"] = total / double(state.iterations());
}
BENCHMARK(BM_Lower2000ByPass)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kitten

BENCHMARK_MAIN();
