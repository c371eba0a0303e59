#include "dsl/target.h"

#include <algorithm>

namespace kitten {

bool Target::has_atomic(AtomicOp op, DType d) const {
  for (const auto& [o, t] : atomics)
    if (o == op && t == d) return true;
  return false;
}

std::string Target::feature_names() const {
  static constexpr std::pair<TargetFeature, const char*> names[] = {
      {kFeatureBlocks, "blocks"},     {kFeatureShuffle, "shuffle"},
      {kFeatureMmaSync, "mma.sync"},  {kFeatureAsyncCopy, "cp.async"},
      {kFeatureLdmatrix, "ldmatrix"}, {kFeatureWgmma, "wgmma"},
      {kFeatureTma, "tma"},           {kFeatureStmatrix, "stmatrix"},
      {kFeatureMbarrier, "mbarrier"}, {kFeatureSetmaxnreg, "setmaxnreg"},
  };
  std::string out;
  for (auto [f, name] : names)
    if (has(f)) out += (out.empty() ? "" : ", ") + std::string(name);
  return out.empty() ? "none" : out;
}

std::vector<std::pair<AtomicOp, DType>> common_atomics() {
  std::vector<std::pair<AtomicOp, DType>> v;
  for (DType d :
       {dtypes::float32, dtypes::float64, dtypes::float16.vec(2), dtypes::bfloat16.vec(2)})
    v.emplace_back(AtomicOp::Add, d);
  for (DType d : {dtypes::int32, dtypes::uint32, dtypes::int64, dtypes::uint64})
    for (AtomicOp op : {AtomicOp::Add, AtomicOp::Max, AtomicOp::Min}) v.emplace_back(op, d);
  return v;
}

Target h100_target() {
  Target t;
  t.arch = "sm_90a";
  t.multiprocessors = 132;
  t.warp_size = 32;
  t.max_threads_per_block = 1024;
  t.shared_per_block = 48 * 1024;
  t.shared_per_block_optin = 227 * 1024;
  t.registers_per_thread = 255;
  t.registers_per_block = 64 * 1024;
  t.features = kFeatureBlocks | kFeatureShuffle | kFeatureMmaSync | kFeatureAsyncCopy |
               kFeatureLdmatrix | kFeatureWgmma | kFeatureTma | kFeatureStmatrix |
               kFeatureMbarrier | kFeatureSetmaxnreg;
  t.atomics = common_atomics();
  t.global_vector_bytes = t.shared_vector_bytes = 16;
  t.narrow_vectors = true;
  t.mma = mma_sync_layouts();
  return t;
}

bool Target::has_mma(std::string_view layout) const {
  return std::find(mma.begin(), mma.end(), layout) != mma.end();
}

std::vector<std::string> mma_sync_layouts() {
  return {"m16n8k16_bf16_f32", "m16n8k16_f16_f32", "m16n8k8_bf16_f32", "m16n8k8_f16_f32"};
}

int Target::max_vector_lanes(AddrSpace space, DType element) const {
  int bytes = space == AddrSpace::Global  ? global_vector_bytes
              : space == AddrSpace::Local ? shared_vector_bytes
                                          : 0;
  if (element.is_vector() || element.itemsize() <= 0) return 1;
  if (!narrow_vectors && element.is_float() && element.itemsize() < 4) return 1;
  return std::max(1, bytes / int(element.itemsize()));
}

Target host_target(std::string arch, int cores) {
  Target t;
  t.arch = std::move(arch);
  t.multiprocessors = cores;
  t.atomics = common_atomics();
  t.global_vector_bytes = 32;  // AVX2; the C renderer moves vectors with memcpy
  t.param_align = 64;          // the host allocator's alignment
  return t;
}

}  // namespace kitten
