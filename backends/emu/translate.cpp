// Translates a linear program into the emulator's instructions (backends/emu/program.h).
#include <algorithm>
#include <functional>
#include <set>
#include <unordered_map>

#include "backends/emu/emulator.h"
#include "backends/emu/program.h"
#include "dsl/mma.h"

namespace kitten {

namespace {

[[noreturn]] void refuse(const LinearProgram& p, const std::string& what) {
  throw BackendError("emu: kernel '" + p.name + "' " + what);
}

EmuFragment fragment(const FragmentLayout& f, int threads) {
  EmuFragment e;
  e.rows = f.rows;
  e.cols = f.cols;
  e.count = f.fragment.count();
  for (int t = 0; t < threads; ++t)
    for (int i = 0; i < e.count; ++i) {
      auto [r, c] = f.at(t, i);
      e.at.push_back(r * f.cols + c);
    }
  return e;
}

class Translator {
 public:
  Translator(const LinearProgram& p, const Target& t) : p_(p), target_(t) {}

  std::shared_ptr<EmuKernel> run() {
    k_ = std::make_shared<EmuKernel>();
    k_->name = p_.name.empty() ? "kernel" : p_.name;
    k_->target = target_;
    for (const UOp& u : p_.ops) {
      if (u.op() == Op::DEFINE_VAR) vars_.insert(std::get<VarArg>(u.arg()).name);
      if (u.op() == Op::PARAM || u.op() == Op::TENSOR_MAP)
        k_->num_params = std::max<int>(k_->num_params, int(u.slot()) + 1);
    }
    k_->vars.assign(vars_.begin(), vars_.end());
    k_->info.name = k_->name;
    k_->info.num_params = k_->num_params;
    k_->info.buffer_params.assign(size_t(k_->num_params), false);
    k_->info.unused_params.assign(size_t(k_->num_params), true);
    for (size_t i = 0; i < p_.ops.size(); ++i) {
      line_ = int(i);
      emit(p_.ops[i]);
    }
    check_limits();
    return k_;
  }

 private:
  // The block must fit the target profile, as the driver would refuse it.
  void check_limits() {
    int64_t shared = 0;  // laid out as the CUDA renderer carves them, each start aligned
    for (const UOp& u : p_.ops)
      if (u.op() == Op::DEFINE_LOCAL) {
        int64_t align = std::max<int64_t>(16, std::get<AllocArg>(u.arg()).align);
        shared = (shared + align - 1) / align * align +
                 u.dtype().size() * u.dtype().pointee().itemsize();
      }
    if (shared > target_.shared_per_block_optin)
      refuse(p_, "needs " + std::to_string(shared) + " bytes of shared memory per block; the " +
                     target_.arch + " profile allows " +
                     std::to_string(target_.shared_per_block_optin));
    int64_t threads = k_->block.x * k_->block.y * k_->block.z;
    if (threads > target_.max_threads_per_block)
      refuse(p_, "needs " + std::to_string(threads) + " threads per block; the " + target_.arch +
                     " profile allows " + std::to_string(target_.max_threads_per_block));
    if ((k_->setmaxnreg || k_->warpgroups) && threads % 128 != 0)
      refuse(p_, std::string("uses ") + (k_->setmaxnreg ? "SETMAXNREG" : "WGMMA") + " with " +
                     std::to_string(threads) +
                     " threads per block, which is not whole warpgroups of 128");
  }

  int new_slot(DType d) {
    int s = k_->slots;
    k_->slots += std::max(1, d.count());
    return s;
  }
  int slot(const UOp& u) const {
    auto it = slots_.find(u.id());
    if (it == slots_.end())
      refuse(p_, "uses " + op_name(u.op()) + " as a value, which the emulator cannot");
    return it->second;
  }
  int buffer(const UOp& u) {
    UOp b = u;
    while (b.op() == Op::AFTER) b = b.src(0);
    auto it = buffers_.find(b.id());
    if (it == buffers_.end())
      refuse(p_, "addresses a buffer that is not a PARAM, DEFINE_LOCAL or DEFINE_REG");
    return it->second;
  }
  void add_buffer(const UOp& u, EmuBufKind kind, const std::string& what) {
    buffers_[u.id()] = int(k_->buffers.size());
    k_->buffers.push_back({kind, u.slot(), u.dtype().pointee(), u.dtype().size(),
                           what + " " + std::to_string(u.slot())});
    if (kind == EmuBufKind::Shared) {  // carved one after another, each start aligned
      const AllocArg& a = std::get<AllocArg>(u.arg());
      int64_t align = std::max<int64_t>(16, a.align);
      EmuBuffer& b = k_->buffers.back();
      b.base = (shared_end_ + align - 1) / align * align;
      b.swizzle = a.swizzle;
      shared_end_ = b.base + b.size * b.elem.itemsize();
    }
  }
  EmuInstr& push(EmuKind kind, const UOp& u) {
    EmuInstr in;
    in.kind = kind;
    in.op = u.op();
    in.line = line_;
    in.dtype = u.dtype();
    k_->code.push_back(in);
    return k_->code.back();
  }
  int pc() const { return int(k_->code.size()) - 1; }
  void value(EmuInstr& in, const UOp& u) {
    in.out = new_slot(u.dtype());
    slots_[u.id()] = in.out;
  }
  // The buffer, index and gate slots of the INDEX a memory op goes through.
  void address(EmuInstr& in, const UOp& index) {
    const EmuInstr& ix = k_->code[size_t(index_.at(index.id()))];
    in.buf = ix.buf, in.idx = ix.out, in.gate = ix.gate;
  }
  void needs(TargetFeature f, const UOp& u) {
    if (!target_.has(f))
      refuse(p_, "uses " + op_name(u.op()) + ", which the " + target_.arch + " profile lacks");
  }

  void emit(const UOp& u) {
    switch (u.op()) {
      case Op::PARAM:
        k_->info.unused_params[size_t(u.slot())] = false;
        if (u.dtype().is_pointer()) {
          add_buffer(u, EmuBufKind::Global, "param");
          k_->info.buffer_params[size_t(u.slot())] = true;
        } else {
          EmuInstr& in = push(EmuKind::IntParam, u);
          in.imm_i = u.int_arg();
          value(in, u);
        }
        return;
      case Op::DEFINE_LOCAL:
        add_buffer(u, EmuBufKind::Shared, "shared");
        return;
      case Op::DEFINE_REG:
        add_buffer(u, EmuBufKind::Reg, "register buffer");
        return;
      case Op::AFTER:
      case Op::GROUP:
      case Op::SINK:
        return;
      case Op::CONST: {
        EmuInstr& in = push(EmuKind::Const, u);
        if (u.dtype().is_float())
          in.imm_f = u.const_value();
        else
          in.imm_i = u.const_int();
        value(in, u);
        return;
      }
      case Op::DEFINE_VAR: {
        EmuInstr& in = push(EmuKind::Var, u);
        in.imm_i = k_->num_params + int64_t(std::distance(
                                        vars_.begin(), vars_.find(std::get<VarArg>(u.arg()).name)));
        value(in, u);
        return;
      }
      case Op::SPECIAL: {
        EmuInstr& in = push(EmuKind::Special, u);
        in.special = std::get<SpecialArg>(u.arg());
        in.src = {slot(u.src(0))};
        if (!place_special(u, k_->grid, k_->block, k_->grid_extent))
          refuse(p_, "has a thread index whose extent is not a constant");
        value(in, u);
        return;
      }
      case Op::RANGE: {
        EmuInstr& in = push(EmuKind::Range, u);
        in.src = {slot(u.src(0))};
        value(in, u);
        opener_pc_[u.id()] = pc();
        return;
      }
      case Op::END: {
        EmuInstr& in = push(EmuKind::End, u);
        int end = pc();
        // The ranges it closes, innermost (opened last) first.
        for (size_t i = 1; i < u.src().size(); ++i)
          in.closes.push_back(opener_pc_.at(u.src(i).id()));
        std::sort(in.closes.begin(), in.closes.end(), std::greater<int>());
        for (size_t level = 0; level < in.closes.size(); ++level) {
          k_->code[size_t(in.closes[level])].end_pc = end;
          k_->code[size_t(in.closes[level])].level = int(level);
        }
        return;
      }
      case Op::IF: {
        EmuInstr& in = push(EmuKind::If, u);
        in.src = {slot(u.src(0))};
        opener_pc_[u.id()] = pc();
        return;
      }
      case Op::ENDIF: {
        push(EmuKind::EndIf, u);
        k_->code[size_t(opener_pc_.at(u.src(0).id()))].end_pc = pc();
        return;
      }
      case Op::INDEX: {
        EmuInstr& in = push(EmuKind::Index, u);
        in.buf = buffer(u.src(0));
        in.src = {slot(u.src(1))};
        if (u.src().size() == 3) in.gate = slot(u.src(2));
        value(in, u);
        index_[u.id()] = pc();
        return;
      }
      case Op::LOAD: {
        EmuInstr& in = push(EmuKind::Load, u);
        address(in, u.src(0));
        if (u.src().size() == 2) in.alt = slot(u.src(1));
        value(in, u);
        return;
      }
      case Op::STORE:
      case Op::ATOMIC: {
        EmuInstr& in = push(u.op() == Op::STORE ? EmuKind::Store : EmuKind::Atomic, u);
        in.dtype = u.src(1).dtype();
        address(in, u.src(0));
        in.value = slot(u.src(1));
        if (u.op() == Op::ATOMIC) {
          in.atomic = std::get<AtomicOp>(u.arg());
          if (!target_.has_atomic(in.atomic, in.dtype))
            refuse(p_, "uses ATOMIC " + std::string(atomic_op_name(in.atomic)) + " of " +
                           std::string(in.dtype.name()) + ", which the " + target_.arch +
                           " profile lacks");
        }
        return;
      }
      case Op::ASYNC_COPY: {
        needs(kFeatureAsyncCopy, u);
        const EmuInstr& dst = k_->code[size_t(index_.at(u.src(0).id()))];
        const EmuInstr& src = k_->code[size_t(index_.at(u.src(1).id()))];
        int db = dst.buf, di = dst.out, sb = src.buf, si = src.out, gate = src.gate;
        EmuInstr& in = push(EmuKind::AsyncCopy, u);
        in.dtype = u.src(0).dtype().pointee();
        in.buf = db, in.idx = di, in.src_buf = sb, in.src_idx = si, in.gate = gate;
        value(in, u);
        return;
      }
      case Op::ASYNC_COMMIT: {
        needs(kFeatureAsyncCopy, u);
        EmuInstr& in = push(EmuKind::AsyncCommit, u);
        k_->explicit_groups = true;
        value(in, u);
        return;
      }
      case Op::WAIT: {
        EmuInstr& in = push(EmuKind::Wait, u);
        for (const UOp& s : u.src()) in.src.push_back(slot(s));
        return;
      }
      case Op::WAIT_GROUP: {
        needs(kFeatureAsyncCopy, u);
        EmuInstr& in = push(EmuKind::WaitGroup, u);
        for (const UOp& s : u.src())  // effects among them only order it
          if (s.dtype().is_token()) in.src.push_back(slot(s));
        in.imm_i = u.int_arg();
        return;
      }
      case Op::BARRIER:
        needs(kFeatureBlocks, u);
        push(EmuKind::Barrier, u);
        return;
      case Op::MBARRIER_INIT:
      case Op::MBARRIER_ARRIVE:
      case Op::MBARRIER_WAIT: {
        needs(kFeatureMbarrier, u);
        EmuKind kind = u.op() == Op::MBARRIER_INIT     ? EmuKind::MbarrierInit
                       : u.op() == Op::MBARRIER_ARRIVE ? EmuKind::MbarrierArrive
                                                       : EmuKind::MbarrierWait;
        EmuInstr& in = push(kind, u);
        address(in, u.src(0));
        in.src = {slot(u.src(1))};
        return;
      }
      case Op::FENCE: {
        const std::string& kind = u.name_arg();
        needs(kind == "wgmma" ? kFeatureWgmma : kFeatureMbarrier, u);
        EmuInstr& in = push(EmuKind::Fence, u);
        in.imm_i = int64_t(kind == "mbarrier_init" ? EmuFence::MbarrierInit
                           : kind == "proxy_async" ? EmuFence::ProxyAsync
                                                   : EmuFence::Wgmma);
        return;
      }
      case Op::NAMED_BARRIER: {
        needs(kFeatureBlocks, u);
        EmuInstr& in = push(EmuKind::NamedBarrier, u);
        in.lanes = std::get<std::vector<int64_t>>(u.arg());
        return;
      }
      case Op::SETMAXNREG: {
        needs(kFeatureSetmaxnreg, u);
        EmuInstr& in = push(EmuKind::Setmaxnreg, u);
        in.lanes = std::get<std::vector<int64_t>>(u.arg());
        k_->setmaxnreg = true;
        return;
      }
      case Op::MATRIX_DESC: {
        needs(kFeatureWgmma, u);
        EmuInstr& in = push(EmuKind::MatrixDesc, u);
        address(in, u.src(0));
        in.lanes = std::get<std::vector<int64_t>>(u.arg());
        value(in, u);
        return;
      }
      case Op::WGMMA: {
        needs(kFeatureWgmma, u);
        const MmaLayout& l = *find_mma_layout(u.name_arg());
        EmuInstr& in = push(EmuKind::Wgmma, u);
        in.src = {slot(u.src(0)), slot(u.src(1)), slot(u.src(2))};
        in.mma_a_shared = l.a.home == OperandHome::SharedDescriptor;
        if (!in.mma_a_shared) in.mma_a = fragment(l.a, 128);
        in.mma_a_mn = in.mma_a_shared && std::get<std::vector<int64_t>>(u.src(0).arg())[1] != 0;
        in.mma_b_mn = std::get<std::vector<int64_t>>(u.src(1).arg())[1] != 0;
        in.mma_c = fragment(l.c, 128);
        in.mma_k = l.k;
        in.in = l.name.find("_bf16_") != std::string::npos ? dtypes::bfloat16 : dtypes::float16;
        value(in, u);
        k_->warpgroups = true;
        return;
      }
      case Op::TENSOR_MAP: {
        needs(kFeatureTma, u);
        const auto& v = std::get<std::vector<int64_t>>(u.arg());
        k_->info.unused_params[size_t(v[0])] = false;
        k_->info.tensor_maps[int(v[0])] = {
            u.dtype().pointee(), std::vector<int64_t>(v.begin() + 2, v.end()), Swizzle(v[1])};
        maps_[u.id()] = v;
        return;
      }
      case Op::TMA_LOAD:
      case Op::TMA_STORE: {
        needs(kFeatureTma, u);
        bool load = u.op() == Op::TMA_LOAD;
        int mbuf = -1, midx = -1;
        if (load) {
          const EmuInstr& m = k_->code[size_t(index_.at(u.src(2).id()))];
          mbuf = m.buf, midx = m.out;
        }
        EmuInstr& in = push(load ? EmuKind::TmaLoad : EmuKind::TmaStore, u);
        address(in, u.src(1));
        in.dtype = u.src(0).dtype().pointee();
        const std::vector<int64_t>& v = maps_.at(u.src(0).id());
        in.imm_i = v[0];
        in.lanes.assign(v.begin() + 1, v.end());  // swizzle, then the box
        in.src_buf = mbuf, in.src_idx = midx;
        for (size_t i = load ? 3 : 2; i < u.src().size(); ++i) in.src.push_back(slot(u.src(i)));
        if (!load) k_->info.tensor_maps[int(v[0])].stored = true;
        return;
      }
      case Op::BULK_REDUCE_ADD: {
        needs(kFeatureTma, u);
        const EmuInstr& s = k_->code[size_t(index_.at(u.src(1).id()))];
        int sbuf = s.buf, sidx = s.out;
        EmuInstr& in = push(EmuKind::BulkReduceAdd, u);
        address(in, u.src(0));
        in.src_buf = sbuf, in.src_idx = sidx;
        in.imm_i = u.src(2).const_int();
        return;
      }
      case Op::BULK_COMMIT:  // the copies complete at their issue; their reads end at a wait
        needs(kFeatureTma, u);
        push(EmuKind::BulkCommit, u);
        return;
      case Op::BULK_WAIT:
        needs(kFeatureTma, u);
        push(EmuKind::BulkWait, u).imm_i = u.int_arg();
        return;
      case Op::WGMMA_COMMIT:
        needs(kFeatureWgmma, u);
        push(EmuKind::WgmmaCommit, u);
        return;
      case Op::WGMMA_WAIT: {
        needs(kFeatureWgmma, u);
        EmuInstr& in = push(EmuKind::WgmmaWait, u);
        in.src = {slot(u.src(0))};
        in.imm_i = u.int_arg();
        value(in, u);
        return;
      }
      case Op::SHUFFLE: {
        needs(kFeatureShuffle, u);
        EmuInstr& in = push(EmuKind::Shuffle, u);
        in.src = {slot(u.src(0)), slot(u.src(1))};
        in.shuffle = std::get<ShuffleMode>(u.arg());
        value(in, u);
        return;
      }
      case Op::MMA: {
        needs(kFeatureMmaSync, u);
        if (!target_.has_mma(u.name_arg()))
          refuse(p_, "uses MMA " + u.name_arg() + ", which the " + target_.arch +
                         " profile does not have");
        const MmaLayout& l = *find_mma_layout(u.name_arg());
        if (l.group_threads != kEmuWarp || l.a.home != OperandHome::Registers ||
            l.b.home != OperandHome::Registers)
          refuse(p_, "uses the MMA layout " + l.name +
                         ", which is not a warp's register-fragment layout");
        for (const FragmentLayout* f : {&l.a, &l.b, &l.c})
          if (f->rows * f->cols > kEmuMmaTile)
            refuse(p_, "uses the MMA layout " + l.name + ", whose tiles exceed the emulator's " +
                           std::to_string(kEmuMmaTile) + " elements");
        EmuInstr& in = push(EmuKind::Mma, u);
        in.src = {slot(u.src(0)), slot(u.src(1)), slot(u.src(2))};
        in.mma_a = fragment(l.a, kEmuWarp);
        in.mma_b = fragment(l.b, kEmuWarp);
        in.mma_c = fragment(l.c, kEmuWarp);
        in.mma_k = l.k;
        value(in, u);
        return;
      }
      case Op::LDMATRIX: {
        needs(kFeatureLdmatrix, u);
        EmuInstr& in = push(EmuKind::Ldmatrix, u);
        address(in, u.src(0));
        in.dtype = u.src(0).dtype().pointee();
        in.lanes = std::get<std::vector<int64_t>>(u.arg());
        value(in, u);
        return;
      }
      case Op::STMATRIX: {
        needs(kFeatureStmatrix, u);
        EmuInstr& in = push(EmuKind::Stmatrix, u);
        address(in, u.src(0));
        in.dtype = u.src(0).dtype().pointee();
        in.value = slot(u.src(1));
        in.lanes = std::get<std::vector<int64_t>>(u.arg());
        return;
      }
      case Op::VECTORIZE: {
        EmuInstr& in = push(EmuKind::Vectorize, u);
        for (const UOp& s : u.src()) in.src.push_back(slot(s));
        value(in, u);
        return;
      }
      case Op::EXTRACT: {
        EmuInstr& in = push(EmuKind::Extract, u);
        in.src = {slot(u.src(0))};
        in.lanes = std::get<std::vector<int64_t>>(u.arg());
        value(in, u);
        return;
      }
      case Op::CAST:
      case Op::BITCAST: {
        EmuInstr& in = push(u.op() == Op::CAST ? EmuKind::Cast : EmuKind::Bitcast, u);
        in.src = {slot(u.src(0))};
        in.in = u.src(0).dtype();
        value(in, u);
        return;
      }
        KITTEN_ALU_OPS(KITTEN_OP_CASE) {
          EmuInstr& in = push(EmuKind::Alu, u);
          for (const UOp& s : u.src()) in.src.push_back(slot(s));
          in.in = u.op() == Op::WHERE ? u.src(1).dtype() : u.src(0).dtype();
          value(in, u);
          return;
        }
    }
    refuse(p_, "uses " + op_name(u.op()) + ", which the emulator does not run");
  }

  const LinearProgram& p_;
  const Target& target_;
  std::shared_ptr<EmuKernel> k_;
  std::set<std::string> vars_;
  std::unordered_map<const void*, int> slots_, buffers_, opener_pc_, index_;
  std::unordered_map<const void*, std::vector<int64_t>> maps_;  // TENSOR_MAP args
  int line_ = 0;
  int64_t shared_end_ = 1024;  // shared addresses start here (0 stays unused)
};

}  // namespace

std::shared_ptr<const EmuKernel> emu_compile(const LinearProgram& p, const Target& target) {
  return Translator(p, target).run();
}

void emu_launch_dims(const EmuKernel& k, LaunchDims& grid, LaunchDims& block) {
  grid = k.grid;
  block = k.block;
}

}  // namespace kitten
