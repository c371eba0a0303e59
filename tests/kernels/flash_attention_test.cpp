// The tile-DSL flash-attention forward against a float64 reference computed from the
// inputs as the kernel reads them (rounded to bf16/f16): O and LSE, at awkward sizes,
// Nq != Nkv, causal (bottom-right) and not, D 32/64/128, grouped-query heads, per-batch key
// lengths (0 among them), strided Q and O, several schedules; refused shapes and schedules.
#include "kernels/flash_attention_fwd.h"

#include <cmath>
#include <cstring>

#include "../backends/test_device.h"

namespace kitten {
namespace {

class FlashAttention : public DeviceTest {};

// Q, K, V and O in the layout the shape's strides give; sizes of their buffers.
int64_t span(const int64_t* stride, int64_t b, int64_t h, int64_t n, int d) {
  return (b - 1) * stride[0] + (h - 1) * stride[1] + (n - 1) * stride[2] + d;
}

struct Call {
  AttentionProblem p;
  AttentionShape s;
  Schedule schedule;
  std::vector<int32_t> lengths;  // with p.key_lengths
};

// Checks one call; with `kernel`, through that compiled kernel (else one compiled here).
void check_attention(Device& dev, const Call& r, uint64_t seed, CompiledKernel* kernel = nullptr) {
  const AttentionProblem& p = r.p;
  const AttentionShape& s = r.s;
  SCOPED_TRACE(p.to_string() + " shape " + s.to_string() + " schedule '" + r.schedule.to_string() +
               "'");
  const int d = p.d;
  HostData q = HostData::random(p.in, size_t(span(s.q_stride, s.b, s.h, s.nq, d)), seed),
           k = HostData::random(p.in, size_t(span(s.k_stride, s.b, s.hkv, s.nkv, d)), seed + 1),
           v = HostData::random(p.in, size_t(span(s.v_stride, s.b, s.hkv, s.nkv, d)), seed + 2);
  HostData o = HostData::poisoned(p.out, size_t(span(s.o_stride, s.b, s.h, s.nq, d)));
  HostData lse = HostData::poisoned(dtypes::float32, size_t(s.b * s.h * s.nq));
  HostData lens(dtypes::int32, size_t(s.b));
  if (p.key_lengths) std::memcpy(lens.bytes.data(), r.lengths.data(), lens.bytes.size());

  // The reference, and per output the bound of docs/testing.md.
  const double scale = p.softmax_scale(),
               u_in = std::ldexp(1.0, -(p.in.narrow_float()->man_bits + 1));
  auto at = [&](const int64_t* st, int64_t b, int64_t h, int64_t i) {
    return size_t(b * st[0] + h * st[1] + i * st[2]);
  };
  std::vector<size_t> o_at;
  std::vector<double> o_want, o_bound, lse_want, lse_bound;
  for (int64_t b = 0; b < s.b; ++b)
    for (int64_t h = 0; h < s.h; ++h)
      for (int64_t i = 0; i < s.nq; ++i) {
        int64_t hk = h / (s.h / s.hkv);
        int64_t keys = p.key_lengths ? std::min<int64_t>(s.nkv, r.lengths[size_t(b)]) : s.nkv;
        std::vector<double> score(size_t(s.nkv), -INFINITY);
        double m = -INFINITY, worst = 0;  // worst: the largest sum |q k| * scale of the row
        for (int64_t j = 0; j < keys; ++j) {
          if (p.mask == AttentionMask::Causal && j > i + s.nkv - s.nq) continue;
          double dot = 0, mag = 0;
          for (int c = 0; c < d; ++c) {
            double t = q.values[at(s.q_stride, b, h, i) + size_t(c)] *
                       k.values[at(s.k_stride, b, hk, j) + size_t(c)];
            dot += t, mag += std::abs(t);
          }
          score[size_t(j)] = dot * scale;
          m = std::max(m, score[size_t(j)]);
          worst = std::max(worst, mag * scale);
        }
        double l = 0;
        for (double x : score) l += std::isinf(x) ? 0 : std::exp(x - m);
        // Scores carry f32 rounding (D products, the scale), exp2's error and the sums'.
        double e = (d + 4) * std::ldexp(1.0, -24) * worst + (s.nkv + 8) * std::ldexp(1.0, -24);
        for (int c = 0; c < d; ++c) {
          double sum = 0, mag = 0;
          for (int64_t j = 0; j < s.nkv; ++j) {
            if (std::isinf(score[size_t(j)])) continue;
            double pj = std::exp(score[size_t(j)] - m) / l,
                   vj = v.values[at(s.v_stride, b, hk, j) + size_t(c)];
            sum += pj * vj, mag += pj * std::abs(vj);
          }
          o_at.push_back(at(s.o_stride, b, h, i) + size_t(c));
          o_want.push_back(l > 0 ? sum : 0.0);
          // P is rounded to the input dtype before P @ V: u_in of each term.
          o_bound.push_back(ulp(p.out, sum) + (u_in + 2 * e) * mag);
        }
        double want = l > 0 ? m + std::log(l) : INFINITY;
        lse_want.push_back(want);
        lse_bound.push_back(l > 0 ? 4 * ulp(dtypes::float32, want) + 2 * e : 0);
      }

  DeviceBuffer dq(dev, q), dk(dev, k), dv(dev, v), dout(dev, o), dlse(dev, lse), dlen(dev, lens);
  try {
    CompiledKernel own;
    if (!kernel)
      own = compile_kernel(dev, flash_attention_fwd_kernel(p, r.schedule, dev.props().target));
    CompiledKernel& ck = kernel ? *kernel : own;
    std::vector<KernelArg> params = args({&dout, &dlse});
    for (auto [slot, buf] : {std::pair{2, &dq}, std::pair{3, &dk}, std::pair{4, &dv}}) {
      tiles::TensorLayout l = flash_attention_operand_layout(p, s, slot);  // maps for TMA
      params.push_back(tensor_arg(ck.rendered.info, slot, buf->buf, l.dims, l.strides));
    }
    if (p.key_lengths) params.push_back(dlen.buf);
    ck.run(bind_args(ck.rendered.info, params, flash_attention_fwd_vars(p, s)));
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  dout.read(o);
  dlse.read(lse);
  std::vector<std::string> bad;
  for (size_t n = 0; n < o_at.size(); ++n) {
    double g = o.get(o_at[n]);
    if (std::abs(g - o_want[n]) <= o_bound[n]) continue;  // false for NaN
    bad.push_back("O element " + std::to_string(o_at[n]) + " is " + std::to_string(g) + ", want " +
                  std::to_string(o_want[n]) + " within " + std::to_string(o_bound[n]));
  }
  report_elements(bad, o_at.size());
  bad.clear();
  for (size_t n = 0; n < lse_want.size(); ++n) {
    double g = lse.get(n);
    if (g == lse_want[n] || std::abs(g - lse_want[n]) <= lse_bound[n]) continue;
    bad.push_back("LSE element " + std::to_string(n) + " is " + std::to_string(g) + ", want " +
                  std::to_string(lse_want[n]) + " within " + std::to_string(lse_bound[n]));
  }
  report_elements(bad, lse_want.size());
}

Call call(int64_t b, int64_t h, int64_t hkv, int64_t nq, int64_t nkv, int d, bool causal = false) {
  Call r;
  r.p.d = d;
  r.p.mask = causal ? AttentionMask::Causal : AttentionMask::None;
  r.s = AttentionShape::contiguous(b, h, hkv, nq, nkv, d);
  return r;
}

const Schedule kSmall = Schedule::parse("BQ=32 BKV=32 WARPS=2 STAGES=2 WGMMA=0");

TEST_P(FlashAttention, SquareSizesCausalAndNot) {
  uint64_t seed = 100;
  for (int64_t n : {1, 17, 64, 100})
    for (bool causal : {false, true}) {
      Call r = call(1, 2, 2, n, n, 64, causal);
      r.schedule = kSmall;
      check_attention(*dev, r, seed += 3);
    }
  for (bool causal : {false, true})  // the default schedule
    check_attention(*dev, call(1, 1, 1, 257, 257, 64, causal), seed += 3);
}

TEST_P(FlashAttention, QueriesAndKeysOfDifferentLengths) {
  uint64_t seed = 200;
  for (auto [nq, nkv] : std::vector<std::pair<int64_t, int64_t>>{{1, 300}, {17, 64}, {100, 33}})
    for (bool causal : {false, true}) {
      Call r = call(1, 1, 1, nq, nkv, 32, causal);
      r.schedule = kSmall;
      check_attention(*dev, r, seed += 3);
    }
}

TEST_P(FlashAttention, HeadDimensionsAndDtypes) {
  uint64_t seed = 300;
  for (int d : {32, 64, 128}) check_attention(*dev, call(1, 1, 1, 40, 72, d), seed += 3);
  Call h = call(1, 1, 1, 50, 70, 64, true);
  h.p.in = h.p.out = dtypes::float16;
  check_attention(*dev, h, seed += 3);
  Call f = call(1, 1, 1, 33, 47, 128);
  f.p.out = dtypes::float32;
  f.p.scale = 0.3;
  check_attention(*dev, f, seed += 3);
}

TEST_P(FlashAttention, GroupedQueryHeadsAndKeyLengths) {
  Call g = call(2, 4, 1, 20, 45, 64, true);  // H/Hkv = 4
  g.schedule = kSmall;
  check_attention(*dev, g, 400);
  Call k = call(3, 2, 2, 24, 40, 32);
  k.p.key_lengths = true;
  k.lengths = {40, 0, 13};  // batch 1 sees no key: O = 0, LSE = +inf
  k.schedule = kSmall;
  check_attention(*dev, k, 403);
  k.p.mask = AttentionMask::Causal;
  check_attention(*dev, k, 406);
}

TEST_P(FlashAttention, StridedQAndO) {
  // Q and O as (B, N, H, D) tensors seen through a permutation, as the front end passes them.
  Call r = call(2, 3, 3, 30, 41, 64);
  int64_t b = 2, h = 3, n = 30, d = 64;
  int64_t bnhd[3] = {n * h * d, d, h * d};
  std::copy(bnhd, bnhd + 3, r.s.q_stride);
  std::copy(bnhd, bnhd + 3, r.s.o_stride);
  r.s.k_stride[2] = 2 * d;  // K rows with a gap between them
  r.s.k_stride[1] = 41 * 2 * d, r.s.k_stride[0] = 3 * 41 * 2 * d;
  r.schedule = kSmall;
  (void)b;
  check_attention(*dev, r, 500);
}

// Sizes, strides and key lengths are kernel arguments: one compiled kernel serves a
// prefill, a decode step and another batch and head count, and its grid follows them.
TEST_P(FlashAttention, OneCompiledKernelServesEveryShape) {
  Call r = call(1, 1, 1, 1, 1, 64, true);
  r.p.key_lengths = true;
  r.schedule = kSmall;
  CompiledKernel k =
      compile_kernel(*dev, flash_attention_fwd_kernel(r.p, r.schedule, dev->props().target));
  uint64_t seed = 700;
  for (auto [b, h, hkv, nq, nkv] : std::vector<std::array<int64_t, 5>>{
           {2, 4, 2, 70, 70}, {2, 4, 2, 1, 71}, {3, 2, 1, 33, 90}}) {
    Call c = r;
    c.s = AttentionShape::contiguous(b, h, hkv, nq, nkv, 64);
    c.lengths.assign(size_t(b), int32_t(nkv));
    c.lengths[0] = int32_t(nkv / 2);
    check_attention(*dev, c, seed += 3, &k);
  }
}

TEST_P(FlashAttention, ScheduleWithMoreStagesAndWarps) {
  Call r = call(1, 1, 1, 130, 200, 64, true);
  r.schedule = Schedule::parse("BQ=64 BKV=32 WARPS=4 STAGES=3 WGMMA=0");
  check_attention(*dev, r, 600);
}

// The Hopper schedule (TMA ring, producer and consumer warpgroups, wgmma) takes everything
// the mma.sync kernel does: GQA, key lengths, causal, Nq != Nkv, strided views, a small
// BKV and more stages, and one compiled kernel for several shapes.
TEST_P(FlashAttention, HopperScheduleTakesEveryCase) {
  const Target& t = dev->props().target;
  if (!t.has(kFeatureWgmma) || !t.has(kFeatureTma))
    GTEST_SKIP() << dev->props().name << " has no wgmma and TMA (" << t.arch << ")";
  uint64_t seed = 800;
  Schedule one = Schedule::parse("BQ=64 BKV=64 WARPS=4 STAGES=3 WGMMA=1");
  Call g = call(2, 4, 1, 20, 45, 64, true);  // H/Hkv = 4
  g.schedule = one;
  check_attention(*dev, g, seed += 3);
  Call k = call(3, 2, 2, 24, 40, 32);
  k.p.key_lengths = true;
  k.lengths = {40, 0, 13};
  k.schedule = one;
  check_attention(*dev, k, seed += 3);
  Call r = call(2, 3, 3, 30, 41, 64);  // Q and O as (B, N, H, D); K rows with gaps
  int64_t h = 3, n = 30, d = 64;
  int64_t bnhd[3] = {n * h * d, d, h * d};
  std::copy(bnhd, bnhd + 3, r.s.q_stride);
  std::copy(bnhd, bnhd + 3, r.s.o_stride);
  r.s.k_stride[2] = 2 * d;
  r.s.k_stride[1] = 41 * 2 * d, r.s.k_stride[0] = 3 * 41 * 2 * d;
  r.schedule = Schedule::parse("WGMMA=1 BKV=32 STAGES=4 PV=1");
  check_attention(*dev, r, seed += 3);
  Call pv = call(2, 4, 2, 33, 100, 64, true);  // P V under the next softmax: causal, GQA
  pv.schedule = Schedule::parse("WGMMA=1 BKV=32 PV=1");
  check_attention(*dev, pv, seed += 3);
  pv.schedule = Schedule::parse("WGMMA=1 BKV=32 PV=1 PINGPONG=1");  // the warpgroups take turns
  check_attention(*dev, pv, seed += 3);
  Call d128 = call(3, 2, 2, 24, 150, 128);  // D128's default on Hopper (PV=1): key lengths,
  d128.p.key_lengths = true;                // one batch with none
  d128.lengths = {150, 0, 77};
  EXPECT_EQ(flash_attention_fwd_full_schedule(d128.p, {}, t).knob_or("PV", 0), 1);
  check_attention(*dev, d128, seed += 3);
  Call c = call(1, 1, 1, 1, 1, 128, true);
  c.schedule = Schedule::parse("WGMMA=1");
  CompiledKernel ck =
      compile_kernel(*dev, flash_attention_fwd_kernel(c.p, c.schedule, dev->props().target));
  for (auto [nq, nkv] :
       std::vector<std::pair<int64_t, int64_t>>{{100, 300}, {300, 100}, {1, 129}}) {
    c.s = AttentionShape::contiguous(1, 2, 2, nq, nkv, 128);
    check_attention(*dev, c, seed += 3, &ck);
  }
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Devices, FlashAttention, testing::ValuesIn(block_devices()), test_name);

namespace {

TEST(FlashAttentionProblem, BadShapesAndSchedulesAreRefusedWithTheirReason) {
  AttentionProblem p;
  AttentionShape s = AttentionShape::contiguous(1, 6, 4, 10, 10, 128);
  EXPECT_NE(error_of([&] { flash_attention_fwd_vars(p, s); }).find("H must be a multiple of Hkv"),
            std::string::npos);
  s = AttentionShape::contiguous(1, 2, 2, 10, 10, 128);
  s.q_stride[2] = 129;
  EXPECT_NE(error_of([&] { flash_attention_fwd_vars(p, s); }).find("q's row stride 129"),
            std::string::npos);
  Target t = h100_target();
  p.d = 96;
  EXPECT_NE(error_of([&] { flash_attention_fwd_kernel(p, {}, t); }).find("D is 32, 64 or 128"),
            std::string::npos);
  p.d = 128;
  EXPECT_NE(error_of([&] {
              flash_attention_fwd_kernel(p, Schedule::parse("BQ=48 WARPS=4"), t);
            }).find("BQ must be a positive multiple of 16*WARPS"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              flash_attention_fwd_kernel(p, Schedule::parse("BK=64"), t);
            }).find("not a knob"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              flash_attention_fwd_kernel(p, Schedule::parse("BQ=256 BKV=128 WARPS=4 STAGES=4"), t);
            }).find("shared memory"),
            std::string::npos);
}

}  // namespace
}  // namespace kitten
