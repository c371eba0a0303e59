// Every core op renders on each dialect (C for cpu, CUDA) and runs on the emulator, or is
// refused by that target with a message naming the op and the target. The examples are a
// switch over Op with no default: a new core op without an example fails to build under
// -Werror (-Wswitch), and an op registered without its table entries is refused by name.
#include "backends/c_renderer.h"
#include "backends/emu/emu_device.h"
#include "dsl/printer.h"
#include "kernels/examples.h"
#include "test_device.h"

namespace kitten {
namespace {

UOp i32(int64_t v) { return const_int(dtypes::int32, v); }

// A small kernel that uses `op`: out, x and y are float32 buffers of 64 elements.
UOp example(Op op) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr()), y = param(2, f.ptr());
  UOp i = range(64, 0, AxisKind::Global);
  UOp xi = load(index(x, i)), yi = load(index(y, i)), ii = i + 1;
  auto elementwise = [&](UOp v) {
    if (v.dtype() != f) v = cast(v, f);
    return sink({end(store(index(out, i), v), {i})}, "cover");
  };
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  switch (op) {
    case Op::CONST:
    case Op::PARAM:
    case Op::RANGE:
    case Op::END:
    case Op::INDEX:
    case Op::LOAD:
    case Op::STORE:
    case Op::SINK:
      return elementwise(xi + const_(f, 1.0));
    case Op::DEFINE_VAR: {
      UOp j = range(define_var("n", 1, 64), 0, AxisKind::Global);
      return sink({end(store(index(out, j), load(index(x, j))), {j})}, "cover");
    }
    case Op::SPECIAL:
    case Op::DEFINE_LOCAL:
    case Op::BARRIER: {
      UOp sm = define_local(f, 32, 0);
      UOp staged = UOp::make(Op::BARRIER, dtypes::void_, {store(index(sm, t), load(index(x, t)))});
      return sink({store(index(out, t), load(index(after(sm, {staged}), (t + 1) % 32)))}, "cover");
    }
    case Op::DEFINE_REG:
    case Op::AFTER: {
      UOp reg = define_reg(f, 1, 0);
      UOp set = store(index(reg, i32(0)), xi);
      return elementwise(load(index(after(reg, {set}), i32(0))));
    }
    case Op::GROUP:
      return sink({end(group({store(index(out, i), xi), store(index(y, i), xi)}), {i})}, "cover");
    case Op::IF:
    case Op::ENDIF: {
      UOp cond = UOp::make(Op::IF, {xi < yi});
      UOp body = store(index(after(out, {cond}), i), xi);
      return sink({end(UOp::make(Op::ENDIF, {cond, body}), {i})}, "cover");
    }
    case Op::ATOMIC:
      return sink(
          {end(UOp::make(Op::ATOMIC, dtypes::void_, {index(out, i), xi}, AtomicOp::Add), {i})},
          "cover");
    case Op::WAIT_GROUP: {
      UOp sm = define_local(f, 32, 0);
      UOp token = UOp::make(Op::ASYNC_COPY, dtypes::token, {index(sm, t), index(x, t)});
      UOp landed = UOp::make(Op::WAIT_GROUP, dtypes::void_, {token}, int64_t(0));
      return sink({store(index(out, t), load(index(after(sm, {landed}), t)))}, "cover");
    }
    case Op::ASYNC_COMMIT: {  // two copies in one group
      UOp sm = define_local(f, 64, 0);
      UOp a = UOp::make(Op::ASYNC_COPY, dtypes::token, {index(sm, t), index(x, t)});
      UOp b = UOp::make(Op::ASYNC_COPY, dtypes::token, {index(sm, t + 32), index(y, t)});
      UOp g = UOp::make(Op::ASYNC_COMMIT, dtypes::token, {a, b});
      UOp landed = UOp::make(Op::WAIT_GROUP, dtypes::void_, {g}, int64_t(0));
      UOp ready = after(sm, {landed});
      return sink({store(index(out, t), load(index(ready, t)) + load(index(ready, t + 32)))},
                  "cover");
    }
    case Op::ASYNC_COPY:
    case Op::WAIT: {
      UOp sm = define_local(f, 32, 0);
      UOp token = UOp::make(Op::ASYNC_COPY, dtypes::token, {index(sm, t), index(x, t)});
      UOp landed = UOp::make(Op::WAIT, dtypes::void_, {token});
      return sink({store(index(out, t), load(index(after(sm, {landed}), t)))}, "cover");
    }
    case Op::SHUFFLE:
      return sink({store(index(out, t),
                         UOp::make(Op::SHUFFLE, {load(index(x, t)), i32(1)}, ShuffleMode::Xor))},
                  "cover");
    case Op::MMA:
      return mma_matmul_kernel(16, 8, 16);
    case Op::STMATRIX: {  // x[t], x[t+32] as one 8x8 bf16 matrix, read back element-wise
      DType bf = dtypes::bfloat16;
      UOp sm = define_local(bf, 64, 0);
      UOp v =
          UOp::make(Op::VECTORIZE, {cast(load(index(x, t)), bf), cast(load(index(x, t + 32)), bf)});
      UOp put =
          UOp::make(Op::STMATRIX, dtypes::void_,
                    {UOp::make(Op::INDEX, bf.vec(8).ptr(AddrSpace::Local), {sm, (t % 8) * 8}), v},
                    std::vector<int64_t>{1, 0});
      UOp ready = after(sm, {UOp::make(Op::BARRIER, dtypes::void_, {put})});
      return sink({store(index(out, t), cast(load(index(ready, t)), f))}, "cover");
    }
    case Op::LDMATRIX: {  // one 8x8 bf16 matrix staged from x, read back by ldmatrix.x1
      DType bf = dtypes::bfloat16;
      UOp sm = define_local(bf, 64, 0);
      UOp a = store(index(sm, t), cast(load(index(x, t)), bf)),
          b = store(index(sm, t + 32), cast(load(index(x, t + 32)), bf));
      UOp ready = after(sm, {UOp::make(Op::BARRIER, dtypes::void_, {a, b})});
      UOp m =
          UOp::make(Op::LDMATRIX,
                    {UOp::make(Op::INDEX, bf.vec(8).ptr(AddrSpace::Local), {ready, (t % 8) * 8})},
                    std::vector<int64_t>{1, 0});
      return sink(
          {store(index(out, t), cast(UOp::make(Op::EXTRACT, {m}, std::vector<int64_t>{1}), f))},
          "cover");
    }
    case Op::MBARRIER_INIT:
    case Op::MBARRIER_ARRIVE:
    case Op::MBARRIER_WAIT:
    case Op::FENCE:
    case Op::NAMED_BARRIER:
    case Op::SETMAXNREG: {  // a warpgroup meets on an mbarrier, then on named barrier 1
      UOp w = special(SpecialKind::ThreadIdx, 0, 128);
      UOp bar = define_local(dtypes::int64, 1, 1, 8);
      UOp first = UOp::make(Op::IF, {w < 1});
      UOp init = UOp::make(Op::MBARRIER_INIT, dtypes::void_,
                           {index(after(bar, {first}), i32(0)), i32(128)});
      UOp fenced = UOp::make(Op::FENCE, dtypes::void_, {init}, std::string("mbarrier_init"));
      UOp ready = after(
          bar, {UOp::make(Op::BARRIER, dtypes::void_, {UOp::make(Op::ENDIF, {first, fenced})})});
      UOp arrived = UOp::make(Op::MBARRIER_ARRIVE, dtypes::void_, {index(ready, i32(0)), i32(0)});
      UOp waited =
          UOp::make(Op::MBARRIER_WAIT, dtypes::void_, {index(ready, i32(0)), i32(0), arrived});
      UOp met = UOp::make(Op::NAMED_BARRIER, dtypes::void_, {waited}, std::vector<int64_t>{1, 128});
      UOp regs = UOp::make(Op::SETMAXNREG, dtypes::void_, {met}, std::vector<int64_t>{40, 0});
      return sink({store(index(after(out, {regs}), w), load(index(x, w)))}, "cover");
    }
    case Op::MATRIX_DESC:
    case Op::WGMMA:
    case Op::WGMMA_COMMIT:
    case Op::WGMMA_WAIT:
      return wgmma_tile_kernel({.n = 8, .k = 16, .swizzle = Swizzle::None});
    case Op::TENSOR_MAP:
    case Op::TMA_LOAD:
    case Op::TMA_STORE:
    case Op::BULK_COMMIT:
    case Op::BULK_WAIT:
      return tma_round_trip_kernel(f, {8, 4}, Swizzle::None);
    case Op::BULK_REDUCE_ADD: {  // a warp's row of x, fenced for the async proxy, added to out
      UOp row = define_local(f, 32, 0, 128);
      UOp fenced = UOp::make(Op::FENCE, dtypes::void_, {store(index(row, t), load(index(x, t)))},
                             std::string("proxy_async"));
      UOp first = UOp::make(Op::IF, {t < 1, UOp::make(Op::BARRIER, dtypes::void_, {fenced})});
      UOp added = UOp::make(
          Op::BULK_REDUCE_ADD, dtypes::void_,
          {index(after(out, {first}), i32(0)), index(after(row, {first}), i32(0)), i32(128)});
      UOp committed = UOp::make(Op::BULK_COMMIT, dtypes::void_, {added});
      return sink({UOp::make(Op::ENDIF, {first, UOp::make(Op::BULK_WAIT, dtypes::void_, {committed},
                                                          int64_t(0))})},
                  "cover");
    }
    case Op::CAST:
      return elementwise(cast(xi, dtypes::float16));
    case Op::BITCAST:
      return elementwise(UOp::make(Op::BITCAST, dtypes::int32, {xi}));
    case Op::VECTORIZE:
    case Op::EXTRACT:
      return elementwise(
          UOp::make(Op::EXTRACT, {UOp::make(Op::VECTORIZE, {xi, yi})}, std::vector<int64_t>{1}));
    case Op::NEG:
    case Op::RECIP:
    case Op::SQRT:
    case Op::EXP2:
    case Op::LOG2:
    case Op::SIN:
    case Op::TRUNC:
      return elementwise(UOp::make(op, {xi}));
    case Op::EXP2_FTZ:  // float32 only
      return elementwise(UOp::make(op, {cast(xi, dtypes::float32)}));
    case Op::ADD:
    case Op::SUB:
    case Op::MUL:
    case Op::FDIV:
    case Op::MAX:
    case Op::MIN:
      return elementwise(UOp::make(op, {xi, yi}));
    case Op::IDIV:
    case Op::MOD:
    case Op::AND:
    case Op::OR:
    case Op::XOR:
    case Op::SHL:
    case Op::SHR:
      return elementwise(UOp::make(op, {ii, i32(3)}));
    case Op::CMPLT:
    case Op::CMPEQ:
    case Op::CMPNE:
    case Op::WHERE:
      return elementwise(
          UOp::make(Op::WHERE, {UOp::make(op == Op::WHERE ? Op::CMPLT : op, {xi, yi}), xi, yi}));
    case Op::MULACC:
      return elementwise(UOp::make(Op::MULACC, {xi, yi, xi}));
  }
  return {};
}

// The in-process cpu compiler where this build has it, else the subprocess one.
std::unique_ptr<Device> cpu_device(std::string& why) {
  auto dev = open_test_device("cpu-jit", why);
  return dev ? std::move(dev) : open_test_device("cpu-subprocess", why);
}

// Renders for one target and, on cpu and emu, compiles and runs: "" on success, else the
// refusal.
std::string try_target(const std::string& target, const UOp& k) {
  try {
    LinearProgram p = linearize(k);
    if (target == "cuda") {
      render_cuda(p);  // compiled on the GPU machine by the cuda tests
    } else {
      std::string why;
      auto dev = target == "cpu" ? cpu_device(why) : make_emu_device();
      CompiledKernel ck = compile_kernel(*dev, k);
      // Buffers of 4 KiB for pointer parameters, 8 for integer ones, 64 for variables.
      std::vector<Buffer> bufs;
      std::vector<KernelArg> a;
      for (const UOp& u : ck.linear.ops) {
        if ((u.op() == Op::PARAM || u.op() == Op::TENSOR_MAP) && size_t(u.slot()) >= a.size())
          a.resize(size_t(u.slot()) + 1);
        if (u.op() == Op::TENSOR_MAP) {  // a tensor of exactly one box over 4 KiB
          const auto& v = std::get<std::vector<int64_t>>(u.arg());
          std::vector<int64_t> box(v.begin() + 2, v.end()), strides;
          int64_t stride = box[0] * u.dtype().pointee().itemsize();
          for (size_t d = 1; d < box.size(); ++d) strides.push_back(stride), stride *= box[d];
          bufs.push_back(dev->allocator().alloc(4096));
          a[size_t(u.slot())] =
              make_tensor_map(bufs.back(), u.dtype().pointee(), box, strides, box, Swizzle(v[1]));
          continue;
        }
        if (u.op() != Op::PARAM) continue;
        if (!u.dtype().is_pointer()) {
          a[size_t(u.int_arg())] = int64_t(8);
          continue;
        }
        std::vector<float> data(1024, 0.5f);
        bufs.push_back(dev->allocator().alloc(4096));
        dev->allocator().copy_in(bufs.back(), data.data(), 4096);
        a[size_t(u.int_arg())] = bufs.back();
      }
      for (const UOp& u : ck.linear.ops)
        if (u.op() == Op::DEFINE_VAR) a.push_back(int64_t(64));
      ck.run(a);
      for (Buffer b : bufs) dev->allocator().free(b);
    }
  } catch (const BackendError& e) {
    return e.what();
  }
  return "";
}

// A target without an atomic refuses the kernel that uses it, naming the op and dtype.
TEST(Coverage, AnAtomicTheTargetLacksIsRefused) {
  Target ampere = h100_target();
  ampere.arch = "sm_80";
  std::erase(ampere.atomics, std::pair{AtomicOp::Add, dtypes::bfloat16.vec(2)});
  DType b2 = dtypes::bfloat16.vec(2);
  UOp buf = param(0, dtypes::bfloat16.ptr());
  UOp v = UOp::make(Op::VECTORIZE, {const_(dtypes::bfloat16, 1), const_(dtypes::bfloat16, 2)});
  UOp k = sink({UOp::make(Op::ATOMIC, dtypes::void_,
                          {UOp::make(Op::INDEX, b2.ptr(), {buf, i32(0)}), v}, AtomicOp::Add)},
               "bf16_atomic");
  LinearProgram p = linearize(k);
  EXPECT_NO_THROW(render_cuda(p, nullptr));
  try {
    render_cuda(p, &ampere);
    FAIL() << "rendered";
  } catch (const BackendError& e) {
    EXPECT_NE(
        std::string(e.what()).find("uses ATOMIC add of bfloat16x2, which sm_80 does not have"),
        std::string::npos)
        << e.what();
  }
}

TEST(Coverage, EveryCoreOpRendersAndRunsOrIsRefusedByName) {
  int refused = 0;
  for (int id = 0; id < kNumCoreOps; ++id) {
    Op op = Op(id);
    UOp k = example(op);
    ASSERT_TRUE(k) << op_name(op);
    bool found = false;
    for (const UOp& u : toposort(k)) found |= u.op() == op;
    EXPECT_TRUE(found) << "the example of " << op_name(op) << " does not use it";
    for (const char* target : {"cpu", "cuda", "emu"}) {
      std::string e = try_target(target, k);
      if (e.empty()) continue;
      ++refused;
      EXPECT_NE(e.find(op_name(op)), std::string::npos) << target << ": " << e;
      EXPECT_EQ(e.rfind(std::string(target) + ":", 0), 0u) << target << ": " << e;
    }
  }
  EXPECT_GT(refused, 0);  // C has no SPECIAL, BARRIER, SHUFFLE or MMA
  EXPECT_EQ(try_target("cpu", example(Op::MMA)).find("cpu: kernel 'mma_matmul' uses SPECIAL"), 0u);
}

// An ALU op registered by a later layer without entries in the evaluation and printing
// tables: each target refuses it by name, never miscompiles or runs it.
TEST(Coverage, AnOpWithoutTableEntriesIsRefusedByName) {
  static const Op dummy = [] {
    OpSpec s;
    s.name = "TEST_DUMMY_ALU";
    s.meaning = "A unary float op with no table entries.";
    s.sources = {{"x", "a float", [](const UOp&, const UOp& x) { return x.dtype().is_float(); }}};
    s.dtype = {"the dtype of x",
               [](std::span<const UOp> src, const Arg&) -> std::optional<DType> {
                 if (src.empty()) return std::nullopt;
                 return src[0].dtype();
               },
               {}};
    s.flags = kOpAlu;
    s.arity = 1;
    return register_op(std::move(s));
  }();
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp i = range(64, 0, AxisKind::Global);
  UOp k = sink({end(store(index(out, i), UOp::make(dummy, {load(index(x, i))})), {i})}, "dummy");
  for (const char* target : {"cpu", "cuda", "emu"}) {
    std::string e = try_target(target, k);
    EXPECT_NE(e.find("TEST_DUMMY_ALU"), std::string::npos) << target << ": " << e;
    EXPECT_EQ(e.rfind(std::string(target) + ":", 0), 0u) << target << ": " << e;
  }
}

}  // namespace
}  // namespace kitten
