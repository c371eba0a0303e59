#include "dsl/builtin_kernels.h"

#include <stdexcept>

namespace kitten {

namespace {

// out[i, j] = a[i, j] + b[j] for a 4x100 a: b is broadcast along the rows.
UOp add_kernel() {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), a = param(1, f.ptr()), b = param(2, f.ptr());
  UOp i = range(4, 0, AxisKind::Global), j = range(100, 1, AxisKind::Global);
  UOp sum = load(index(a, i * 100 + j)) + load(index(b, j));
  return sink({end(store(index(out, i * 100 + j), sum), {i, j})}, "add");
}

// out[i] = sum over k of in[i, k], for a 16x1000 in, through a register accumulator: its
// init is ordered after the output range (reset per output element), its loop read after
// the init and the reduce range, and the result read after the loop's END.
UOp sum_kernel() {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), in = param(1, f.ptr());
  UOp acc = define_reg(f, 1, 0), zero = const_int(dtypes::int32, 0);
  UOp i = range(16, 0, AxisKind::Global), k = range(1000, 1, AxisKind::Reduce);
  UOp init = store(index(after(acc, {i}), zero), const_(f, 0.0));
  UOp acc_in_loop = after(acc, {init, k});
  UOp update = store(index(acc_in_loop, zero),
                     load(index(acc_in_loop, zero)) + load(index(in, i * 1000 + k)));
  UOp loop = end(update, {k});
  UOp result = load(index(after(acc, {loop}), zero));
  return sink({end(store(index(out, i), result), {i})}, "sum");
}

}  // namespace

std::vector<std::string> builtin_kernel_names() { return {"add", "sum"}; }

UOp builtin_kernel(const std::string& name) {
  if (name == "add") return add_kernel();
  if (name == "sum") return sum_kernel();
  std::string known;
  for (const std::string& n : builtin_kernel_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("no built-in kernel named '" + name + "' (known: " + known + ")");
}

}  // namespace kitten
