// The Hopper primitives (sm_90a) in hand-built kernels, on every device that has them
// (emu, and cuda through the GPU script), and the emulator's checks of their faults: each
// fault names the barrier, the phase and the thread.
#include <cstdio>
#include <fstream>
#include <map>

#include "backends/c_renderer.h"
#include "backends/emu/emulator.h"
#include "dsl/linearize.h"
#include "dsl/lower.h"
#include "dsl/printer.h"
#include "dsl/rewrite.h"
#include "dsl/swizzle.h"
#include "kernels/examples.h"
#include "test_device.h"

namespace kitten {
namespace {

UOp i32(int64_t v) { return const_int(dtypes::int32, v); }
UOp not_(UOp c) { return UOp::make(Op::XOR, {c, const_bool(true)}); }
UOp make_effect(Op op, std::vector<UOp> src, Arg arg = {}) {
  return UOp::make(op, dtypes::void_, std::span<const UOp>(src), std::move(arg));
}
UOp fence(const char* kind, std::vector<UOp> deps) {
  return make_effect(Op::FENCE, std::move(deps), std::string(kind));
}

// Thread 0 initialises `count` mbarriers in `bars` (each for `arrivals[i]` arrivals) and
// fences the inits; the block's barrier then publishes them. Returns the buffer, usable
// after that barrier.
UOp init_mbarriers(const UOp& t, const UOp& bars, const std::vector<int64_t>& arrivals,
                   bool fenced = true) {
  UOp first = UOp::make(Op::IF, {t < 1});
  std::vector<UOp> inits;
  for (size_t i = 0; i < arrivals.size(); ++i)
    inits.push_back(make_effect(Op::MBARRIER_INIT,
                                {index(after(bars, {first}), i32(int64_t(i))), i32(arrivals[i])}));
  UOp body = inits.size() == 1 ? inits[0] : UOp::make(Op::GROUP, std::span<const UOp>(inits));
  if (fenced) body = fence("mbarrier_init", {body});
  return after(bars, {make_effect(Op::BARRIER, {UOp::make(Op::ENDIF, {first, body})})});
}

// A producer warp and a consumer warp pass `items` rows of 32 floats through a ring of
// `stages` shared slots: the producer waits until a slot is empty, fills it with ordinary
// stores and arrives on its full barrier; the consumer waits until it is full, reads it
// (out = 2 x) and arrives on its empty barrier. Phases alternate parity every `stages`
// items. `consumer_frees` false: the consumer never frees a slot (a deadlock).
UOp ring_kernel(int64_t items, int64_t stages, bool consumer_frees = true) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, 64), lane = t % 32;
  UOp ring = define_local(f, stages * 32, 0);
  std::vector<int64_t> arrivals(size_t(2 * stages), 32);  // full[s], then empty[s]
  UOp bars = init_mbarriers(t, define_local(dtypes::int64, 2 * stages, 1, 8), arrivals);

  UOp producer = UOp::make(Op::IF, {t < 32});
  UOp i = range(items, 0, AxisKind::Loop);
  UOp s = i % stages, parity = (i / stages) % 2;
  UOp pbars = after(bars, {producer});
  UOp empty = make_effect(Op::MBARRIER_WAIT, {index(pbars, s + stages), i32(1) - parity});
  UOp wrote = store(index(after(ring, {empty}), s * 32 + lane), load(index(x, i * 32 + lane)));
  UOp full = make_effect(Op::MBARRIER_ARRIVE, {index(pbars, s), i32(0), wrote});
  UOp produced = UOp::make(Op::ENDIF, {producer, end(full, {i})});

  UOp consumer = UOp::make(Op::IF, {not_(t < 32)});
  UOp j = range(items, 1, AxisKind::Loop);
  UOp cs = j % stages, cparity = (j / stages) % 2;
  UOp cbars = after(bars, {consumer});
  UOp filled = make_effect(Op::MBARRIER_WAIT, {index(cbars, cs), cparity});
  UOp v = load(index(after(ring, {filled}), cs * 32 + lane));
  UOp put = store(index(out, j * 32 + lane), v * const_(f, 2.0));
  UOp body = consumer_frees
                 ? make_effect(Op::MBARRIER_ARRIVE, {index(cbars, cs + stages), i32(0), put})
                 : put;
  UOp consumed = UOp::make(Op::ENDIF, {consumer, end(body, {j})});
  return sink({produced, consumed}, "ring");
}

class Hopper : public DeviceTest {
 protected:
  void SetUp() override {
    DeviceTest::SetUp();
    if (!dev) return;
    if (!dev->props().target.has(kFeatureMbarrier))
      GTEST_SKIP() << GetParam() << " (" << dev->props().target.arch << ") has no mbarriers";
  }
};

TEST_P(Hopper, ProducerAndConsumerPassRowsThroughAnMbarrierRing) {
  for (auto [items, stages] : std::vector<std::pair<int64_t, int64_t>>{{7, 2}, {9, 3}, {1, 2}}) {
    SCOPED_TRACE(std::to_string(items) + " items, " + std::to_string(stages) + " stages");
    HostData x = HostData::random(dtypes::float32, size_t(items * 32), 41),
             out = HostData::poisoned(dtypes::float32, size_t(items * 32));
    DeviceBuffer dx(*dev, x), dout(*dev, out);
    compile_kernel(*dev, ring_kernel(items, stages)).run(args({&dout, &dx}));
    dout.read(out);
    std::vector<double> want(x.values.size());
    for (size_t k = 0; k < want.size(); ++k) want[k] = 2 * x.values[k];
    expect_exact(out, want);
  }
}

// Warps 0-1 and warps 2-3 each meet on their own named barrier and read each other's
// rows: out[t] = x[t ^ 32] + 1 for every thread of the pair.
UOp named_pairs_kernel(int64_t expected_threads = 64) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, 128);
  UOp sm = define_local(f, 128, 0);
  UOp wrote = store(index(sm, t), load(index(x, t)) + const_(f, 1.0));
  std::vector<UOp> halves;
  for (int64_t half : {0, 1}) {
    UOp mine = UOp::make(Op::IF, {half == 0 ? t < 64 : not_(t < 64), wrote});
    UOp met =
        make_effect(Op::NAMED_BARRIER, {mine}, std::vector<int64_t>{1 + half, expected_threads});
    UOp v = load(index(after(sm, {met}), UOp::make(Op::XOR, {t, i32(32)})));
    halves.push_back(UOp::make(Op::ENDIF, {mine, store(index(out, t), v)}));
  }
  return sink({halves[0], halves[1]}, "named_pairs");
}

TEST_P(Hopper, NamedBarriersSynchroniseSubsetsOfWarps) {
  HostData x = HostData::random(dtypes::float32, 128, 43),
           out = HostData::poisoned(dtypes::float32, 128);
  DeviceBuffer dx(*dev, x), dout(*dev, out);
  compile_kernel(*dev, named_pairs_kernel()).run(args({&dout, &dx}));
  dout.read(out);
  std::vector<double> want(128);
  for (size_t k = 0; k < 128; ++k) want[k] = double(float(x.values[k ^ 32] + 1.0));
  expect_exact(out, want);
}

// Warps 0-1 write rows and arrive at named barrier 1 without waiting (bar.arrive); warps
// 2-3 wait there (bar.sync) and read the rows: out[t] = x[t] + 1 for t < 64.
UOp handoff_kernel() {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, 128);
  UOp sm = define_local(f, 64, 0);
  UOp producer = UOp::make(Op::IF, {t < 64});
  UOp row = t % i32(64);  // t itself in the first two warps, t - 64 in the others
  UOp wrote = store(index(after(sm, {producer}), row), load(index(x, row)) + const_(f, 1.0));
  UOp arrived = make_effect(Op::NAMED_BARRIER, {wrote}, std::vector<int64_t>{1, 128, 1});
  UOp produced = UOp::make(Op::ENDIF, {producer, arrived});
  UOp consumer = UOp::make(Op::IF, {not_(t < 64)});
  UOp met = make_effect(Op::NAMED_BARRIER, {consumer}, std::vector<int64_t>{1, 128});
  UOp v = load(index(after(sm, {met}), row));
  UOp consumed = UOp::make(Op::ENDIF, {consumer, store(index(out, row), v)});
  return sink({produced, consumed}, "handoff");
}

TEST_P(Hopper, ANamedBarrierArriveHandsRowsToTheWaitingWarps) {
  HostData x = HostData::random(dtypes::float32, 64, 47),
           out = HostData::poisoned(dtypes::float32, 64);
  DeviceBuffer dx(*dev, x), dout(*dev, out);
  compile_kernel(*dev, handoff_kernel()).run(args({&dout, &dx}));
  dout.read(out);
  std::vector<double> want(64);
  for (size_t k = 0; k < 64; ++k) want[k] = double(float(x.values[k] + 1.0));
  expect_exact(out, want);
}

// Two warpgroups: the first lowers its register budget, the second raises it (as a
// producer and its consumers do); both then copy x to out.
UOp setmaxnreg_kernel(bool uniform = true) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, 256);
  UOp producer = UOp::make(Op::IF, {uniform ? t < 128 : t < 32});
  UOp dec = make_effect(Op::SETMAXNREG, {producer}, std::vector<int64_t>{40, 0});
  UOp lowered = UOp::make(Op::ENDIF, {producer, dec});
  UOp consumer = UOp::make(Op::IF, {not_(t < 128), lowered});
  UOp inc = make_effect(Op::SETMAXNREG, {consumer}, std::vector<int64_t>{232, 1});
  UOp raised = UOp::make(Op::ENDIF, {consumer, inc});
  return sink({store(index(after(out, {raised}), t), load(index(x, t)))}, "setmaxnreg");
}

TEST_P(Hopper, SetmaxnregMovesRegistersBetweenWarpgroups) {
  if (!dev->props().target.has(kFeatureSetmaxnreg)) GTEST_SKIP() << "no setmaxnreg here";
  HostData x = HostData::random(dtypes::float32, 256, 47),
           out = HostData::poisoned(dtypes::float32, 256);
  DeviceBuffer dx(*dev, x), dout(*dev, out);
  compile_kernel(*dev, setmaxnreg_kernel()).run(args({&dout, &dx}));
  dout.read(out);
  expect_exact(out, x.values);
}

#ifdef KITTEN_CUDA_TESTS
// The SASS of the kernel must hold USETMAXREG (ptxas drops setmaxnreg, with a warning
// that the compiler turns into an error, when it cannot fix the register count at entry).
TEST_P(Hopper, SetmaxnregReachesTheSass) {
  FILE* probe = popen("cuobjdump --version 2>/dev/null", "r");
  std::string version;
  char buf[256];
  while (probe && fgets(buf, sizeof buf, probe)) version += buf;
  if (probe) pclose(probe);
  if (version.empty()) GTEST_SKIP() << "cuobjdump is not on PATH";
  RenderedKernel r = dev->render(
      linearize(lower_kernels(setmaxnreg_kernel(), dev->props().target, {}).kernels[0]));
  std::string cubin = dev->compiler().compile(r.source);
  std::string path = testing::TempDir() + "kitten_setmaxnreg.cubin";
  std::ofstream(path, std::ios::binary) << cubin;
  FILE* sass = popen(("cuobjdump -sass " + path + " 2>&1").c_str(), "r");
  std::string text;
  while (sass && fgets(buf, sizeof buf, sass)) text += buf;
  if (sass) pclose(sass);
  EXPECT_NE(text.find("USETMAXREG"), std::string::npos) << text.substr(0, 2000);
}
#endif

std::string tile_text(const WgmmaTile& o) {
  return "n " + std::to_string(o.n) + ", k " + std::to_string(o.k) + ", swizzle " +
         std::string(swizzle_name(o.swizzle)) + (o.a_in_registers ? ", A in registers" : "") +
         (o.b_mn_major ? ", B MN-major" : ", B K-major") + ", " + std::string(o.in.name());
}

// One warpgroup's wgmma chain against float64: every swizzle mode, both majors of B, A from
// shared memory or registers, N from 8 to 256, bf16 and f16.
TEST_P(Hopper, WgmmaTileMatchesFloat64) {
  if (!dev->props().target.has(kFeatureWgmma)) GTEST_SKIP() << "no wgmma here";
  std::vector<WgmmaTile> cases;
  for (Swizzle s : {Swizzle::None, Swizzle::B32, Swizzle::B64, Swizzle::B128})
    for (bool mn : {false, true})
      cases.push_back({.n = 64, .k = 64, .swizzle = s, .b_mn_major = mn});
  cases.push_back({.n = 8, .k = 16, .swizzle = Swizzle::B32, .a_in_registers = true});
  cases.push_back(
      {.n = 256, .k = 64, .swizzle = Swizzle::B128, .a_in_registers = true, .b_mn_major = true});
  cases.push_back({.n = 136, .k = 32, .swizzle = Swizzle::B64, .in = dtypes::float16});
  cases.push_back(
      {.n = 24, .k = 128, .swizzle = Swizzle::B128, .b_mn_major = true, .in = dtypes::float16});
  for (const WgmmaTile& o : cases) {
    SCOPED_TRACE(tile_text(o));
    HostData a = HostData::random(o.in, size_t(64 * o.k), 51),
             b = HostData::random(o.in, size_t(o.k * o.n), 52);
    std::vector<double> scale, want = matmul_reference(a, b, 64, o.n, o.k, &scale);
    HostData c = HostData::poisoned(dtypes::float32, size_t(64 * o.n));
    DeviceBuffer da(*dev, a), db(*dev, b), dc(*dev, c);
    compile_kernel(*dev, wgmma_tile_kernel(o)).run(args({&dc, &da, &db}));
    dc.read(c);
    expect_accumulated(c, want, scale, o.k);
  }
}

// A tensor of `dims` (innermost first) with rows padded to `pitch` elements, random values
// in its elements and a poisoned pad; the layout's byte strides.
struct Tensor {
  DType dtype;
  std::vector<int64_t> dims, strides;
  HostData data;
  Tensor(DType d, std::vector<int64_t> dims_, int64_t pitch, uint64_t stream, bool poison = false)
      : dtype(d), dims(std::move(dims_)), data(d, 0) {
    int64_t stride = pitch * d.itemsize(), total = pitch;
    for (size_t i = 1; i < dims.size(); ++i) {
      strides.push_back(stride);
      stride *= dims[i];
      total *= dims[i];
    }
    data =
        poison ? HostData::poisoned(d, size_t(total)) : HostData::random(d, size_t(total), stream);
  }
  // The element index of coordinates c, or -1 outside the tensor.
  int64_t at(const std::vector<int64_t>& c) const {
    int64_t i = 0;
    for (size_t d = 0; d < dims.size(); ++d) {
      if (c[d] < 0 || c[d] >= dims[d]) return -1;
      i += c[d] * (d == 0 ? 1 : strides[d - 1] / dtype.itemsize());
    }
    return i;
  }
};

// The coordinates of element e of a box at `origin`.
std::vector<int64_t> box_coords(const std::vector<int64_t>& box, const std::vector<int64_t>& origin,
                                int64_t e) {
  std::vector<int64_t> c;
  for (size_t d = 0; d < box.size(); ++d) {
    c.push_back(origin[d] + e % box[d]);
    e /= box[d];
  }
  return c;
}

struct RoundTrip {
  DType dtype;
  std::vector<int64_t> dims;
  int64_t pitch;
  std::vector<int64_t> box;
  Swizzle swizzle;
  std::vector<int64_t> load, store;
  std::vector<int64_t> out_dims;  // a map stored through spans whole 16-byte units of a row
};

std::map<std::string, int64_t> round_trip_vars(const RoundTrip& c) {
  std::map<std::string, int64_t> v;
  for (size_t d = 0; d < c.box.size(); ++d) {
    v["load" + std::to_string(d)] = c.load[d];
    v["store" + std::to_string(d)] = c.store[d];
  }
  return v;
}

// The round trip's parameters: the dense box, the map it loads through and the one it
// stores through.
std::vector<KernelArg> round_trip_args(const RoundTrip& c, Buffer dense, Buffer in,
                                       const Tensor& tin, Buffer out, const Tensor& tout) {
  return {dense, make_tensor_map(in, c.dtype, c.dims, tin.strides, c.box, c.swizzle),
          make_tensor_map(out, c.dtype, c.out_dims, tout.strides, c.box, c.swizzle)};
}

std::vector<RoundTrip> round_trips() {
  return {
      // 3-D float32: the load's box out of bounds in every dimension on both sides, the
      // store's past the end (the H100 refuses a store at a negative coordinate, and any
      // innermost coordinate that is not a multiple of 16 bytes).
      {dtypes::float32,
       {40, 7, 3},
       48,
       {8, 4, 2},
       Swizzle::None,
       {36, -2, 2},
       {36, 5, 1},
       {40, 7, 3}},
      {dtypes::bfloat16, {100, 20}, 128, {64, 8}, Swizzle::B128, {-16, -3}, {48, 15}, {96, 20}},
      {dtypes::bfloat16, {70, 9}, 80, {32, 4}, Swizzle::B64, {56, 7}, {40, 7}, {64, 9}},
      {dtypes::float16,
       {16, 5, 2, 3},
       16,
       {16, 2, 2, 2},
       Swizzle::B32,
       {0, 4, -1, 2},
       {0, 0, 1, 1},
       {16, 5, 2, 3}},
  };
}

void check_round_trip(const RoundTrip& c, const Tensor& in, const HostData& dense,
                      const Tensor& out) {
  int64_t count = dense.values.size();
  std::vector<double> want(static_cast<size_t>(count));
  for (int64_t e = 0; e < count; ++e) {
    int64_t i = in.at(box_coords(c.box, c.load, e));
    want[size_t(e)] = i < 0 ? 0.0 : in.data.values[size_t(i)];
  }
  expect_exact(dense, want);
  // The stored box: inside the out tensor, the box's element; elsewhere untouched (poison).
  std::vector<double> stored(out.data.values.size(), std::nan(""));
  for (int64_t e = 0; e < count; ++e)
    if (int64_t i = out.at(box_coords(c.box, c.store, e)); i >= 0)
      stored[size_t(i)] = want[size_t(e)];
  std::vector<std::string> bad;
  for (size_t i = 0; i < stored.size(); ++i) {
    double g = out.data.get(i);
    bool same = std::isnan(stored[i]) ? std::isnan(g) : g == stored[i];
    if (!same) bad.push_back("out[" + std::to_string(i) + "] = " + std::to_string(g));
  }
  report_elements(bad, stored.size());
}

TEST_P(Hopper, TmaRoundTripOfABoxPartlyOutOfBounds) {
  if (!dev->props().target.has(kFeatureTma)) GTEST_SKIP() << "no TMA here";
  for (const RoundTrip& c : round_trips()) {
    SCOPED_TRACE(std::string(c.dtype.name()) + " box rank " + std::to_string(c.box.size()) +
                 ", swizzle " + std::string(swizzle_name(c.swizzle)));
    Tensor in(c.dtype, c.dims, c.pitch, 61), out(c.dtype, c.out_dims, c.pitch, 0, true);
    int64_t count = 1;
    for (int64_t b : c.box) count *= b;
    HostData dense = HostData::poisoned(c.dtype, size_t(count));
    DeviceBuffer din(*dev, in.data), dout(*dev, out.data), ddense(*dev, dense);
    CompiledKernel k = compile_kernel(*dev, tma_round_trip_kernel(c.dtype, c.box, c.swizzle));
    std::vector<KernelArg> a = round_trip_args(c, ddense.buf, din.buf, in, dout.buf, out);
    k.run(bind_args(k.rendered.info, a, round_trip_vars(c)));
    ddense.read(dense);
    dout.read(out.data);
    check_round_trip(c, in, dense, out);
  }
}

// A graph records the round trip with one input; replayed with that buffer rebound, the
// tensor map is encoded afresh for the new buffer and the TMA load reads it.
TEST_P(Hopper, GraphReplayRebindsATensorMapsBuffer) {
  if (!dev->props().target.has(kFeatureTma)) GTEST_SKIP() << "no TMA here";
  RoundTrip c = round_trips()[1];
  Tensor first(c.dtype, c.dims, c.pitch, 62), second(c.dtype, c.dims, c.pitch, 63),
      out(c.dtype, c.out_dims, c.pitch, 0, true);
  HostData dense = HostData::poisoned(c.dtype, 64 * 8);
  DeviceBuffer d1(*dev, first.data), d2(*dev, second.data), dout(*dev, out.data),
      ddense(*dev, dense);
  CompiledKernel k = compile_kernel(*dev, tma_round_trip_kernel(c.dtype, c.box, c.swizzle));
  std::vector<KernelArg> a = round_trip_args(c, ddense.buf, d1.buf, first, dout.buf, out);
  auto g = dev->new_graph();
  k.record(*g, bind_args(k.rendered.info, a, round_trip_vars(c)));
  auto q = dev->new_queue();
  auto s = dev->new_signal(0);
  g->replay(*q);
  q->signal(*s, 1);
  q->submit();
  s->wait(1);
  ddense.read(dense);
  dout.read(out.data);
  check_round_trip(c, first, dense, out);
  std::vector<std::pair<Buffer, Buffer>> rebind = {{d1.buf, d2.buf}};
  g->replay(*q, rebind);
  q->signal(*s, 2);
  q->submit();
  s->wait(2);
  ddense.read(dense);
  dout.read(out.data);
  check_round_trip(c, second, dense, out);
}

// Each of three blocks writes its multiple of x into shared memory, fences it for the async
// proxy, and thread 0 adds it into out with one bulk reduction: out = y + 6x.
UOp bulk_reduce_kernel(int64_t n, bool fenced = true) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp b = special(SpecialKind::BlockIdx, 0, 3), t = special(SpecialKind::ThreadIdx, 0, 64);
  UOp row = define_local(f, n, 0, 128);
  UOp r = range((n + 63) / 64, 0, AxisKind::Loop);
  UOp i = r * 64 + t, live = i < n;
  UOp wrote = end(
      store(index(row, i, live), load(index(x, i, live), const_(f, 0.0)) * cast(b + 1, f)), {r});
  UOp published = fenced ? make_effect(Op::FENCE, {wrote}, std::string("proxy_async")) : wrote;
  UOp ready = make_effect(Op::BARRIER, {published});
  UOp first = UOp::make(Op::IF, {t < 1, ready});
  UOp added = make_effect(Op::BULK_REDUCE_ADD, {index(after(out, {first}), i32(0)),
                                                index(after(row, {first}), i32(0)), i32(n * 4)});
  UOp drained = make_effect(Op::BULK_WAIT, {make_effect(Op::BULK_COMMIT, {added})}, int64_t(0));
  return sink({UOp::make(Op::ENDIF, {first, drained})}, "bulk_reduce");
}

TEST_P(Hopper, BulkReduceAddAccumulatesIntoGlobalMemory) {
  if (!dev->props().target.has(kFeatureTma)) GTEST_SKIP() << "no bulk copies here";
  int64_t n = 100;
  HostData x = HostData::random(dtypes::float32, size_t(n), 65),
           y = HostData::random(dtypes::float32, size_t(n), 66);
  std::vector<double> want(static_cast<size_t>(n)), scale(static_cast<size_t>(n));
  for (size_t i = 0; i < want.size(); ++i) {
    want[i] = y.values[i] + 6 * x.values[i];
    scale[i] = std::fabs(y.values[i]) + 6 * std::fabs(x.values[i]);
  }
  DeviceBuffer dy(*dev, y), dx(*dev, x);
  compile_kernel(*dev, bulk_reduce_kernel(n)).run(args({&dy, &dx}));
  dy.read(y);
  expect_accumulated(y, want, scale, 4);
}

INSTANTIATE_TEST_SUITE_P(Devices, Hopper, testing::ValuesIn(block_devices()), test_name);

#ifndef KITTEN_CUDA_TESTS
// ---- the ceilings' kernels (timed by `kitten bench ceilings` on the GPU) ----------------

TEST(Ceilings, TheirKernelsComputeWhatTheBenchChecks) {
  auto dev = make_emu_device();
  auto floats = [&](Buffer buf, size_t n) {
    std::vector<float> v(n);
    dev->allocator().copy_out(v.data(), buf, n * 4);
    return v;
  };
  {  // mma.sync: per iteration i, 8 chains of j + 4 * 16 products of i % 2
    Buffer out = dev->allocator().alloc(2 * 256 * 4);
    compile_kernel(*dev, mma_sync_peak_kernel(2, 3)).run(std::vector<KernelArg>{out});
    for (float x : floats(out, 512)) ASSERT_EQ(x, 3 * 28 + 512.0f);
    dev->allocator().free(out);
  }
  {  // wgmma: both warpgroups run the same chains
    Buffer out = dev->allocator().alloc(256 * 4);
    compile_kernel(*dev, wgmma_peak_kernel(1, 2)).run(std::vector<KernelArg>{out});
    std::vector<float> v = floats(out, 256);
    for (size_t i = 0; i < 128; ++i) ASSERT_EQ(v[i], v[i + 128]) << i;
    dev->allocator().free(out);
  }
  for (bool mb : {true, false}) {  // both warps finish every turn
    Buffer out = dev->allocator().alloc(64 * 4);
    compile_kernel(*dev, mb ? mbarrier_ping_pong_kernel(5) : barrier_ping_pong_kernel(5))
        .run(std::vector<KernelArg>{out});
    for (float x : floats(out, 64)) ASSERT_EQ(x, 1.0f);
    dev->allocator().free(out);
  }
}

// A persistent grid: one block per SM of the target, each looping over its share of tiles
// (b, b + blocks, ...), streamed by TMA through a ring of mbarrier-guarded slots, or by
// cp.async; each block sums its tiles' first elements.
TEST(Ceilings, PersistentStreamsVisitEveryTileOfTheirBlock) {
  auto dev = make_emu_device();
  int64_t sms = dev->props().target.multiprocessors, per = 3, tiles = per * sms;
  int64_t rows = (tiles + 31) / 32 * 64;
  HostData in = HostData::random(dtypes::bfloat16, size_t(rows * 8192), 71);
  DeviceBuffer din(*dev, in);
  auto first = [&](int64_t blocks, int64_t b, int64_t n, int64_t elem) {
    double s = 0;
    for (int64_t j = 0; j < n; ++j) {
      int64_t g = b + j * blocks;
      s += in.values[size_t((g / 32 * 64 + elem / 256) * 8192 + g % 32 * 256 + elem % 256)];
    }
    return s;
  };
  HostData sums = HostData::poisoned(dtypes::float32, size_t(sms));
  DeviceBuffer dsums(*dev, sums);
  compile_kernel(*dev, tma_stream_kernel(sms, per, 2))
      .run(std::vector<KernelArg>{
          dsums.buf, make_tensor_map(din.buf, dtypes::bfloat16, {8192, rows}, {16384}, {256, 64})});
  dsums.read(sums);
  for (int64_t b = 0; b < sms; ++b)
    ASSERT_NEAR(sums.get(size_t(b)), first(sms, b, per, 0), 1e-4) << "block " << b;
  int64_t blocks = 4;
  HostData per_thread = HostData::poisoned(dtypes::float32, size_t(blocks * 256));
  DeviceBuffer dper(*dev, per_thread);
  compile_kernel(*dev, cp_async_stream_kernel(blocks, 2))
      .run(std::vector<KernelArg>{dper.buf, din.buf});
  dper.read(per_thread);
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t t : {0, 5, 255})
      ASSERT_NEAR(per_thread.get(size_t(b * 256 + t)), first(blocks, b, 2, t * 8), 1e-4)
          << "block " << b << " thread " << t;
}

// ---- the emulator's checks ------------------------------------------------------------

TEST(EmuHopperChecks, AWaitOnAPhaseThatCanNeverCompleteIsNamed) {
  // The consumer never frees a slot: the producer waits forever for slot 0 to empty.
  std::string e = emu_fault(ring_kernel(3, 2, false), {96, 96});
  EXPECT_NE(e.find("MBARRIER_WAIT %"), std::string::npos) << e;
  EXPECT_NE(e.find("thread (0,0,0) of block (0,0,0) waits for the phase of parity 0 of the "
                   "mbarrier in shared 1 at index 2, which is in phase 0 with 32 of 32 arrivals "
                   "and 0 transaction bytes outstanding; that phase can never complete (thread "
                   "(32,0,0) of block (0,0,0) waits at MBARRIER_WAIT %"),
            std::string::npos)
      << e;
  EXPECT_EQ(emu_fault(ring_kernel(3, 2), {96, 96}), "");
}

// Every lane of a warp arrives on a barrier initialised for one arrival.
UOp over_arrival_kernel(int64_t count) {
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp bars = init_mbarriers(t, define_local(dtypes::int64, 1, 1, 8), {count});
  UOp arrived = make_effect(Op::MBARRIER_ARRIVE, {index(bars, i32(0)), i32(0)});
  UOp waited = make_effect(Op::MBARRIER_WAIT, {index(bars, i32(0)), i32(0), arrived});
  UOp out = param(0, dtypes::float32.ptr());
  return sink({store(index(after(out, {waited}), t), const_(dtypes::float32, 1.0))}, "over");
}

TEST(EmuHopperChecks, ArrivingMoreTimesThanInitialisedIsAnError) {
  std::string e = emu_fault(over_arrival_kernel(1), {32});
  EXPECT_NE(e.find(": 32 threads arrive on the mbarrier in shared 1 at index 0, whose phase 0 has "
                   "1 arrivals left (initialised for 1), by thread (0,0,0) of block (0,0,0)"),
            std::string::npos)
      << e;
  EXPECT_EQ(emu_fault(over_arrival_kernel(32), {32}), "");
}

TEST(EmuHopperChecks, AnMbarrierUsedBeforeItsInitIsFencedIsAnError) {
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp bars = init_mbarriers(t, define_local(dtypes::int64, 1, 1, 8), {32}, false);
  UOp arrived = make_effect(Op::MBARRIER_ARRIVE, {index(bars, i32(0)), i32(0)});
  UOp out = param(0, dtypes::float32.ptr());
  std::string e = emu_fault(
      sink({store(index(after(out, {arrived}), t), const_(dtypes::float32, 1.0))}, "unfenced"),
      {32});
  EXPECT_NE(e.find("uses the mbarrier in shared 1 at index 0, initialised by thread (0,0,0) of "
                   "block (0,0,0) with no FENCE mbarrier_init after it, by thread (1,0,0)"),
            std::string::npos)
      << e;
}

TEST(EmuHopperChecks, ANamedBarrierThatTooFewThreadsReachIsNamed) {
  std::string e = emu_fault(named_pairs_kernel(96), {128, 128});
  EXPECT_NE(e.find("(named barrier 1 for 96 threads) is reached by thread (0,0,0) of block "
                   "(0,0,0) and only 64 threads in all, and can never open"),
            std::string::npos)
      << e;
}

TEST(EmuHopperChecks, SetmaxnregMustBeWarpgroupWide) {
  std::string e = emu_fault(setmaxnreg_kernel(false), {256, 256});
  EXPECT_NE(e.find("warps 0 and 1 of warpgroup 0 ran different SETMAXNREG sequences ([dec 40] and "
                   "[]"),
            std::string::npos)
      << e;
  // A block that is not whole warpgroups is refused before it runs.
  UOp t = special(SpecialKind::ThreadIdx, 0, 96);
  UOp out = param(0, dtypes::float32.ptr());
  UOp dec = make_effect(Op::SETMAXNREG, {}, std::vector<int64_t>{40, 0});
  e = emu_fault(sink({store(index(after(out, {dec}), t), const_(dtypes::float32, 1.0))}, "odd"),
                {96});
  EXPECT_NE(e.find("uses SETMAXNREG with 96 threads per block, which is not whole warpgroups"),
            std::string::npos)
      << e;
}

// The first node of `root` with this op (and kind, for FENCE).
UOp find_node(const UOp& root, Op op, const std::string& kind = "") {
  for (const UOp& u : toposort(root))
    if (u.op() == op && (kind.empty() || u.name_arg() == kind)) return u;
  ADD_FAILURE() << "no " << op_name(op);
  return {};
}
std::vector<size_t> tile_sizes(const WgmmaTile& o) {
  return {size_t(64 * o.n), size_t(32 * o.k), size_t(o.k * o.n / 2)};  // in float32 words
}

TEST(EmuHopperChecks, AWgmmaWithoutItsFenceIsAnError) {
  WgmmaTile o{.n = 16, .k = 32, .swizzle = Swizzle::B64, .a_in_registers = true};
  UOp k = wgmma_tile_kernel(o);
  UOp fence = find_node(k, Op::FENCE, "wgmma");
  std::string e = emu_fault(substitute(k, {{fence, find_node(k, Op::BARRIER)}}), tile_sizes(o));
  EXPECT_NE(e.find("reads registers written by ordinary instructions with no FENCE wgmma "
                   "between, by thread (0,0,0)"),
            std::string::npos)
      << e;
  EXPECT_EQ(emu_fault(k, tile_sizes(o)), "");
}

TEST(EmuHopperChecks, ReadingAnAccumulatorBeforeItsWaitIsAnError) {
  WgmmaTile o{.n = 16, .k = 32, .swizzle = Swizzle::B64};
  UOp k = wgmma_tile_kernel(o);
  UOp wait = find_node(k, Op::WGMMA_WAIT);
  std::string e = emu_fault(substitute(k, {{wait, wait.src(0)}}), tile_sizes(o));
  EXPECT_NE(e.find("reads the result of WGMMA %"), std::string::npos) << e;
  EXPECT_NE(e.find("before a WGMMA_WAIT lets it land, by thread (0,0,0)"), std::string::npos) << e;
  // A wait for a group that was never committed leaves it in flight.
  UOp commit = find_node(k, Op::WGMMA_COMMIT);
  UOp uncommitted = substitute(k, {{commit, find_node(k, Op::FENCE, "wgmma")}});
  e = emu_fault(uncommitted, tile_sizes(o));
  EXPECT_NE(e.find(", which is not committed, whose accumulator it returns"), std::string::npos)
      << e;
}

TEST(EmuHopperChecks, OrdinaryStoresReadByWgmmaNeedTheProxyFence) {
  WgmmaTile o{.n = 16, .k = 32, .swizzle = Swizzle::B32};
  UOp k = wgmma_tile_kernel(o);
  UOp fence = find_node(k, Op::FENCE, "proxy_async");
  UOp unfenced = substitute(k, {{fence, UOp::make(Op::GROUP, fence.src())}});
  std::string e = emu_fault(unfenced, tile_sizes(o));
  EXPECT_NE(e.find("reads through the async proxy what thread ("), std::string::npos) << e;
  EXPECT_NE(e.find("wrote with ordinary stores and no FENCE proxy_async since"), std::string::npos)
      << e;
}

TEST(EmuHopperChecks, ADescriptorMustNameItsAllocationsSwizzle) {
  WgmmaTile o{.n = 16, .k = 64, .swizzle = Swizzle::B128};
  UOp k = wgmma_tile_kernel(o);
  UOp sb;
  for (const UOp& u : toposort(k))
    if (u.op() == Op::DEFINE_LOCAL && u.slot() == 1) sb = u;
  UOp plain = define_local(o.in, sb.dtype().size(), 1, 1024, Swizzle::None);
  UOp wrong = substitute(k, {{sb, plain}});
  std::string e = emu_fault(wrong, tile_sizes(o));
  EXPECT_NE(e.find("'s B descriptor names swizzle 128B but shared 1 is laid out with none"),
            std::string::npos)
      << e;
  // The CUDA renderer refuses it before anything runs.
  EXPECT_NE(error_of([&] {
              render_cuda(linearize(wrong), nullptr);
            }).find("has a MATRIX_DESC naming swizzle 128B into shared memory laid out with none"),
            std::string::npos);
}

TEST(TensorMaps, WhatTheHardwareRefusesIsNamed) {
  std::vector<unsigned char> storage(1 << 16);
  Buffer b{storage.data() + (16 - reinterpret_cast<uintptr_t>(storage.data()) % 16) % 16, 60000};
  EXPECT_NE(error_of([&] {
              make_tensor_map(b, dtypes::bfloat16, {4095, 4}, {8190}, {64, 4}, Swizzle::B128);
            })
                .find("the stride of dimension 1 is 8190 bytes; TMA needs multiples of 16 (rows of "
                      "4095 bfloat16 take another path, or a padded copy)"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              make_tensor_map(b, dtypes::bfloat16, {4096, 4}, {8192}, {32, 4}, Swizzle::B128);
            }).find("a 128B swizzled box must be exactly that wide"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              make_tensor_map(b, dtypes::float32, {100, 200}, {400}, {8, 8});
            }).find("reaches byte 80000 of a buffer of 60000"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              make_tensor_map(b, dtypes::float32, {6}, {}, {6});
            }).find("inner extent is 24 bytes; TMA needs a multiple of 16"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              make_tensor_map({b.ptr, 64}, dtypes::float32, {1, 1, 1, 1, 1, 1},
                              {16, 16, 16, 16, 16}, {1, 1, 1, 1, 1, 1});
            }).find("rank 6 (TMA takes 1 to 5)"),
            std::string::npos);
  EXPECT_EQ(error_of([&] {
              make_tensor_map(b, dtypes::bfloat16, {4096, 4}, {8192}, {64, 4}, Swizzle::B128);
            }),
            "");
}

// The round trip's launch on the emulator, with one node of the kernel replaced.
std::string round_trip_fault(const std::vector<std::pair<UOp, UOp>>& replace,
                             std::function<UOp(const UOp&)> pick = {}) {
  RoundTrip c = round_trips()[1];
  UOp k = tma_round_trip_kernel(c.dtype, c.box, c.swizzle);
  std::vector<std::pair<UOp, UOp>> r = replace;
  if (pick) r.push_back({pick(k), UOp()});
  auto dev = make_emu_device();
  Tensor in(c.dtype, c.dims, c.pitch, 61), out(c.dtype, c.out_dims, c.pitch, 0, true);
  HostData dense = HostData::poisoned(c.dtype, 64 * 8);
  DeviceBuffer din(*dev, in.data), dout(*dev, out.data), ddense(*dev, dense);
  return error_of([&] {
    CompiledKernel ck = compile_kernel(*dev, replace.empty() ? k : substitute(k, replace));
    std::vector<KernelArg> a = round_trip_args(c, ddense.buf, din.buf, in, dout.buf, out);
    ck.run(bind_args(ck.rendered.info, a, round_trip_vars(c)));
  });
}

// Shared memory an asynchronous read still reads may not be written: a WGMMA's operands
// until its WGMMA_WAIT, a TMA store's tile until its BULK_WAIT.
TEST(EmuHopperChecks, OverwritingWhatAnAsyncReadStillReadsIsAnError) {
  WgmmaTile o{.n = 16, .k = 32, .swizzle = Swizzle::B64};
  UOp k = wgmma_tile_kernel(o);
  UOp wait = find_node(k, Op::WGMMA_WAIT), commit = find_node(k, Op::WGMMA_COMMIT), sb;
  for (const UOp& u : toposort(k))
    if (u.op() == Op::DEFINE_LOCAL && u.slot() == 1) sb = u;
  UOp early = store(index(after(sb, {commit}), i32(0)), const_(o.in, 1.0));
  UOp waited = UOp::make(Op::WGMMA_WAIT, wait.dtype(), {wait.src(0), early}, int64_t(0));
  std::string e = emu_fault(substitute(k, {{wait, waited}}), tile_sizes(o));
  EXPECT_NE(e.find("write to shared memory a WGMMA of the warp of thread (0,0,0) of block (0,0,0) "
                   "still reads (before its WGMMA_WAIT), in shared 1 at index 0 by thread (0,0,0)"),
            std::string::npos)
      << e;

  RoundTrip c = round_trips()[1];
  UOp rt = tma_round_trip_kernel(c.dtype, c.box, c.swizzle);
  UOp drained = find_node(rt, Op::BULK_WAIT), tile;
  for (const UOp& u : toposort(rt))
    if (u.op() == Op::DEFINE_LOCAL && u.slot() == 0) tile = u;
  UOp committed = drained.src(0);
  UOp rewrite = store(index(after(tile, {committed}), i32(0)), const_(c.dtype, 1.0));
  e = round_trip_fault({{drained, rewrite}});
  EXPECT_NE(e.find("write to shared memory a bulk copy (TMA store or reduction) by thread (0,0,0) "
                   "of block (0,0,0) still reads (before its BULK_WAIT), in shared 0 at index 0"),
            std::string::npos)
      << e;
  UOp after_wait = store(index(after(tile, {drained}), i32(0)), const_(c.dtype, 1.0));
  EXPECT_EQ(round_trip_fault({{drained, after_wait}}), "");
}

TEST(EmuHopperChecks, ReadingATmaTileBeforeItsPhaseCompletedIsAnError) {
  RoundTrip c = round_trips()[1];
  UOp k = tma_round_trip_kernel(c.dtype, c.box, c.swizzle);
  UOp wait = find_node(k, Op::MBARRIER_WAIT);
  // The readers order themselves after the issue, not after the wait.
  UOp issued = wait.src(0).src(0).src(1);  // the wait's barrier is after(ready, {issued})
  ASSERT_EQ(issued.op(), Op::ENDIF);
  std::string e = round_trip_fault({{wait, issued}});
  EXPECT_NE(e.find("read of a TMA copy's destination before its mbarrier phase completed in "
                   "shared 0 at index"),
            std::string::npos)
      << e;
  EXPECT_EQ(round_trip_fault({}), "");
}

TEST(EmuHopperChecks, TransactionBytesMustMatchWhatLands) {
  RoundTrip c = round_trips()[1];
  UOp k = tma_round_trip_kernel(c.dtype, c.box, c.swizzle);
  UOp arrive = find_node(k, Op::MBARRIER_ARRIVE);
  auto with_bytes = [&](int64_t bytes) {
    std::vector<UOp> src(arrive.src().begin(), arrive.src().end());
    src[1] = i32(bytes);
    return UOp::make(Op::MBARRIER_ARRIVE, dtypes::void_, std::span<const UOp>(src));
  };
  std::string e = round_trip_fault({{arrive, with_bytes(64 * 8 * 2 - 16)}});
  EXPECT_NE(e.find("completed phase 0's arrivals with 16 more transaction bytes landed than "
                   "expected (by thread (0,0,0)"),
            std::string::npos)
      << e;
  e = round_trip_fault({{arrive, with_bytes(64 * 8 * 2 + 16)}});
  EXPECT_NE(e.find("which is in phase 0 with 0 of 1 arrivals and 16 transaction bytes "
                   "outstanding; that phase can never complete"),
            std::string::npos)
      << e;
}

TEST(EmuHopperChecks, ATmaStoreAtANegativeCoordinateIsAnError) {
  // The H100 raises an illegal instruction for it (loads take negative coordinates).
  RoundTrip c = round_trips()[1];
  c.store = {-16, 3};
  UOp k = tma_round_trip_kernel(c.dtype, c.box, c.swizzle);
  auto dev = make_emu_device();
  Tensor in(c.dtype, c.dims, c.pitch, 61), out(c.dtype, c.out_dims, c.pitch, 0, true);
  HostData dense = HostData::poisoned(c.dtype, 64 * 8);
  DeviceBuffer din(*dev, in.data), dout(*dev, out.data), ddense(*dev, dense);
  CompiledKernel ck = compile_kernel(*dev, k);
  std::vector<KernelArg> a = round_trip_args(c, ddense.buf, din.buf, in, dout.buf, out);
  std::string e = error_of([&] { ck.run(bind_args(ck.rendered.info, a, round_trip_vars(c))); });
  EXPECT_NE(e.find("stores at coordinate -16 in dimension 0: a TMA store's box may run past the "
                   "tensor's end but not start before it"),
            std::string::npos)
      << e;
  // An innermost coordinate must be a multiple of 16 bytes, for loads too.
  c = round_trips()[1];
  c.load = {-10, -3};
  CompiledKernel again = compile_kernel(*dev, k);
  e = error_of([&] { again.run(bind_args(again.rendered.info, a, round_trip_vars(c))); });
  EXPECT_NE(e.find("TMA_LOAD %"), std::string::npos) << e;
  EXPECT_NE(e.find("'s innermost coordinate -10 is -20 bytes: the H100 takes multiples of 16"),
            std::string::npos)
      << e;
}

TEST(EmuHopperChecks, ATmaBoxMustLandInAnAllocationOfItsSwizzle) {
  RoundTrip c = round_trips()[1];
  UOp k = tma_round_trip_kernel(c.dtype, c.box, c.swizzle);
  UOp tile;
  for (const UOp& u : toposort(k))
    if (u.op() == Op::DEFINE_LOCAL && u.slot() == 0) tile = u;
  UOp plain = define_local(c.dtype, tile.dtype().size(), 0, 1024, Swizzle::None);
  std::string e = round_trip_fault({{tile, plain}});
  EXPECT_NE(e.find("moves a tensor map's box swizzled 128B through shared 0, laid out with none"),
            std::string::npos)
      << e;
}

TEST(EmuHopperChecks, ABulkCopyOfUnfencedStoresIsAnError) {
  std::string e = emu_fault(bulk_reduce_kernel(100, false), {100, 100});
  EXPECT_NE(e.find("BULK_REDUCE_ADD %"), std::string::npos) << e;
  EXPECT_NE(e.find("reads through the async proxy what thread (0,0,0) of block (0,0,0) wrote with "
                   "ordinary stores and no FENCE proxy_async since"),
            std::string::npos)
      << e;
  EXPECT_EQ(emu_fault(bulk_reduce_kernel(100), {100, 100}), "");
}

TEST(EmuHopperChecks, ATensorMapArgumentMustMatchTheKernel) {
  RoundTrip c = round_trips()[1];
  auto dev = make_emu_device();
  Tensor in(c.dtype, c.dims, c.pitch, 61);
  DeviceBuffer din(*dev, in.data);
  CompiledKernel k = compile_kernel(*dev, tma_round_trip_kernel(c.dtype, c.box, c.swizzle));
  std::vector<KernelArg> a = {
      din.buf, make_tensor_map(din.buf, c.dtype, c.dims, in.strides, {64, 4}, c.swizzle), din.buf};
  std::string e = error_of([&] { k.run(bind_args(k.rendered.info, a, round_trip_vars(c))); });
  EXPECT_NE(e.find("argument 1 is a tensor map of bfloat16 box 64x4 swizzle 128B; the kernel was "
                   "built for bfloat16 box 64x8 swizzle 128B"),
            std::string::npos)
      << e;
  // A map stored through must span whole 16-byte units of each row (rows of 100 bfloat16
  // are 200 bytes: the H100 writes up to byte 208 of each).
  a = {din.buf, make_tensor_map(din.buf, c.dtype, c.dims, in.strides, c.box, c.swizzle),
       make_tensor_map(din.buf, c.dtype, c.dims, in.strides, c.box, c.swizzle)};
  e = error_of([&] { k.run(bind_args(k.rendered.info, a, round_trip_vars(c))); });
  EXPECT_NE(e.find("argument 2 is stored through with rows of 200 bytes; the H100's TMA stores "
                   "write whole 16-byte units"),
            std::string::npos)
      << e;
}

TEST(EmuHopperChecks, ATargetWithoutMbarriersRefusesThem) {
  Target ampere = h100_target();
  ampere.arch = "sm_80";
  ampere.features &= ~uint32_t(kFeatureMbarrier);
  std::string e = emu_fault(ring_kernel(2, 2), {64, 64}, ampere);
  EXPECT_NE(e.find("uses MBARRIER_INIT, which the sm_80 profile lacks"), std::string::npos) << e;
  try {
    render_cuda(linearize(ring_kernel(2, 2)), &ampere);
    ADD_FAILURE() << "rendered";
  } catch (const BackendError& err) {
    EXPECT_NE(std::string(err.what()).find("uses MBARRIER_INIT, which sm_80 does not have"),
              std::string::npos)
        << err.what();
  }
}
#endif

}  // namespace
}  // namespace kitten
