// IF/ENDIF and ATOMIC on every device: divergent blocks against a float64 reference (bit
// for bit, the results are exact), atomics under contention (exact for integers), and the
// emulator's checks of barriers that only part of a block reaches and of plain accesses
// racing with atomics.
#include <cstring>
#include <numeric>

#include "backends/emu/emulator.h"
#include "dsl/swizzle.h"
#include "test_device.h"

namespace kitten {
namespace {

UOp i32(int64_t v) { return const_int(dtypes::int32, v); }
UOp f32(double v) { return const_(dtypes::float32, v); }
UOp both(UOp a, UOp b) { return UOp::make(Op::AND, {a, b}); }
UOp negate(UOp c) { return UOp::make(Op::XOR, {c, const_bool(true)}); }

// out[i] = x[i] < 0 ? -2*x[i] : x[i] + 1 as two IFs, the second holding a loop that runs
// i % 4 times (adding 0.25 each time), so lanes leave it at different iterations.
UOp if_kernel(int64_t n, bool threads) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp i, t;
  if (threads) {
    t = special(SpecialKind::ThreadIdx, 0, 96);
    i = special(SpecialKind::BlockIdx, 0, (n + 95) / 96) * 96 + t;
  } else {
    i = range(n, 0, AxisKind::Global);
  }
  UOp in = i < n;
  UOp xi = load(index(x, i, in), f32(0));
  UOp neg = UOp::make(Op::IF, {both(in, xi < f32(0))});
  UOp first = store(index(after(out, {neg}), i), xi * f32(-2));
  UOp done_neg = UOp::make(Op::ENDIF, {neg, first});
  UOp pos = UOp::make(Op::IF, {both(in, negate(xi < f32(0)))});
  UOp acc = define_reg(f, 1, 0);
  UOp init = store(index(after(acc, {pos}), i32(0)), xi + f32(1));
  UOp k = range(i % 4, 1, AxisKind::Loop);
  UOp acc_in = after(acc, {init, k});
  UOp step = end(store(index(acc_in, i32(0)), load(index(acc_in, i32(0))) + f32(0.25)), {k});
  UOp second = store(index(after(out, {pos}), i), load(index(after(acc, {step}), i32(0))));
  UOp done_pos = UOp::make(Op::ENDIF, {pos, second});
  UOp body = group({done_neg, done_pos});
  return sink({threads ? body : end(body, {i})}, threads ? "if_threads" : "if_loop");
}

std::vector<double> if_reference(const HostData& x) {
  std::vector<double> want(x.values.size());
  for (size_t i = 0; i < want.size(); ++i) {
    float v = float(x.values[i]), acc = v + 1.0f;  // float32 steps, as the kernel takes them
    for (size_t k = 0; k < i % 4; ++k) acc += 0.25f;
    want[i] = v < 0 ? double(-2.0f * v) : double(acc);
  }
  return want;
}

class Control : public DeviceTest {};

TEST_P(Control, DivergentIfBlocksAroundALoop) {
  for (int64_t n : {1, 37, 1001}) {
    SCOPED_TRACE(n);
    HostData x = HostData::random(dtypes::float32, size_t(n), uint64_t(50 + n));
    HostData out = HostData::poisoned(dtypes::float32, size_t(n));
    DeviceBuffer dx(*dev, x), dout(*dev, out);
    compile_kernel(*dev, if_kernel(n, false)).run(args({&dout, &dx}));
    dout.read(out);
    expect_exact(out, if_reference(x));
  }
}

// Raw integer buffers for the atomics.
template <class T>
struct Words {
  Device& dev;
  std::vector<T> host;
  Buffer buf;
  Words(Device& d, std::vector<T> init) : dev(d), host(std::move(init)) {
    buf = d.allocator().alloc(host.size() * sizeof(T));
    d.allocator().copy_in(buf, host.data(), host.size() * sizeof(T));
  }
  ~Words() { dev.allocator().free(buf); }
  std::vector<T> read() {
    dev.allocator().copy_out(host.data(), buf, host.size() * sizeof(T));
    return host;
  }
};

// Every iteration of one global range (the thread pool's threads on cpu, the grid on cuda)
// combines into the same few words.
TEST_P(Control, AtomicsUnderContention) {
  const int64_t n = 4099;
  DType i32t = dtypes::int32, u32 = dtypes::uint32, i64 = dtypes::int64, f = dtypes::float32;
  UOp ints = param(0, i32t.ptr()), uints = param(1, u32.ptr()), longs = param(2, i64.ptr()),
      floats = param(3, f.ptr()), halves = param(4, dtypes::float16.ptr()),
      bhalves = param(5, dtypes::bfloat16.ptr());
  UOp i = range(n, 0, AxisKind::Global);
  UOp hash = (i * 7919) % 10007 + -5000;
  auto atomic = [](UOp address, UOp value, AtomicOp op) {
    return UOp::make(Op::ATOMIC, dtypes::void_, {address, value}, op);
  };
  DType h2 = dtypes::float16.vec(2), b2 = dtypes::bfloat16.vec(2);
  UOp one_h = const_(dtypes::float16, 1), two_h = const_(dtypes::float16, -2);
  UOp one_b = const_(dtypes::bfloat16, 1), two_b = const_(dtypes::bfloat16, 2);
  std::vector<UOp> effects = {
      atomic(index(ints, i32(0)), i32(1), AtomicOp::Add),  // runs once per i all the same
      atomic(index(ints, i32(1)), hash, AtomicOp::Max),
      atomic(index(ints, i32(2)), hash, AtomicOp::Min),
      atomic(index(uints, i32(0)), cast(i, u32), AtomicOp::Add),
      atomic(index(longs, i32(0)), cast(i, i64) * 1000000007, AtomicOp::Add),
      atomic(index(floats, i32(0)), f32(1), AtomicOp::Add),
      // float16 counts exactly to 2048, bfloat16 to 256: only the first iterations add.
      atomic(UOp::make(Op::INDEX, h2.ptr(), {halves, i32(0), i < 1000}),
             UOp::make(Op::VECTORIZE, {one_h, two_h}), AtomicOp::Add),
      atomic(UOp::make(Op::INDEX, b2.ptr(), {bhalves, i32(0), i < 100}),
             UOp::make(Op::VECTORIZE, {one_b, two_b}), AtomicOp::Add),
  };
  UOp k = sink({end(UOp::make(Op::GROUP, std::span<const UOp>(effects)), {i})}, "atomics");
  Words<int32_t> wi(*dev, {0, INT32_MIN, INT32_MAX});
  Words<uint32_t> wu(*dev, {7});
  Words<int64_t> wl(*dev, {0});
  Words<float> wf(*dev, {0.5f});
  Words<uint16_t> wh(*dev, {0, 0}), wb(*dev, {0, 0});
  compile_kernel(*dev, k).run(
      std::vector<KernelArg>{wi.buf, wu.buf, wl.buf, wf.buf, wh.buf, wb.buf});
  int32_t hi = INT32_MIN, lo = INT32_MAX;
  uint32_t usum = 7;
  int64_t lsum = 0;
  for (int64_t v = 0; v < n; ++v) {
    hi = std::max(hi, int32_t((v * 7919) % 10007 - 5000));
    lo = std::min(lo, int32_t((v * 7919) % 10007 - 5000));
    usum += uint32_t(v);
    lsum += v * 1000000007;
  }
  EXPECT_EQ(wi.read(), (std::vector<int32_t>{int32_t(n), hi, lo}));
  EXPECT_EQ(wu.read()[0], usum);
  EXPECT_EQ(wl.read()[0], lsum);
  EXPECT_EQ(wf.read()[0], 0.5f + float(n));
  std::vector<uint16_t> h = wh.read(), b = wb.read();
  EXPECT_EQ(decode_float(kFloat16, h[0]), 1000.0);
  EXPECT_EQ(decode_float(kFloat16, h[1]), -2000.0);
  EXPECT_EQ(decode_float(kBFloat16, b[0]), 100.0);
  EXPECT_EQ(decode_float(kBFloat16, b[1]), 200.0);
}

// Effects outside the loops run once, however the device splits the loops (the cpu's
// thread pool, the GPU's grid): a top-level atomic beside a global loop, and two loops in
// sequence, the second reading what the first wrote.
TEST_P(Control, EffectsOutsideTheLoopsRunOnce) {
  const int64_t n = 1000;
  DType i32t = dtypes::int32;
  UOp count = param(0, i32t.ptr()), out = param(1, i32t.ptr());
  UOp once = UOp::make(Op::ATOMIC, dtypes::void_, {index(count, i32(0)), i32(1)}, AtomicOp::Add);
  UOp i = range(n, 0, AxisKind::Global), j = range(n, 1, AxisKind::Global);
  UOp first = end(store(index(out, i), i * 2), {i});
  UOp ready = after(out, {first});
  UOp second = end(UOp::make(Op::ATOMIC, dtypes::void_,
                             {index(count, i32(1)), load(index(ready, j))}, AtomicOp::Add),
                   {j});
  Words<int32_t> c(*dev, {0, 0}), o(*dev, std::vector<int32_t>(size_t(n), -1));
  compile_kernel(*dev, sink({once, second}, "once")).run(std::vector<KernelArg>{c.buf, o.buf});
  EXPECT_EQ(c.read(), (std::vector<int32_t>{1, int32_t(n * (n - 1))}));
}

// Vector ALU ops run lane by lane exactly as the scalar ops: float32x4 MAX then MUL,
// bfloat16x2 ADD (rounded once per lane), and uint16 products that wrap.
TEST_P(Control, VectorAndNarrowIntegerArithmetic) {
  const int64_t n = 64;
  DType f = dtypes::float32, v4 = f.vec(4), bf = dtypes::bfloat16, b2 = bf.vec(2),
        u16 = dtypes::uint16;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr()), y = param(2, f.ptr());
  UOp bout = param(3, bf.ptr()), bx = param(4, bf.ptr()), uout = param(5, u16.ptr()),
      ux = param(6, u16.ptr());
  UOp j = range(n / 4, 0, AxisKind::Global);
  auto at = [](UOp buf, DType vec, UOp i) { return UOp::make(Op::INDEX, vec.ptr(), {buf, i}); };
  UOp a = load(at(x, v4, j * 4)), b = load(at(y, v4, j * 4));
  UOp r = UOp::make(Op::MUL, {UOp::make(Op::MAX, {a, b}), b});
  UOp h = load(at(bx, b2, j * 2));
  UOp hs = UOp::make(Op::ADD, {h, h});
  UOp w = load(index(ux, j));
  UOp k = sink({end(group({store(at(out, v4, j * 4), r), store(at(bout, b2, j * 2), hs),
                           store(index(uout, j), w * w)}),
                    {j})},
               "vectors");
  HostData hx = HostData::random(f, n, 31), hy = HostData::random(f, n, 32),
           hb = HostData::random(bf, n / 2, 33);
  HostData ho = HostData::poisoned(f, n), hbo = HostData::poisoned(bf, n / 2);
  std::vector<uint16_t> words(n / 4);
  for (size_t i = 0; i < words.size(); ++i) words[i] = uint16_t(40000 + 1234 * i);
  DeviceBuffer dout(*dev, ho), dx(*dev, hx), dy(*dev, hy), dbo(*dev, hbo), dbx(*dev, hb);
  Words<uint16_t> uo(*dev, std::vector<uint16_t>(n / 4, 0)), ui(*dev, words);
  std::vector<KernelArg> kargs = {dout.buf, dx.buf, dy.buf, dbo.buf, dbx.buf, uo.buf, ui.buf};
  compile_kernel(*dev, k).run(kargs);
  dout.read(ho);
  dbo.read(hbo);
  std::vector<double> want(n), bwant(n / 2);
  for (size_t i = 0; i < want.size(); ++i) {
    float p = float(hx.values[i]), q = float(hy.values[i]);
    want[i] = double(std::fmax(p, q) * q);
  }
  for (size_t i = 0; i < bwant.size(); ++i)
    bwant[i] = decode_float(kBFloat16, encode_float(kBFloat16, 2 * hb.values[i]));
  expect_exact(ho, want);
  expect_exact(hbo, bwant);
  std::vector<uint16_t> got = uo.read();
  for (size_t i = 0; i < words.size(); ++i)
    EXPECT_EQ(got[i], uint16_t(uint32_t(words[i]) * words[i])) << i;
}

// Casts into narrow floats round once, as the evaluation table does: int32 to bfloat16
// (through float32 it would round twice), float64 to float16 and bfloat16 (a value just
// above a float16 midpoint that float32 would round onto it).
TEST_P(Control, CastsToNarrowFloatsRoundOnce) {
  DType i32t = dtypes::int32, f64 = dtypes::float64, bf = dtypes::bfloat16, h = dtypes::float16;
  std::vector<int32_t> ints = {16842753, -16842753, 33554431, 7};
  double above = 1 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  std::vector<double> doubles = {above, -above, 3.0, 65519.99};
  UOp i = range(4, 0, AxisKind::Global);
  UOp bi = param(0, bf.ptr()), hd = param(1, h.ptr()), bd = param(2, bf.ptr()),
      xi = param(3, i32t.ptr()), xd = param(4, f64.ptr());
  UOp di = load(index(xd, i));
  UOp k = sink({end(group({store(index(bi, i), cast(load(index(xi, i)), bf)),
                           store(index(hd, i), cast(di, h)), store(index(bd, i), cast(di, bf))}),
                    {i})},
               "casts");
  Words<uint16_t> obi(*dev, {0, 0, 0, 0}), ohd(*dev, {0, 0, 0, 0}), obd(*dev, {0, 0, 0, 0});
  Words<int32_t> wi(*dev, ints);
  Words<double> wd(*dev, doubles);
  compile_kernel(*dev, k).run(std::vector<KernelArg>{obi.buf, ohd.buf, obd.buf, wi.buf, wd.buf});
  std::vector<uint16_t> gbi = obi.read(), ghd = ohd.read(), gbd = obd.read();
  for (size_t n = 0; n < 4; ++n) {
    EXPECT_EQ(gbi[n], encode_float(kBFloat16, double(ints[n]))) << n;
    EXPECT_EQ(ghd[n], encode_float(kFloat16, doubles[n])) << n;
    EXPECT_EQ(gbd[n], encode_float(kBFloat16, doubles[n])) << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, Control, testing::ValuesIn(test_devices()), test_name);

class BlockControl : public DeviceTest {};

TEST_P(BlockControl, DivergentIfWithinWarps) {
  for (int64_t n : {50, 1001}) {
    SCOPED_TRACE(n);
    HostData x = HostData::random(dtypes::float32, size_t(n), uint64_t(70 + n));
    HostData out = HostData::poisoned(dtypes::float32, size_t(n));
    DeviceBuffer dx(*dev, x), dout(*dev, out);
    compile_kernel(*dev, if_kernel(n, true)).run(args({&dout, &dx}));
    dout.read(out);
    expect_exact(out, if_reference(x));
  }
}

// Each thread of each block adds 1 into a shared counter that thread 0 reset; after a
// barrier, thread 0 adds the block's count into the global total.
TEST_P(BlockControl, SharedAndGlobalAtomicsOfAGrid) {
  const int64_t blocks = 5, threads = 160;
  DType i32t = dtypes::int32;
  UOp out = param(0, i32t.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, threads);
  UOp b = special(SpecialKind::BlockIdx, 0, blocks);
  UOp counter = define_local(i32t, 1, 0);
  UOp first = UOp::make(Op::IF, {t < 1});
  UOp reset = UOp::make(Op::ENDIF, {first, store(index(after(counter, {first}), i32(0)), i32(0))});
  UOp ready = after(counter, {UOp::make(Op::BARRIER, dtypes::void_, {reset})});
  UOp added = UOp::make(Op::ATOMIC, dtypes::void_, {index(ready, i32(0)), b + 1}, AtomicOp::Add);
  UOp all_added = UOp::make(Op::BARRIER, dtypes::void_, {added});
  UOp counted = after(counter, {all_added});
  UOp last = UOp::make(Op::IF, {t < 1, all_added});  // after the barrier: a second IF
  UOp total =
      UOp::make(Op::ATOMIC, dtypes::void_,
                {index(after(out, {last}), i32(0)), load(index(after(counted, {last}), i32(0)))},
                AtomicOp::Add);
  UOp k = sink({UOp::make(Op::ENDIF, {last, total})}, "grid_count");
  Words<int32_t> w(*dev, {100});
  compile_kernel(*dev, k).run(std::vector<KernelArg>{w.buf});
  EXPECT_EQ(w.read()[0], 100 + threads * (1 + 2 + 3 + 4 + 5));
}

// A 16 x 64 bfloat16 tile through 128-byte-swizzled shared memory: written a quarter row per
// thread, read back a column per thread, both through swizzled_offset. The output must be
// the input bit for bit, and the emulator finds no two threads writing one byte (the
// swizzle permutes the tile).
TEST_P(BlockControl, SwizzledSharedTileRoundTrip) {
  DType bf = dtypes::bfloat16;
  UOp out = param(0, bf.ptr()), in = param(1, bf.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, 64);
  UOp tile = define_local(bf, 16 * 64, 0, swizzle_alignment(Swizzle::B128));
  auto at = [&](UOp row, UOp col) {  // element index of (row, col) in the swizzled tile
    return swizzled_offset(Swizzle::B128, row, col * 2) / 2;
  };
  std::vector<UOp> writes;
  UOp row = t / 4;
  for (int j = 0; j < 16; ++j) {
    UOp col = t % 4 * 16 + j;
    writes.push_back(store(index(tile, at(row, col)), load(index(in, row * 64 + col))));
  }
  UOp ready = after(tile, {UOp::make(Op::BARRIER, dtypes::void_, std::span<const UOp>(writes))});
  std::vector<UOp> reads;
  for (int j = 0; j < 16; ++j)
    reads.push_back(store(index(out, i32(j * 64) + t), load(index(ready, at(i32(j), t)))));
  UOp k = sink({UOp::make(Op::GROUP, std::span<const UOp>(reads))}, "swizzle");
  HostData x = HostData::random(bf, 16 * 64, 90), got = HostData::poisoned(bf, 16 * 64);
  DeviceBuffer dx(*dev, x), dout(*dev, got);
  CompiledKernel ck = compile_kernel(*dev, k);
  if (dev->props().name == "cuda") {
    EXPECT_NE(ck.rendered.source.find("__shared__ __align__(1024)"), std::string::npos);
  }
  ck.run(args({&dout, &dx}));
  dout.read(got);
  expect_exact(got, x.values);
}

INSTANTIATE_TEST_SUITE_P(Devices, BlockControl, testing::ValuesIn(block_devices()), test_name);

#ifndef KITTEN_CUDA_TESTS
// A barrier inside IF(t < limit) in a block of 64 threads.
UOp barrier_under_if(int64_t limit) {
  UOp t = special(SpecialKind::ThreadIdx, 0, 64);
  UOp out = param(0, dtypes::float32.ptr());
  UOp cond = UOp::make(Op::IF, {t < limit});
  UOp bar = UOp::make(Op::BARRIER, dtypes::void_, {cond});
  return sink({UOp::make(Op::ENDIF, {cond, store(index(after(out, {bar}), t), f32(1))})}, "div");
}

TEST(EmuChecks, BarrierInADivergentIfNamesBothPlaces) {
  std::string e = emu_fault(barrier_under_if(16), {64});
  EXPECT_NE(e.find("BARRIER %"), std::string::npos) << e;
  EXPECT_NE(e.find("is reached by thread (0,0,0) of block (0,0,0) but not by thread (16,0,0)"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("which skipped it at IF %"), std::string::npos) << e;
  EXPECT_NE(e.find("waits at ENDIF %"), std::string::npos) << e;
}

TEST(EmuChecks, BarrierSkippedByAWholeWarp) {
  std::string e = emu_fault(barrier_under_if(32), {64});
  EXPECT_NE(e.find("is reached by thread (0,0,0) of block (0,0,0) but thread (32,0,0) of block "
                   "(0,0,0) ran to the end of the kernel without it"),
            std::string::npos)
      << e;
  EXPECT_EQ(emu_fault(barrier_under_if(64), {64}), "");
}

TEST(EmuChecks, PlainWriteAfterAnAtomicIsARace) {
  UOp t = special(SpecialKind::ThreadIdx, 0, 2);
  UOp sm = define_local(dtypes::float32, 1, 0);
  UOp init = UOp::make(Op::BARRIER, dtypes::void_, {store(index(sm, i32(0), t < 1), f32(0))});
  UOp ready = after(sm, {init});
  UOp first = UOp::make(Op::IF, {t < 1});
  UOp atom = UOp::make(
      Op::ENDIF, {first, UOp::make(Op::ATOMIC, dtypes::void_,
                                   {index(after(ready, {first}), i32(0)), f32(1)}, AtomicOp::Add)});
  UOp second = UOp::make(Op::IF, {negate(t < 1)});
  UOp plain =
      UOp::make(Op::ENDIF, {second, store(index(after(ready, {second, atom}), i32(0)), f32(2))});
  std::string e = emu_fault(sink({plain}, "race"), {});
  EXPECT_NE(e.find("shared memory race: a write after an atomic by thread (0,0,0)"),
            std::string::npos)
      << e;
}

TEST(EmuChecks, SharedMemoryOverTheProfileIsRefused) {
  auto kernel = [](int64_t floats) {
    UOp t = special(SpecialKind::ThreadIdx, 0, 32);
    UOp sm = define_local(dtypes::float32, floats, 0);
    UOp out = param(0, dtypes::float32.ptr());
    UOp w = store(index(sm, t), f32(1));
    UOp r = load(index(after(sm, {UOp::make(Op::BARRIER, dtypes::void_, {w})}), t));
    return sink({store(index(out, t), r)}, "big");
  };
  EXPECT_EQ(emu_fault(kernel(227 * 256), {32}), "");  // 227 KiB: the H100's opt-in maximum
  std::string e = emu_fault(kernel(227 * 256 + 1), {32});
  EXPECT_NE(e.find("needs 232452 bytes of shared memory per block; the sm_90a profile allows "
                   "232448"),
            std::string::npos)
      << e;
  Target small = h100_target();
  small.arch = "small";
  small.shared_per_block_optin = 48 * 1024;
  e = emu_fault(kernel(16 * 1024), {32}, small);
  EXPECT_NE(e.find("the small profile allows 49152"), std::string::npos) << e;
}
#endif

}  // namespace
}  // namespace kitten
