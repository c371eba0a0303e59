// Kernels that need blocks of threads (shared memory, barriers, shuffles, MMA), on every
// device that runs blocks, and the emulator's checks: each fault a GPU would hide is
// reported with the kernel, buffer, index, thread and block.
#include <algorithm>
#include <functional>

#include "backends/c_renderer.h"
#include "backends/emu/emulator.h"
#include "dsl/linearize.h"
#include "dsl/lower.h"
#include "dsl/mma.h"
#include "kernels/examples.h"
#include "test_device.h"

namespace kitten {
namespace {

class BlockKernels : public DeviceTest {};

TEST_P(BlockKernels, SharedMemoryTiledMatmulWithBarriers) {
  for (auto [m, n, k, t] :
       std::vector<std::array<int64_t, 4>>{{8, 8, 8, 8}, {32, 48, 64, 16}, {24, 8, 40, 8}}) {
    SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + " tile " +
                 std::to_string(t));
    HostData a = HostData::random(dtypes::float32, size_t(m * k), 11),
             b = HostData::random(dtypes::float32, size_t(k * n), 12);
    std::vector<double> scale, want = matmul_reference(a, b, m, n, k, &scale);
    HostData c = HostData::poisoned(dtypes::float32, size_t(m * n));
    DeviceBuffer da(*dev, a), db(*dev, b), dc(*dev, c);
    CompiledKernel kern = compile_kernel(*dev, tiled_matmul_kernel(m, n, k, t));
    EXPECT_EQ(kern.rendered.info.global.x, n / t);
    EXPECT_EQ(kern.rendered.info.local.y, t);
    kern.run(args({&dc, &da, &db}));
    dc.read(c);
    expect_accumulated(c, want, scale, k);
  }
}

TEST_P(BlockKernels, BlockReductionWithShuffles) {
  for (int64_t n : {1, 7, 128, 1000, 1023}) {
    HostData x = HostData::random(dtypes::float32, size_t(n), 13);
    double s = 0, mag = 0;
    for (double v : x.values) s += v, mag += std::fabs(v);
    HostData out = HostData::poisoned(dtypes::float32, 1);
    DeviceBuffer dx(*dev, x), dout(*dev, out);
    CompiledKernel k = compile_kernel(*dev, block_sum_kernel(n));
    k.run(args({&dout, &dx}));
    dout.read(out);
    expect_accumulated(out, {s}, {mag}, n);
  }
}

// Two copies per thread in flight, waited for by count as a two-stage pipeline does:
// WAIT_GROUP 1 after both lands the older (the first stage is read while the second is in
// flight), WAIT_GROUP 0 the younger. out[t] = first[t] + second[t]; `early` reads the
// second stage before its wait.
UOp two_stage_kernel(bool early = false) {
  DType f = dtypes::float32;
  UOp t = special(SpecialKind::ThreadIdx, 0, 64);
  UOp sm = define_local(f, 128, 0), in = param(1, f.ptr()), out = param(0, f.ptr());
  UOp a = UOp::make(Op::ASYNC_COPY, dtypes::token, {index(sm, t), index(in, t)});
  UOp b =
      UOp::make(Op::ASYNC_COPY, dtypes::token, {index(after(sm, {a}), t + 64), index(in, t + 64)});
  UOp first = UOp::make(Op::WAIT_GROUP, dtypes::void_, {a, b}, int64_t(1));
  UOp x = load(index(after(sm, {first}), t));
  UOp second = UOp::make(Op::WAIT_GROUP, dtypes::void_, {b}, int64_t(0));
  UOp y = load(index(after(sm, {early ? first : second}), t + 64));
  return sink({store(index(out, t), x + y)}, "two_stage");
}

TEST_P(BlockKernels, AsyncCopiesWaitedForByCount) {
  HostData x = HostData::random(dtypes::float32, 128, 29),
           o = HostData::poisoned(dtypes::float32, 64);
  std::vector<double> want(64);
  for (size_t i = 0; i < 64; ++i) want[i] = x.values[i] + x.values[i + 64];
  DeviceBuffer dx(*dev, x), dout(*dev, o);
  std::vector<double> scale(64);
  for (size_t i = 0; i < 64; ++i) scale[i] = std::fabs(x.values[i]) + std::fabs(x.values[i + 64]);
  compile_kernel(*dev, two_stage_kernel()).run(args({&dout, &dx}));
  dout.read(o);
  expect_accumulated(o, want, scale, 2);
}

// ldmatrix x1, x2 and x4, plain and transposed: lane 8q+r addresses row r of matrix q;
// each lane's elements must be where the PTX ISA's description puts them (written out
// here independently of the emulator).
UOp ldmatrix_kernel(int count, bool trans) {
  DType bf = dtypes::bfloat16, f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, bf.ptr());
  UOp l = special(SpecialKind::ThreadIdx, 0, 32);
  UOp sm = define_local(bf, 256, 0);
  std::vector<UOp> staged;
  for (int j = 0; j < 8; ++j)
    staged.push_back(store(index(sm, l * 8 + j), load(index(x, l * 8 + j))));
  UOp ready = after(sm, {UOp::make(Op::BARRIER, dtypes::void_, std::span<const UOp>(staged))});
  UOp at =
      UOp::make(Op::INDEX, bf.vec(8).ptr(AddrSpace::Local), {ready, (l / 8) * 64 + (l % 8) * 8});
  UOp m = UOp::make(Op::LDMATRIX, {at}, std::vector<int64_t>{count, trans ? 1 : 0});
  std::vector<UOp> outs;
  for (int j = 0; j < 2 * count; ++j)
    outs.push_back(store(index(out, l * 8 + j),
                         cast(UOp::make(Op::EXTRACT, {m}, std::vector<int64_t>{j}), f)));
  return sink({outs.size() == 1 ? outs[0] : UOp::make(Op::GROUP, std::span<const UOp>(outs))},
              "ldmatrix");
}

TEST_P(BlockKernels, LdmatrixDistributesRowsAsThePtxTableSays) {
  HostData x = HostData::random(dtypes::bfloat16, 256, 31);
  for (int count : {1, 2, 4})
    for (bool trans : {false, true}) {
      SCOPED_TRACE("x" + std::to_string(count) + (trans ? ".trans" : ""));
      HostData o = HostData::poisoned(dtypes::float32, 256);
      DeviceBuffer dx(*dev, x), dout(*dev, o);
      compile_kernel(*dev, ldmatrix_kernel(count, trans)).run(args({&dout, &dx}));
      dout.read(o);
      for (int l = 0; l < 32; ++l)
        for (int j = 0; j < 2 * count; ++j) {
          int q = j / 2, h = j % 2;
          int at = trans ? q * 64 + (2 * (l % 4) + h) * 8 + l / 4
                         : q * 64 + (l / 4) * 8 + 2 * (l % 4) + h;
          ASSERT_EQ(o.get(size_t(l * 8 + j)), x.values[size_t(at)])
              << "lane " << l << " element " << j;
        }
    }
}

// stmatrix x1, x2, x4, plain and transposed: the value lane l holds for matrix q goes where
// the PTX description puts it (the inverse of the ldmatrix table above).
TEST_P(BlockKernels, StmatrixPlacesRowsAsThePtxTableSays) {
  if (!dev->props().target.has(kFeatureStmatrix)) GTEST_SKIP() << "no stmatrix on this target";
  DType bf = dtypes::bfloat16, f = dtypes::float32;
  HostData x = HostData::random(bf, 256, 34);
  for (int count : {1, 2, 4})
    for (bool trans : {false, true}) {
      SCOPED_TRACE("x" + std::to_string(count) + (trans ? ".trans" : ""));
      UOp out = param(0, f.ptr()), in = param(1, bf.ptr());
      UOp l = special(SpecialKind::ThreadIdx, 0, 32);
      UOp sm = define_local(bf, 256, 0);
      std::vector<UOp> vals, zero;
      for (int j = 0; j < 2 * count; ++j) vals.push_back(load(index(in, l * 8 + j)));
      for (int j = 0; j < 8; ++j) zero.push_back(store(index(sm, l * 8 + j), const_(bf, 0.0)));
      UOp cleared = after(sm, {UOp::make(Op::BARRIER, dtypes::void_, std::span<const UOp>(zero))});
      UOp v = UOp::make(Op::VECTORIZE, std::span<const UOp>(vals));
      UOp put = UOp::make(Op::STMATRIX, dtypes::void_,
                          {UOp::make(Op::INDEX, bf.vec(8).ptr(AddrSpace::Local),
                                     {cleared, (l / 8) * 64 + (l % 8) * 8}),
                           v},
                          std::vector<int64_t>{count, trans ? 1 : 0});
      UOp ready = after(sm, {UOp::make(Op::BARRIER, dtypes::void_, {put})});
      std::vector<UOp> outs;
      for (int j = 0; j < 8; ++j)
        outs.push_back(store(index(out, l * 8 + j), cast(load(index(ready, l * 8 + j)), f)));
      UOp k = sink({UOp::make(Op::GROUP, std::span<const UOp>(outs))}, "stmatrix");
      HostData o = HostData::poisoned(f, 256);
      DeviceBuffer dx(*dev, x), dout(*dev, o);
      compile_kernel(*dev, k).run(args({&dout, &dx}));
      dout.read(o);
      std::vector<double> want(256, 0.0);
      for (int lane = 0; lane < 32; ++lane)
        for (int j = 0; j < 2 * count; ++j) {
          int q = j / 2, h = j % 2;
          int at = trans ? q * 64 + (2 * (lane % 4) + h) * 8 + lane / 4
                         : q * 64 + (lane / 4) * 8 + 2 * (lane % 4) + h;
          want[size_t(at)] = x.values[size_t(lane * 8 + j)];
        }
      expect_exact(o, want);
    }
}

// A gated-off async copy reads nothing and writes zeros, as cp.async with src-size 0.
TEST_P(BlockKernels, GatedAsyncCopiesZeroFill) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp sm = define_local(f, 32, 0);
  UOp copy = UOp::make(Op::ASYNC_COPY, dtypes::token, {index(sm, t), index(x, t, t < 20)});
  UOp landed = UOp::make(Op::WAIT, dtypes::void_, {copy});
  UOp k = sink({store(index(out, t), load(index(after(sm, {landed}), t)))}, "zero_fill");
  HostData hx = HostData::random(f, 20, 32), o = HostData::poisoned(f, 32);
  DeviceBuffer dx(*dev, hx), dout(*dev, o);  // x has 20 elements: a read past them is caught
  compile_kernel(*dev, k).run(args({&dout, &dx}));
  dout.read(o);
  for (size_t i = 0; i < 32; ++i) EXPECT_EQ(o.get(i), i < 20 ? hx.values[i] : 0.0) << i;
}

// One warp multiplies one tile with mma: each lane loads its fragments at the addresses
// the PTX ISA gives (written out here from its tables, independently of dsl's maps), and
// the result must be A*B + C.
UOp mma_tile_kernel(const MmaLayout& L) {
  DType in = L.a.fragment.element(), f = dtypes::float32;
  UOp d = param(0, f.ptr()), a = param(1, in.ptr()), b = param(2, in.ptr()), c = param(3, f.ptr());
  UOp lane = special(SpecialKind::ThreadIdx, 0, 32);
  UOp group = lane / 4, pair = (lane % 4) * 2;
  auto a_at = [&](int i) {  // row: group (+8 for a2,a3,a6,a7); col: pair + (i&1) (+8 for i>=4)
    return (group + ((i / 2) % 2) * 8) * L.k + pair + (i % 2) + (i / 4) * 8;
  };
  auto b_at = [&](int i) { return (pair + (i % 2) + (i / 2) * 8) * L.n + group; };  // row k, col n
  auto c_at = [&](int i) { return (group + (i / 2) * 8) * L.n + pair + (i % 2); };
  std::vector<UOp> fa, fb, fc;
  for (int i = 0; i < L.a.fragment.count(); ++i) fa.push_back(load(index(a, a_at(i))));
  for (int i = 0; i < L.b.fragment.count(); ++i) fb.push_back(load(index(b, b_at(i))));
  for (int i = 0; i < L.c.fragment.count(); ++i) fc.push_back(load(index(c, c_at(i))));
  UOp acc = UOp::make(Op::MMA,
                      {UOp::make(Op::VECTORIZE, std::span<const UOp>(fa)),
                       UOp::make(Op::VECTORIZE, std::span<const UOp>(fb)),
                       UOp::make(Op::VECTORIZE, std::span<const UOp>(fc))},
                      L.name);
  std::vector<UOp> stores;
  for (int i = 0; i < L.c.fragment.count(); ++i)
    stores.push_back(
        store(index(d, c_at(i)), UOp::make(Op::EXTRACT, {acc}, std::vector<int64_t>{i})));
  return sink({UOp::make(Op::GROUP, std::span<const UOp>(stores))}, "mma_tile");
}

TEST_P(BlockKernels, MmaTileProductLaneByLane) {
  for (const char* name :
       {"m16n8k16_bf16_f32", "m16n8k16_f16_f32", "m16n8k8_bf16_f32", "m16n8k8_f16_f32"}) {
    SCOPED_TRACE(name);
    const MmaLayout& L = *find_mma_layout(name);
    DType in = L.a.fragment.element();
    HostData a = HostData::random(in, size_t(L.m * L.k), 14),
             b = HostData::random(in, size_t(L.k * L.n), 15);
    HostData c = HostData::random(dtypes::float32, size_t(L.m * L.n), 16);
    std::vector<double> want(size_t(L.m * L.n)), scale(want.size());
    for (int r = 0; r < L.m; ++r)
      for (int col = 0; col < L.n; ++col) {
        double acc = c.values[size_t(r * L.n + col)], mag = std::fabs(acc);
        for (int kk = 0; kk < L.k; ++kk) {
          double p = a.values[size_t(r * L.k + kk)] * b.values[size_t(kk * L.n + col)];
          acc += p;
          mag += std::fabs(p);
        }
        want[size_t(r * L.n + col)] = acc;
        scale[size_t(r * L.n + col)] = mag;
      }
    HostData d = HostData::poisoned(dtypes::float32, size_t(L.m * L.n));
    DeviceBuffer dd(*dev, d), da(*dev, a), db(*dev, b), dc(*dev, c);
    CompiledKernel k = compile_kernel(*dev, mma_tile_kernel(L));
    k.run(args({&dd, &da, &db, &dc}));
    dd.read(d);
    // Lane by lane: every element was written (no NaN left from the poison) and is right.
    expect_accumulated(d, want, scale, L.k + 1);
  }
}

TEST_P(BlockKernels, TensorCoreMatmulThroughSharedMemory) {
  for (auto [m, n, k] :
       std::vector<std::array<int64_t, 3>>{{16, 8, 16}, {48, 24, 64}, {32, 64, 160}}) {
    SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k));
    HostData a = HostData::random(dtypes::bfloat16, size_t(m * k), 21),
             b = HostData::random(dtypes::bfloat16, size_t(k * n), 22);
    std::vector<double> scale, want = matmul_reference(a, b, m, n, k, &scale);
    HostData c = HostData::poisoned(dtypes::float32, size_t(m * n));
    DeviceBuffer da(*dev, a), db(*dev, b), dc(*dev, c);
    compile_kernel(*dev, mma_matmul_kernel(m, n, k)).run(args({&dc, &da, &db}));
    dc.read(c);
    expect_accumulated(c, want, scale, k);
  }
}

// An async copy of 16-byte vectors into shared memory, read back after its WAIT and a
// BARRIER by another thread (the block's reversal): out[t] = in[n-1-t] per vector.
TEST_P(BlockKernels, AsyncCopyLandsAtItsWait) {
  DType f = dtypes::float32, v4 = f.vec(4);
  const int64_t threads = 64;
  UOp t = special(SpecialKind::ThreadIdx, 0, threads);
  UOp sm = define_local(f, threads * 4, 0), in = param(1, f.ptr()), out = param(0, f.ptr());
  UOp copy = UOp::make(Op::ASYNC_COPY, dtypes::token,
                       {UOp::make(Op::INDEX, v4.ptr(AddrSpace::Local), {sm, t * 4}),
                        UOp::make(Op::INDEX, v4.ptr(), {in, t * 4})});
  UOp landed = UOp::make(Op::BARRIER, dtypes::void_, {UOp::make(Op::WAIT, dtypes::void_, {copy})});
  UOp mirror = (t * -1 + (threads - 1)) * 4;
  std::vector<UOp> stores;
  for (int e = 0; e < 4; ++e)
    stores.push_back(store(index(out, t * 4 + e), load(index(after(sm, {landed}), mirror + e))));
  UOp k = sink({UOp::make(Op::GROUP, std::span<const UOp>(stores))}, "async_reverse");
  HostData x = HostData::random(f, threads * 4, 23), o = HostData::poisoned(f, threads * 4);
  std::vector<double> want(static_cast<size_t>(threads * 4));
  for (int64_t i = 0; i < threads; ++i)
    for (int e = 0; e < 4; ++e)
      want[size_t(i * 4 + e)] = x.values[size_t((threads - 1 - i) * 4 + e)];
  DeviceBuffer dx(*dev, x), dout(*dev, o);
  compile_kernel(*dev, k).run(args({&dout, &dx}));
  dout.read(o);
  EXPECT_EQ(rel_error(o, want), 0.0);
}

// 64 KiB of shared memory: more than the 48 KiB a static allocation may take on CUDA.
TEST_P(BlockKernels, MoreThan48KiBOfSharedMemory) {
  DType f = dtypes::float32;
  const int64_t threads = 256, per = 64;
  UOp t = special(SpecialKind::ThreadIdx, 0, threads);
  UOp sm = define_local(f, threads * per, 0), in = param(1, f.ptr()), out = param(0, f.ptr());
  std::vector<UOp> writes;
  for (int e = 0; e < per; ++e)
    writes.push_back(store(index(sm, t * per + e), load(index(in, t * per + e))));
  UOp written = UOp::make(Op::BARRIER, dtypes::void_, std::span<const UOp>(writes));
  UOp other = ((t + 1) % threads) * per + (per - 1);  // the last element of the next thread's part
  UOp k = sink({store(index(out, t), load(index(after(sm, {written}), other)))}, "big_shared");
  HostData x = HostData::random(f, threads * per, 24), o = HostData::poisoned(f, threads);
  std::vector<double> want(static_cast<size_t>(threads));
  for (int64_t i = 0; i < threads; ++i)
    want[size_t(i)] = x.values[size_t(((i + 1) % threads) * per + per - 1)];
  DeviceBuffer dx(*dev, x), dout(*dev, o);
  CompiledKernel ck = compile_kernel(*dev, k);
  ck.run(args({&dout, &dx}));
  dout.read(o);
  EXPECT_EQ(rel_error(o, want), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Devices, BlockKernels, testing::ValuesIn(block_devices()), test_name);

#ifndef KITTEN_CUDA_TESTS
UOp i32(int64_t v) { return const_int(dtypes::int32, v); }

// ---- the fragment maps, against the PTX ISA's tables --------------------------------------

TEST(MmaLayouts, FragmentMapsMatchThePtxTables) {
  const MmaLayout& k16 = *find_mma_layout("m16n8k16_bf16_f32");
  // Lane 5: groupID 1, threadID_in_group 1.
  std::vector<std::pair<int, int>> a5 = {{1, 2},  {1, 3},  {9, 2},  {9, 3},
                                         {1, 10}, {1, 11}, {9, 10}, {9, 11}};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(k16.a.at(5, i), a5[size_t(i)]) << i;
  std::vector<std::pair<int, int>> b5 = {{2, 1}, {3, 1}, {10, 1}, {11, 1}};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(k16.b.at(5, i), b5[size_t(i)]) << i;
  std::vector<std::pair<int, int>> c30 = {
      {7, 4}, {7, 5}, {15, 4}, {15, 5}};  // lane 30: group 7, tig 2
  for (int i = 0; i < 4; ++i) EXPECT_EQ(k16.c.at(30, i), c30[size_t(i)]) << i;
  const MmaLayout& k8 = *find_mma_layout("m16n8k8_f16_f32");
  std::vector<std::pair<int, int>> a31 = {
      {7, 6}, {7, 7}, {15, 6}, {15, 7}};  // lane 31: group 7, tig 3
  for (int i = 0; i < 4; ++i) EXPECT_EQ(k8.a.at(31, i), a31[size_t(i)]) << i;
  EXPECT_EQ(k8.b.at(31, 0), (std::pair<int, int>{6, 7}));
  EXPECT_EQ(k8.b.at(31, 1), (std::pair<int, int>{7, 7}));
  // wgmma m64nNk16 (PTX figures "WGMMA .m64nNk16 register fragment layout"): warp w of
  // the warpgroup holds rows 16w..16w+15; thread 37 is warp 1, lane 5 (group 1, tig 1).
  const MmaLayout& w = *find_mma_layout("wgmma_m64n24k16_bf16_rs");
  std::vector<std::pair<int, int>> wa37 = {{17, 2},  {17, 3},  {25, 2},  {25, 3},
                                           {17, 10}, {17, 11}, {25, 10}, {25, 11}};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(w.a.at(37, i), wa37[size_t(i)]) << i;
  // D: four elements per 8-column block, d4..d7 in columns 8..15; thread 127 is warp 3,
  // lane 31 (group 7, tig 3): rows 55 and 63.
  std::vector<std::pair<int, int>> wd127 = {{55, 6},  {55, 7},  {63, 6},  {63, 7},
                                            {55, 14}, {55, 15}, {63, 14}, {63, 15},
                                            {55, 22}, {55, 23}, {63, 22}, {63, 23}};
  for (int i = 0; i < 12; ++i) EXPECT_EQ(w.c.at(127, i), wd127[size_t(i)]) << i;
  EXPECT_EQ(w.c.at(0, 2), (std::pair<int, int>{8, 0}));
  EXPECT_EQ(find_mma_layout("wgmma_m64n12k16_bf16_rs"), nullptr);  // N a multiple of 8
  EXPECT_EQ(find_mma_layout("wgmma_m64n264k16_bf16_ss"), nullptr);
  EXPECT_EQ(find_mma_layout("wgmma_m64n64k16_bf16_sr"), nullptr);
  EXPECT_EQ(find_mma_layout("wgmma_m64n256k16_f16_ss")->c.fragment, dtypes::float32.vec(128));
  // Every element of every register matrix is held by exactly one (thread, i).
  for (const MmaLayout* L : mma_layouts()) {
    std::set<std::pair<int, int>> a, b, c;
    for (int l = 0; l < L->group_threads; ++l) {
      for (int i = 0; L->a.home == OperandHome::Registers && i < L->a.fragment.count(); ++i)
        a.insert(L->a.at(l, i));
      for (int i = 0; L->b.home == OperandHome::Registers && i < L->b.fragment.count(); ++i)
        b.insert(L->b.at(l, i));
      for (int i = 0; i < L->c.fragment.count(); ++i) c.insert(L->c.at(l, i));
    }
    if (L->a.home == OperandHome::Registers) {
      EXPECT_EQ(a.size(), size_t(L->m * L->k)) << L->name;
    }
    if (L->b.home == OperandHome::Registers) {
      EXPECT_EQ(b.size(), size_t(L->k * L->n)) << L->name;
    }
    EXPECT_EQ(c.size(), size_t(L->m * L->n)) << L->name;
  }
}

// A layout whose fragments hold an element twice (and another never) is refused.
TEST(MmaLayouts, RegistrationChecksEveryElementIsHeldOnce) {
  const MmaLayout& k8 = *find_mma_layout("m16n8k8_f16_f32");
  MmaLayout twice = k8;
  twice.name = "test_twice";
  twice.b.col = const_int(dtypes::int32, 0);  // every thread's B elements in column 0
  try {
    register_mma_layout(twice);
    FAIL() << "registered";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("of B where another thread's already is"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(find_mma_layout("test_twice"), nullptr);
}

// ---- the emulator's checks ------------------------------------------------------------------

TEST(EmuChecks, OutOfBoundsWrite) {
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp out = param(0, dtypes::float32.ptr());
  std::string e =
      emu_fault(sink({store(index(out, t), const_(dtypes::float32, 1.0))}, "oob"), {31});
  EXPECT_NE(e.find("emu: kernel 'oob': out-of-bounds write of 4 bytes (the buffer has 31 elements) "
                   "in param 0 "
                   "at index 31 by thread (31,0,0) of block (0,0,0)"),
            std::string::npos)
      << e;
}

TEST(EmuChecks, MisalignedVectorLoad) {
  DType f = dtypes::float32;
  UOp t = special(SpecialKind::ThreadIdx, 0, 1);
  UOp in = param(1, f.ptr()), out = param(0, f.ptr());
  UOp v = load(UOp::make(Op::INDEX, f.vec(4).ptr(), {in, t + 1}));
  UOp k = sink({store(index(out, t), UOp::make(Op::EXTRACT, {v}, std::vector<int64_t>{0}))},
               "misaligned");
  std::string e = emu_fault(k, {4, 16});
  EXPECT_NE(
      e.find("misaligned 16-byte read (byte offset 4) in param 1 at index 1 by thread (0,0,0)"),
      std::string::npos)
      << e;
  // At index 4 the same load is aligned and runs.
  UOp ok =
      sink({store(index(out, t),
                  UOp::make(Op::EXTRACT, {load(UOp::make(Op::INDEX, f.vec(4).ptr(), {in, t + 4}))},
                            std::vector<int64_t>{0}))},
           "aligned");
  EXPECT_EQ(emu_fault(ok, {4, 16}), "");
}

TEST(EmuChecks, ReadOfSharedMemoryNeverWritten) {
  DType f = dtypes::float32;
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp sm = define_local(f, 32, 0), out = param(0, f.ptr());
  std::string e = emu_fault(sink({store(index(out, t), load(index(sm, t)))}, "uninit"), {32});
  EXPECT_NE(e.find("read of shared memory never written in shared 0 at index 0 by thread (0,0,0) "
                   "of block (0,0,0)"),
            std::string::npos)
      << e;
}

TEST(EmuChecks, ReadOfRegisterMemoryNeverWritten) {
  DType f = dtypes::float32;
  UOp reg = define_reg(f, 2, 0), out = param(0, f.ptr());
  std::string e =
      emu_fault(sink({store(index(out, i32(0)), load(index(reg, i32(1))))}, "uninit_reg"), {1});
  EXPECT_NE(e.find("read of register memory never written in register buffer 0 at index 1"),
            std::string::npos)
      << e;
}

// Each thread writes its slot, then reads its neighbour's: without a BARRIER between, a race.
UOp neighbour_kernel(bool with_barrier) {
  DType f = dtypes::float32;
  UOp t = special(SpecialKind::ThreadIdx, 0, 64);
  UOp sm = define_local(f, 64, 0), in = param(1, f.ptr()), out = param(0, f.ptr());
  UOp wrote = store(index(sm, t), load(index(in, t)));
  UOp dep = with_barrier ? UOp::make(Op::BARRIER, dtypes::void_, {wrote}) : wrote;
  UOp read = load(index(after(sm, {dep}), (t + 1) % 64));
  return sink({store(index(out, t), read)}, with_barrier ? "neighbour_synced" : "neighbour_race");
}

TEST(EmuChecks, SharedMemoryRaceWithoutABarrier) {
  std::string e = emu_fault(neighbour_kernel(false), {64, 64});
  EXPECT_NE(e.find("shared memory race: a read after a write by thread (1,0,0) of block (0,0,0) "
                   "with no barrier "
                   "between, in shared 0 at index 1 by thread (0,0,0)"),
            std::string::npos)
      << e;
  EXPECT_EQ(emu_fault(neighbour_kernel(true), {64, 64}), "");
}

// An async copy into shared memory, read back before (fault) and after (fine) its WAIT.
UOp async_kernel(bool wait) {
  DType f = dtypes::float32;
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp sm = define_local(f, 32, 0), in = param(1, f.ptr()), out = param(0, f.ptr());
  UOp copy = UOp::make(Op::ASYNC_COPY, dtypes::token, {index(sm, t), index(in, t)});
  UOp dep =
      wait ? UOp::make(Op::BARRIER, dtypes::void_, {UOp::make(Op::WAIT, dtypes::void_, {copy})})
           : copy;
  return sink({store(index(out, t), load(index(after(sm, {dep}), t)))},
              wait ? "async_waited" : "async_early");
}

TEST(EmuChecks, ReadOfAnAsyncCopyBeforeItsWait) {
  std::string e = emu_fault(async_kernel(false), {32, 32});
  EXPECT_NE(e.find("read of an async copy's destination before its WAIT in shared 0 at index 0 by "
                   "thread (0,0,0)"),
            std::string::npos)
      << e;
  // With the WAIT (and a barrier) the copy has landed: out == in.
  auto dev = make_emu_device();
  HostData in = HostData::random(dtypes::float32, 32, 18),
           out = HostData::poisoned(dtypes::float32, 32);
  DeviceBuffer din(*dev, in), dout(*dev, out);
  compile_kernel(*dev, async_kernel(true)).run(args({&dout, &din}));
  dout.read(out);
  EXPECT_EQ(rel_error(out, in.values), 0.0);
}

TEST(EmuChecks, WriteToAnAsyncCopysDestinationBeforeItsWait) {
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp in = param(1, dtypes::float32.ptr()), out = param(0, dtypes::float32.ptr());
  UOp sm = define_local(dtypes::float32, 32, 0);
  UOp token = UOp::make(Op::ASYNC_COPY, dtypes::token, {index(sm, t), index(in, t)});
  UOp overwrite = store(index(after(sm, {token}), t), const_(dtypes::float32, 2.0));
  UOp landed = UOp::make(Op::WAIT, dtypes::void_, {token});
  UOp k = sink({store(index(out, t), load(index(after(sm, {overwrite, landed}), t)))}, "clobber");
  std::string e = emu_fault(k, {32, 32});
  EXPECT_NE(e.find("write to an async copy's destination before its WAIT in shared 0 at index 0 "
                   "by thread (0,0,0)"),
            std::string::npos)
      << e;
}

// A copy into a slot that another thread still reads in the same epoch: the copy may land
// before that read, so without a BARRIER between the read and the copy it is a race, seen
// where the copy is issued (not only at its WAIT, which a later barrier would hide).
UOp reuse_kernel(bool with_barrier) {
  DType f = dtypes::float32;
  UOp t = special(SpecialKind::ThreadIdx, 0, 64);
  UOp in = param(1, f.ptr()), out = param(0, f.ptr());
  UOp sm = define_local(f, 64, 0);
  UOp init = store(index(sm, t), load(index(in, t)));
  UOp ready = after(sm, {UOp::make(Op::BARRIER, dtypes::void_, {init})});
  UOp read = load(index(ready, t % 32 + 32));  // both warps read the second warp's slots
  UOp kept = store(index(out, t), read);
  UOp dep = with_barrier ? UOp::make(Op::BARRIER, dtypes::void_, {kept}) : kept;
  UOp token = UOp::make(Op::ASYNC_COPY, dtypes::token, {index(after(sm, {dep}), t), index(in, t)});
  UOp landed = UOp::make(Op::WAIT, dtypes::void_, {token});
  UOp again = load(index(after(sm, {landed}), t));
  return sink({store(index(after(out, {kept}), t), again)},
              with_barrier ? "reuse_synced" : "reuse_race");
}

TEST(EmuChecks, AsyncCopyIntoASlotAnotherThreadStillReads) {
  std::string e = emu_fault(reuse_kernel(false), {64, 64});
  EXPECT_NE(e.find("async copy into shared memory: shared memory race: a write after a read by "
                   "several threads with no barrier between, in shared 0 at index 32 by thread "
                   "(32,0,0)"),
            std::string::npos)
      << e;
  EXPECT_EQ(emu_fault(reuse_kernel(true), {64, 64}), "");
}

// Reading the second stage after WAIT_GROUP 1 (which leaves it in flight) is caught at the
// read; an N that waits for nothing is refused when the node is made.
TEST(EmuChecks, ReadOfACopyAWaitGroupLeftInFlight) {
  std::string e = emu_fault(two_stage_kernel(true), {64, 128});
  EXPECT_NE(e.find("read of an async copy's destination before its WAIT in shared 0 at index 64 "
                   "by thread (0,0,0)"),
            std::string::npos)
      << e;
  EXPECT_EQ(emu_fault(two_stage_kernel(), {64, 128}), "");
  UOp sm = define_local(dtypes::float32, 32, 0), in = param(1, dtypes::float32.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp a = UOp::make(Op::ASYNC_COPY, dtypes::token, {index(sm, t), index(in, t)});
  EXPECT_THROW(UOp::make(Op::WAIT_GROUP, dtypes::void_, {a}, int64_t(1)), IrError);
}

// Commit groups: two groups of two copies; WAIT_GROUP 1 lands the older group only, so
// reading the younger before WAIT_GROUP 0 is caught; a copy never committed is not waited
// for by WAIT_GROUP 0 (cp.async.wait_group concerns committed groups), so reading it is
// caught too. out[t] = x[t] + x[t+32] + x[t+64] + x[t+96].
UOp grouped_kernel(bool early, bool uncommitted) {
  DType f = dtypes::float32;
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp sm = define_local(f, 128, 0), in = param(1, f.ptr()), out = param(0, f.ptr());
  auto copy = [&](int k) {
    return UOp::make(Op::ASYNC_COPY, dtypes::token, {index(sm, t + 32 * k), index(in, t + 32 * k)});
  };
  UOp g1 = UOp::make(Op::ASYNC_COMMIT, dtypes::token, {copy(0), copy(1)});
  UOp c2 = copy(2), c3 = copy(3);
  UOp g2 = uncommitted ? UOp::make(Op::ASYNC_COMMIT, dtypes::token, {c2, g1})
                       : UOp::make(Op::ASYNC_COMMIT, dtypes::token, {c2, c3, g1});
  UOp first = UOp::make(Op::WAIT_GROUP, dtypes::void_, {g1, g2}, int64_t(1));
  UOp older = after(sm, {first});
  UOp all = UOp::make(Op::WAIT_GROUP, dtypes::void_,
                      uncommitted ? std::vector<UOp>{g2, c3} : std::vector<UOp>{g2}, int64_t(0));
  UOp younger = after(sm, {early ? first : all});
  UOp sum = load(index(older, t)) + load(index(older, t + 32)) + load(index(younger, t + 64)) +
            load(index(younger, t + 96));
  return sink({store(index(out, t), sum)}, "grouped");
}

TEST_P(BlockKernels, CommitGroupsAreWaitedForByCount) {
  HostData x = HostData::random(dtypes::float32, 128, 33),
           o = HostData::poisoned(dtypes::float32, 32);
  std::vector<double> want(32), scale(32);
  for (size_t i = 0; i < 32; ++i)
    for (size_t k = 0; k < 4; ++k)
      want[i] += x.values[i + 32 * k], scale[i] += std::fabs(x.values[i + 32 * k]);
  DeviceBuffer dx(*dev, x), dout(*dev, o);
  compile_kernel(*dev, grouped_kernel(false, false)).run(args({&dout, &dx}));
  dout.read(o);
  expect_accumulated(o, want, scale, 4);
}

TEST(EmuChecks, CommitGroupsLeftInFlightAreCaught) {
  EXPECT_EQ(emu_fault(grouped_kernel(false, false), {32, 128}), "");
  std::string e = emu_fault(grouped_kernel(true, false), {32, 128});
  EXPECT_NE(e.find("read of an async copy's destination before its WAIT"), std::string::npos) << e;
  e = emu_fault(grouped_kernel(false, true), {32, 128});
  EXPECT_NE(e.find("read of an async copy's destination before its WAIT in shared 0 at index 96"),
            std::string::npos)
      << e;
}

TEST(EmuChecks, IntegerDivisionByZero) {
  UOp t = special(SpecialKind::ThreadIdx, 0, 4);
  UOp out = param(0, dtypes::float32.ptr());
  UOp k = sink({store(index(out, i32(8) / (t + -2)), const_(dtypes::float32, 1.0))}, "div0");
  std::string e = emu_fault(k, {8});
  EXPECT_NE(e.find("integer division by zero by thread (2,0,0) of block (0,0,0)"),
            std::string::npos)
      << e;
}

TEST(EmuChecks, LaunchShapeMustMatchTheKernel) {
  auto dev = make_emu_device();
  CompiledKernel k = compile_kernel(*dev, block_sum_kernel(10));
  HostData x = HostData::random(dtypes::float32, 10, 19),
           out = HostData::poisoned(dtypes::float32, 1);
  DeviceBuffer dx(*dev, x), dout(*dev, out);
  std::vector<KernelArg> a = {dout.buf, dx.buf};
  try {
    k.program->launch({1, 1, 1}, {64, 1, 1}, a);
    FAIL() << "ran";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("needs a grid of 1x1x1 blocks of 128x1x1 threads"),
              std::string::npos)
        << e.what();
  }
}

// ---- shared-memory banks ----------------------------------------------------------------

// One warp writes shared memory at lane*stride (vectors of `width` float32), waits at a
// barrier and reads it back at read(lane): the emulator's bank statistics for the run.
EmuStats bank_stats(int64_t stride, int width, std::function<UOp(UOp)> read, bool async = false) {
  DType f = dtypes::float32, v = width == 1 ? f : f.vec(width);
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp sm = define_local(f, 32 * 32 * 4, 0), in = param(1, f.ptr()), out = param(0, f.ptr());
  auto at = [&](UOp buf, UOp i) { return UOp::make(Op::INDEX, v.ptr(AddrSpace::Local), {buf, i}); };
  UOp value = width == 1
                  ? load(index(in, t))
                  : UOp::make(Op::VECTORIZE, std::vector<UOp>(size_t(width), load(index(in, t))));
  UOp wrote = store(at(sm, t * stride), value);
  if (async) {  // the same write as an async copy from global memory, waited for
    UOp src = UOp::make(Op::INDEX, v.ptr(), {in, t * 0});
    UOp token = UOp::make(Op::ASYNC_COPY, dtypes::token, {at(sm, t * stride), src});
    wrote = UOp::make(Op::WAIT_GROUP, dtypes::void_, {token}, int64_t(0));
  }
  UOp synced = after(sm, {UOp::make(Op::BARRIER, dtypes::void_, {wrote})});
  UOp got = load(at(synced, read(t)));
  if (width > 1) got = UOp::make(Op::EXTRACT, {got}, std::vector<int64_t>{0});
  UOp k = sink({store(index(out, t), got)}, "banks");
  auto dev = make_emu_device();
  DeviceBuffer dout(*dev, HostData::poisoned(f, 32)), din(*dev, HostData::random(f, 32, 5));
  auto compiled = emu_compile(linearize(k));
  LaunchDims grid, block;
  emu_launch_dims(*compiled, grid, block);
  std::vector<KernelArg> a = {dout.buf, din.buf};
  EmuStats st;
  emu_run(*compiled, grid, block, a, &st);
  return st;
}

// Counts written out by hand from the bank rule (32 banks of 4 bytes; 8-byte accesses per
// half-warp, 16-byte accesses per quarter-warp), for one store and one load each.
TEST(EmuBanks, ConflictsAreCountedAsTheHardwareSerialisesThem) {
  struct Want {
    const char* name;
    int64_t stride;
    int width;
    std::function<UOp(UOp)> read;
    uint64_t wavefronts, conflicts;
  };
  std::vector<Want> cases = {
      // a row of 32 floats: one bank each, one pass for the store and one for the load
      {"row", 1, 1, [](UOp t) { return t; }, 2, 0},
      // a column of an unswizzled 32x32 f32 tile: every lane in bank 0, 32-way both times
      {"column", 32, 1, [](UOp t) { return t * 32; }, 64, 62},
      // stride 2: lanes l and l+16 share a bank: 2-way
      {"stride 2", 2, 1, [](UOp t) { return t * 2; }, 4, 2},
      // every lane reads one word: a broadcast, one pass
      {"broadcast", 1, 1, [](UOp) { return const_int(dtypes::int32, 0); }, 2, 0},
      // 8-byte vectors, contiguous: two half-warp passes of 128 bytes each, no conflict
      {"float2 contiguous", 2, 2, [](UOp t) { return t * 2; }, 4, 0},
      // 16-byte vectors, contiguous: four quarter-warp passes, no conflict
      {"float4 contiguous", 4, 4, [](UOp t) { return t * 4; }, 8, 0},
      // 16-byte vectors 128 bytes apart: each quarter-warp's 8 lanes hit banks 0-3 with
      // distinct words: 8 passes per quarter, 32 per access instead of 4
      {"float4 stride 128B", 32, 4, [](UOp t) { return t * 32; }, 64, 56},
  };
  for (const Want& w : cases) {
    SCOPED_TRACE(w.name);
    EmuStats st = bank_stats(w.stride, w.width, w.read);
    EXPECT_EQ(st.shared_accesses, 2u);
    EXPECT_EQ(st.shared_wavefronts, w.wavefronts);
    EXPECT_EQ(st.bank_conflicts, w.conflicts);
  }
  // Async copies write shared memory through the same banks, counted at their issue.
  for (const Want& w : cases) {
    SCOPED_TRACE(std::string("async ") + w.name);
    EmuStats st = bank_stats(w.stride, w.width, w.read, true);
    EXPECT_EQ(st.shared_accesses, 2u);
    EXPECT_EQ(st.shared_wavefronts, w.wavefronts);
    EXPECT_EQ(st.bank_conflicts, w.conflicts);
  }
}

TEST(EmuChecks, RunsAreDeterministic) {
  auto dev = make_emu_device();
  HostData x = HostData::random(dtypes::float32, 1000, 20);
  HostData o1 = HostData::poisoned(dtypes::float32, 1), o2 = HostData::poisoned(dtypes::float32, 1);
  DeviceBuffer dx(*dev, x), d1(*dev, o1), d2(*dev, o2);
  CompiledKernel k = compile_kernel(*dev, block_sum_kernel(1000));
  k.run(args({&d1, &dx}));
  k.run(args({&d2, &dx}));
  d1.read(o1);
  d2.read(o2);
  EXPECT_EQ(o1.bytes, o2.bytes);
  EXPECT_EQ(emu_fault(neighbour_kernel(false), {64, 64}),
            emu_fault(neighbour_kernel(false), {64, 64}));
}

#endif

// The MMA layouts a device runs are the Target's: a profile without them refuses the
// tensor-core kernel by name, and the renderer does the same for CUDA.
TEST(EmuProfile, AnMmaLayoutTheTargetLacksIsRefused) {
  Target t = h100_target();
  t.mma.clear();
  std::string e = emu_fault(mma_matmul_kernel(16, 8, 16), {16 * 8, 16 * 16 / 2, 16 * 8 / 2}, t);
  EXPECT_NE(e.find("uses MMA m16n8k16_bf16_f32, which the sm_90a profile does not have"),
            std::string::npos)
      << e;
  EXPECT_EQ(emu_fault(mma_matmul_kernel(16, 8, 16), {16 * 8, 16 * 16 / 2, 16 * 8 / 2}), "");
  try {
    render_cuda(linearize(lower(mma_matmul_kernel(16, 8, 16), t)), &t);
    ADD_FAILURE() << "rendered";
  } catch (const BackendError& err) {
    EXPECT_NE(std::string(err.what()).find("which sm_90a does not have"), std::string::npos)
        << err.what();
  }
}

}  // namespace
}  // namespace kitten
