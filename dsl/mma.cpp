#include "dsl/mma.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "dsl/eval.h"
#include "dsl/rewrite.h"
#include "dsl/symbolic.h"

namespace kitten {

UOp mma_thread_var() { return define_var("mma_thread", 0, 1023); }
UOp mma_element_var() { return define_var("mma_element", 0, 255); }

std::pair<int, int> FragmentLayout::at(int thread, int element) const {
  std::map<std::string, int64_t> vars{{"mma_thread", thread}, {"mma_element", element}};
  std::optional<int64_t> r = eval_int(row, vars), c = eval_int(col, vars);
  if (!r || !c)
    throw std::invalid_argument("MMA fragment of thread " + std::to_string(thread) + ", element " +
                                std::to_string(element) + ": its place is undefined");
  return {int(*r), int(*c)};
}

UOp FragmentLayout::row_of(const UOp& thread, const UOp& element) const {
  return simplify(substitute(row, {{mma_thread_var(), thread}, {mma_element_var(), element}}));
}

UOp FragmentLayout::col_of(const UOp& thread, const UOp& element) const {
  return simplify(substitute(col, {{mma_thread_var(), thread}, {mma_element_var(), element}}));
}

namespace {

// ---- mma.sync fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16/k8") -------
// group = thread / 4 picks the row (and +8 for the lower half); the thread's place in its
// group of four picks a pair of adjacent columns.
FragmentLayout registers(DType fragment, int rows, int cols, UOp row, UOp col) {
  FragmentLayout f;
  f.fragment = fragment;
  f.rows = rows;
  f.cols = cols;
  f.row = std::move(row);
  f.col = std::move(col);
  return f;
}

std::vector<MmaLayout> mma_sync_layouts() {
  UOp t = mma_thread_var(), i = mma_element_var();
  UOp group = t / 4, pair = (t % 4) * 2;
  std::vector<MmaLayout> v;
  for (DType in : {dtypes::bfloat16, dtypes::float16}) {
    std::string type = in == dtypes::bfloat16 ? "bf16" : "f16";
    FragmentLayout c = registers(dtypes::float32.vec(4), 16, 8, group + i / 2 * 8, pair + i % 2);
    MmaLayout k16{"m16n8k16_" + type + "_f32",
                  "mma.sync.aligned.m16n8k16, " + type + " in, f32 accumulate",
                  16,
                  8,
                  16,
                  32,
                  registers(in.vec(8), 16, 16, group + i / 2 % 2 * 8, pair + i % 2 + i / 4 * 8),
                  registers(in.vec(4), 16, 8, pair + i % 2 + i / 2 * 8, group),
                  c};
    MmaLayout k8{"m16n8k8_" + type + "_f32",
                 "mma.sync.aligned.m16n8k8, " + type + " in, f32 accumulate",
                 16,
                 8,
                 8,
                 32,
                 registers(in.vec(4), 16, 8, group + i / 2 * 8, pair + i % 2),
                 registers(in.vec(2), 8, 8, pair + i, group),
                 c};
    v.push_back(std::move(k16));
    v.push_back(std::move(k8));
  }
  return v;
}

// ---- wgmma layouts (PTX ISA, "Matrix Fragments for wgmma.mma_async.m64nNk16") ---------
// Warp w of the warpgroup holds rows 16w..16w+15 of A and D, laid out within them as
// mma.sync's m16n8k16 A and C fragments: D's elements come four per 8-column block.
// B (and A in the "ss" form) is read from shared memory through a MATRIX_DESC.
std::optional<MmaLayout> wgmma_layout(std::string_view name) {
  int n = 0;
  char type[8] = {}, form[4] = {};
  std::string text(name);
  if (std::sscanf(text.c_str(), "wgmma_m64n%dk16_%4[bf16]_%2[rs]", &n, type, form) != 3)
    return std::nullopt;
  std::string t(type), f(form);
  if (n < 8 || n > 256 || n % 8 || (t != "bf16" && t != "f16") || (f != "rs" && f != "ss") ||
      "wgmma_m64n" + std::to_string(n) + "k16_" + t + "_" + f != text)
    return std::nullopt;
  DType in = t == "bf16" ? dtypes::bfloat16 : dtypes::float16;
  UOp th = mma_thread_var(), i = mma_element_var();
  UOp warp_rows = th / 32 * 16 + th % 32 / 4 + i / 2 % 2 * 8, pair = th % 4 * 2 + i % 2;
  FragmentLayout shared;
  shared.home = OperandHome::SharedDescriptor;
  shared.fragment = dtypes::uint64;
  FragmentLayout a = shared, b = shared;
  a.rows = 64, a.cols = 16, b.rows = 16, b.cols = n;
  if (f == "rs") a = registers(in.vec(8), 64, 16, warp_rows, pair + i / 4 * 8);
  return MmaLayout{text,
                   "wgmma.mma_async.m64n" + std::to_string(n) + "k16, " + t + " in" +
                       (f == "rs" ? " (A in registers)" : "") + ", f32 accumulate",
                   64,
                   n,
                   16,
                   128,
                   a,
                   b,
                   registers(dtypes::float32.vec(n / 2), 64, n, warp_rows, i / 4 * 8 + pair)};
}

// The register fragments of a group's threads hold every element of the matrix once.
void check_fragment(const MmaLayout& l, const FragmentLayout& f, const char* which) {
  if (f.home != OperandHome::Registers) return;
  std::vector<int> held(size_t(f.rows * f.cols), 0);
  auto bad = [&](int t, int e, const std::string& what) {
    return std::invalid_argument("register_mma_layout: '" + l.name + "' puts element " +
                                 std::to_string(e) + " of thread " + std::to_string(t) + " of " +
                                 which + " " + what);
  };
  for (int t = 0; t < l.group_threads; ++t)
    for (int e = 0; e < f.fragment.count(); ++e) {
      auto [r, c] = f.at(t, e);
      if (r < 0 || r >= f.rows || c < 0 || c >= f.cols) throw bad(t, e, "outside its matrix");
      if (held[size_t(r * f.cols + c)]++) throw bad(t, e, "where another thread's already is");
    }
  if (std::count(held.begin(), held.end(), 0))
    throw std::invalid_argument("register_mma_layout: '" + l.name + "' leaves elements of " +
                                std::string(which) + " to no thread");
}

struct Layouts {
  std::mutex mu;
  std::vector<std::unique_ptr<MmaLayout>> all;

  Layouts() {
    for (MmaLayout& l : mma_sync_layouts()) add(std::move(l));
  }
  void add(MmaLayout l) {
    for (auto& have : all)
      if (have->name == l.name)
        throw std::invalid_argument("register_mma_layout: '" + l.name + "' is taken");
    check_fragment(l, l.a, "A");
    check_fragment(l, l.b, "B");
    check_fragment(l, l.c, "C");
    all.push_back(std::make_unique<MmaLayout>(std::move(l)));
  }
};

Layouts& layouts() {
  static Layouts* l = new Layouts();  // immortal, as the op registry
  return *l;
}

}  // namespace

void register_mma_layout(MmaLayout layout) {
  Layouts& l = layouts();
  std::lock_guard lock(l.mu);
  l.add(std::move(layout));
}

const MmaLayout* find_mma_layout(std::string_view name) {
  Layouts& l = layouts();
  std::lock_guard lock(l.mu);
  for (auto& have : l.all)
    if (have->name == name) return have.get();
  // The wgmma layouts (N a multiple of 8 up to 256, bf16 or f16, A in registers or
  // shared memory) are made when first named.
  if (std::optional<MmaLayout> w = wgmma_layout(name)) {
    l.add(std::move(*w));
    return l.all.back().get();
  }
  return nullptr;
}

std::vector<const MmaLayout*> mma_layouts() {
  Layouts& l = layouts();
  std::lock_guard lock(l.mu);
  std::vector<const MmaLayout*> out;
  for (auto& have : l.all) out.push_back(have.get());
  return out;
}

}  // namespace kitten
