#include "backends/emu/emulator.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>

namespace kitten {

namespace {

constexpr int kWarp = 32;

union Lane {
  int64_t i;
  double f;
};

enum class BufKind { Global, Shared, Reg };

struct BufferDecl {
  BufKind kind;
  int64_t slot;
  DType elem;    // the buffer's element dtype
  int64_t size;  // elements (shared, reg)
  std::string name;
};

enum class Kind {
  Nop,
  Const,
  IntParam,
  Var,
  Special,
  Range,
  End,
  Index,
  Load,
  Store,
  Alu,
  Cast,
  Bitcast,
  Vectorize,
  Extract,
  Shuffle,
  Mma,
  AsyncCopy,
  Wait,
  Barrier,
};

struct Instr {
  Kind kind = Kind::Nop;
  Op op = Op::SINK;
  DType dtype;  // of the result (for memory ops: of the value accessed)
  DType in;     // of the first source (ALU, CAST, BITCAST)
  int out = -1;
  std::vector<int> src;  // source slots
  Lane imm{0};
  int buf = -1;                                   // memory ops: the buffer
  int idx = -1, gate = -1, alt = -1, value = -1;  // memory ops: slots
  int src_buf = -1, src_idx = -1;                 // async copy: the global side
  int end_pc = -1, level = 0;                     // RANGE: its END and its place there
  std::vector<int> closes;                        // END: RANGE pcs, innermost first
  SpecialArg special{};
  std::string text;  // SHUFFLE mode, var name
  const MmaLayout* mma = nullptr;
  std::vector<int64_t> lanes;  // EXTRACT
};

}  // namespace

struct EmuKernel {
  std::string name;
  std::vector<Instr> code;
  std::vector<BufferDecl> buffers;
  int slots = 0;  // Lane rows of 32
  int num_params = 0;
  std::vector<std::string> vars;
  std::vector<bool> buffer_params;
  LaunchDims grid, block;
};

namespace {

[[noreturn]] void refuse(const LinearProgram& p, const std::string& what) {
  throw BackendError("emu: kernel '" + p.name + "' " + what);
}

// ---- values ----------------------------------------------------------------------------

int64_t wrap_int(int64_t v, DType d) {
  if (d.is_bool()) return v != 0;
  int bits = d.bits();
  if (bits >= 64) return v;
  uint64_t u = uint64_t(v) & ((uint64_t(1) << bits) - 1);
  if (!d.is_unsigned() && (u >> (bits - 1))) u |= ~((uint64_t(1) << bits) - 1);
  return int64_t(u);
}

double round_float(double x, DType d) {
  DType e = d.element();
  if (const FloatFormat* f = e.narrow_float()) return decode_float(*f, encode_float(*f, x));
  if (e == dtypes::float32) return double(float(x));
  return x;
}

Lane decode(const unsigned char* p, DType d) {
  Lane v;
  switch (d.scalar_type()) {
    case ScalarType::Float32: {
      float f;
      std::memcpy(&f, p, 4);
      v.f = f;
      return v;
    }
    case ScalarType::Float64:
      std::memcpy(&v.f, p, 8);
      return v;
    case ScalarType::BFloat16: {  // the top half of a float32
      uint16_t h;
      std::memcpy(&h, p, 2);
      v.f = std::bit_cast<float>(uint32_t(h) << 16);
      return v;
    }
    case ScalarType::Float16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      v.f = decode_float(kFloat16, h);
      return v;
    }
    case ScalarType::Float8E4M3:
    case ScalarType::Float8E5M2:
      v.f = decode_float(*d.narrow_float(), *p);
      return v;
    default: {
      uint64_t u = 0;
      std::memcpy(&u, p, size_t(d.bits() / 8));
      v.i = wrap_int(int64_t(u), d);
      return v;
    }
  }
}

void encode(unsigned char* p, DType d, Lane v) {
  switch (d.scalar_type()) {
    case ScalarType::Float32: {
      float f = float(v.f);
      std::memcpy(p, &f, 4);
      return;
    }
    case ScalarType::Float64:
      std::memcpy(p, &v.f, 8);
      return;
    case ScalarType::BFloat16:
      if (double(float(v.f)) == v.f && !std::isnan(v.f)) {  // exact in float32: round its low half
        uint32_t x = std::bit_cast<uint32_t>(float(v.f));
        uint16_t h = uint16_t((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
        std::memcpy(p, &h, 2);
        return;
      }
      [[fallthrough]];
    case ScalarType::Float16: {
      uint16_t h = uint16_t(encode_float(*d.narrow_float(), v.f));
      std::memcpy(p, &h, 2);
      return;
    }
    case ScalarType::Float8E4M3:
    case ScalarType::Float8E5M2:
      *p = uint8_t(encode_float(*d.narrow_float(), v.f));
      return;
    default:
      std::memcpy(p, &v.i, size_t(d.bits() / 8));
      return;
  }
}

// ---- translating the linear program --------------------------------------------------------

class Translator {
 public:
  explicit Translator(const LinearProgram& p) : p_(p) {}

  std::shared_ptr<EmuKernel> run() {
    k_ = std::make_shared<EmuKernel>();
    k_->name = p_.name.empty() ? "kernel" : p_.name;
    for (const UOp& u : p_.ops) {
      if (u.op() == Op::DEFINE_VAR) vars_.insert(std::get<VarArg>(u.arg()).name);
      if (u.op() == Op::PARAM) k_->num_params = std::max<int>(k_->num_params, int(u.int_arg()) + 1);
    }
    k_->vars.assign(vars_.begin(), vars_.end());
    k_->buffer_params.assign(size_t(k_->num_params), false);
    for (const UOp& u : p_.ops) emit(u);
    return k_;
  }

 private:
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
  void add_buffer(const UOp& u, BufKind kind, const std::string& what) {
    buffers_[u.id()] = int(k_->buffers.size());
    k_->buffers.push_back({kind, u.int_arg(), u.dtype().pointee(), u.dtype().size(),
                           what + " " + std::to_string(u.int_arg())});
  }
  Instr& push(Kind kind, const UOp& u) {
    Instr in;
    in.kind = kind;
    in.op = u.op();
    in.dtype = u.dtype();
    k_->code.push_back(in);
    return k_->code.back();
  }
  void value(Instr& in, const UOp& u) {
    in.out = new_slot(u.dtype());
    slots_[u.id()] = in.out;
  }

  void emit(const UOp& u) {
    switch (u.op()) {
      case Op::PARAM:
        if (u.dtype().is_pointer()) {
          add_buffer(u, BufKind::Global, "param");
          k_->buffer_params[size_t(u.int_arg())] = true;
        } else {
          Instr& in = push(Kind::IntParam, u);
          in.imm.i = u.int_arg();
          value(in, u);
        }
        return;
      case Op::DEFINE_LOCAL:
        add_buffer(u, BufKind::Shared, "shared");
        return;
      case Op::DEFINE_REG:
        add_buffer(u, BufKind::Reg, "register buffer");
        return;
      case Op::AFTER:
      case Op::GROUP:
      case Op::SINK:
        return;
      case Op::IF:
      case Op::ENDIF:
        refuse(p_, "uses IF/ENDIF, which the emulator does not run yet");
      case Op::CONST: {
        Instr& in = push(Kind::Const, u);
        if (u.dtype().is_float())
          in.imm.f = u.const_value();
        else
          in.imm.i = u.const_int();
        value(in, u);
        return;
      }
      case Op::DEFINE_VAR: {
        Instr& in = push(Kind::Var, u);
        in.imm.i = k_->num_params + int64_t(std::distance(
                                        vars_.begin(), vars_.find(std::get<VarArg>(u.arg()).name)));
        value(in, u);
        return;
      }
      case Op::SPECIAL: {
        Instr& in = push(Kind::Special, u);
        in.special = std::get<SpecialArg>(u.arg());
        in.src = {slot(u.src(0))};
        if (u.src(0).op() != Op::CONST) refuse(p_, "has a SPECIAL whose extent is not a constant");
        int64_t extent = u.src(0).const_int();
        LaunchDims& d = in.special.kind == SpecialKind::BlockIdx ? k_->grid : k_->block;
        (in.special.dim == 0 ? d.x : in.special.dim == 1 ? d.y : d.z) = extent;
        value(in, u);
        return;
      }
      case Op::RANGE: {
        Instr& in = push(Kind::Range, u);
        in.src = {slot(u.src(0))};
        value(in, u);
        range_pc_[u.id()] = int(k_->code.size()) - 1;
        return;
      }
      case Op::END: {
        Instr& in = push(Kind::End, u);
        int pc = int(k_->code.size()) - 1;
        // The ranges it closes, innermost (opened last) first.
        for (size_t i = 1; i < u.src().size(); ++i)
          in.closes.push_back(range_pc_.at(u.src(i).id()));
        std::sort(in.closes.begin(), in.closes.end(), std::greater<int>());
        for (size_t level = 0; level < in.closes.size(); ++level) {
          k_->code[size_t(in.closes[level])].end_pc = pc;
          k_->code[size_t(in.closes[level])].level = int(level);
        }
        return;
      }
      case Op::INDEX: {
        Instr& in = push(Kind::Index, u);
        in.buf = buffer(u.src(0));
        in.src = {slot(u.src(1))};
        if (u.src().size() == 3) in.gate = slot(u.src(2));
        value(in, u);
        index_[u.id()] = int(k_->code.size()) - 1;
        return;
      }
      case Op::LOAD: {
        const Instr& ix = k_->code[size_t(index_.at(u.src(0).id()))];
        int buf = ix.buf, idx = ix.out, gate = ix.gate;
        Instr& in = push(Kind::Load, u);
        in.buf = buf, in.idx = idx, in.gate = gate;
        if (u.src().size() == 2) in.alt = slot(u.src(1));
        value(in, u);
        return;
      }
      case Op::STORE: {
        const Instr& ix = k_->code[size_t(index_.at(u.src(0).id()))];
        int buf = ix.buf, idx = ix.out, gate = ix.gate;
        Instr& in = push(Kind::Store, u);
        in.dtype = u.src(1).dtype();
        in.buf = buf, in.idx = idx, in.gate = gate, in.value = slot(u.src(1));
        return;
      }
      case Op::ASYNC_COPY: {
        const Instr& dst = k_->code[size_t(index_.at(u.src(0).id()))];
        const Instr& src = k_->code[size_t(index_.at(u.src(1).id()))];
        int db = dst.buf, di = dst.out, sb = src.buf, si = src.out;
        Instr& in = push(Kind::AsyncCopy, u);
        in.dtype = u.src(0).dtype().pointee();
        in.buf = db, in.idx = di, in.src_buf = sb, in.src_idx = si;
        value(in, u);
        return;
      }
      case Op::WAIT: {
        Instr& in = push(Kind::Wait, u);
        for (const UOp& s : u.src()) in.src.push_back(slot(s));
        return;
      }
      case Op::BARRIER:
        push(Kind::Barrier, u);
        return;
      case Op::SHUFFLE: {
        Instr& in = push(Kind::Shuffle, u);
        in.src = {slot(u.src(0)), slot(u.src(1))};
        in.text = u.name_arg();
        value(in, u);
        return;
      }
      case Op::MMA: {
        Instr& in = push(Kind::Mma, u);
        in.src = {slot(u.src(0)), slot(u.src(1)), slot(u.src(2))};
        in.mma = find_mma_layout(u.name_arg());
        if (in.mma->m * in.mma->k > 256 || in.mma->k * in.mma->n > 128 ||
            in.mma->m * in.mma->n > 128)
          refuse(p_,
                 "uses the MMA layout " + in.mma->name + ", larger than the emulator's m16n8k16");
        value(in, u);
        return;
      }
      case Op::VECTORIZE: {
        Instr& in = push(Kind::Vectorize, u);
        for (const UOp& s : u.src()) in.src.push_back(slot(s));
        value(in, u);
        return;
      }
      case Op::EXTRACT: {
        Instr& in = push(Kind::Extract, u);
        in.src = {slot(u.src(0))};
        in.lanes = std::get<std::vector<int64_t>>(u.arg());
        value(in, u);
        return;
      }
      case Op::CAST:
      case Op::BITCAST: {
        Instr& in = push(u.op() == Op::CAST ? Kind::Cast : Kind::Bitcast, u);
        in.src = {slot(u.src(0))};
        in.in = u.src(0).dtype();
        value(in, u);
        return;
      }
      default: {
        Instr& in = push(Kind::Alu, u);
        for (const UOp& s : u.src()) in.src.push_back(slot(s));
        in.in = u.src(0).dtype();
        value(in, u);
        return;
      }
    }
  }

  const LinearProgram& p_;
  std::shared_ptr<EmuKernel> k_;
  std::set<std::string> vars_;
  std::unordered_map<const void*, int> slots_, buffers_, range_pc_, index_;
};

// ---- running ------------------------------------------------------------------------------

struct SharedBuf {
  std::vector<unsigned char> bytes, init;
  std::vector<int32_t> writer, reader;  // thread ids; reader -2: several threads
  std::vector<uint32_t> w_epoch, r_epoch;
  std::vector<int32_t> pending;  // thread+1 whose async copy has not landed, else 0
};

struct PendingCopy {
  int thread;
  int64_t token;
  int buf;
  int64_t offset;
  std::vector<unsigned char> data;
};

struct Warp {
  int pc = 0;
  uint32_t exists = 0, mask = 0;
  std::vector<uint32_t> masks;
  std::vector<Lane> regs;
  std::vector<std::vector<unsigned char>> reg_bytes, reg_init;  // per reg buffer: 32 threads
  bool done = false, at_barrier = false;
  int end_level = -1;  // set when a RANGE with no iterations jumps to its END
};

class Runner {
 public:
  Runner(const EmuKernel& k, LaunchDims grid, LaunchDims block, std::span<const KernelArg> args)
      : k_(k), grid_(grid), block_(block), args_(args) {}

  uint64_t run() {
    check_args();
    for (int64_t bz = 0; bz < grid_.z; ++bz)
      for (int64_t by = 0; by < grid_.y; ++by)
        for (int64_t bx = 0; bx < grid_.x; ++bx) run_block({bx, by, bz});
    return issued_;
  }

 private:
  // ---- faults ----
  std::string thread_text(int t) const {
    int64_t x = t % block_.x, y = (t / block_.x) % block_.y, z = t / (block_.x * block_.y);
    return "thread (" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) +
           ") of block (" + std::to_string(bid_.x) + "," + std::to_string(bid_.y) + "," +
           std::to_string(bid_.z) + ")";
  }
  [[noreturn]] void fault(const std::string& what, int buf, int64_t index, int thread) const {
    std::string where =
        buf >= 0 ? " in " + k_.buffers[size_t(buf)].name + " at index " + std::to_string(index)
                 : "";
    throw BackendError("emu: kernel '" + k_.name + "': " + what + where + " by " +
                       thread_text(thread));
  }
  [[noreturn]] void fault_block(const std::string& what) const {
    throw BackendError("emu: kernel '" + k_.name + "': " + what + " in block (" +
                       std::to_string(bid_.x) + "," + std::to_string(bid_.y) + "," +
                       std::to_string(bid_.z) + ")");
  }

  void check_args() {
    size_t want = size_t(k_.num_params) + k_.vars.size();
    if (args_.size() != want)
      throw BackendError("emu: kernel '" + k_.name + "' takes " + std::to_string(want) +
                         " arguments, got " + std::to_string(args_.size()));
    for (size_t i = 0; i < args_.size(); ++i) {
      bool is_buffer = i < k_.buffer_params.size() && k_.buffer_params[i];
      if (is_buffer != std::holds_alternative<Buffer>(args_[i]))
        throw BackendError("emu: kernel '" + k_.name + "' argument " + std::to_string(i) + " is " +
                           (is_buffer ? "a buffer" : "an integer") + ", got the other");
    }
    auto same = [](LaunchDims a, LaunchDims b) { return a.x == b.x && a.y == b.y && a.z == b.z; };
    if (!same(grid_, k_.grid) || !same(block_, k_.block))
      throw BackendError("emu: kernel '" + k_.name + "' needs a grid of " + dims(k_.grid) +
                         " blocks of " + dims(k_.block) + " threads, launched with " + dims(grid_) +
                         " of " + dims(block_));
    if (block_.x * block_.y * block_.z > 1024)
      throw BackendError("emu: kernel '" + k_.name + "' has more than 1024 threads per block");
  }
  static std::string dims(LaunchDims d) {
    return std::to_string(d.x) + "x" + std::to_string(d.y) + "x" + std::to_string(d.z);
  }

  // ---- blocks and warps ----
  void run_block(LaunchDims bid) {
    bid_ = bid;
    epoch_ = 1;
    pending_.clear();
    shared_.resize(k_.buffers.size());  // reused from block to block: no reallocation
    for (size_t b = 0; b < k_.buffers.size(); ++b) {
      const BufferDecl& d = k_.buffers[b];
      if (d.kind != BufKind::Shared) continue;
      size_t n = size_t(d.size * d.elem.itemsize());
      SharedBuf& s = shared_[b];
      s.bytes.assign(n, 0);
      s.init.assign(n, 0);
      s.writer.assign(n, -1);
      s.reader.assign(n, -1);
      s.w_epoch.assign(n, 0);
      s.r_epoch.assign(n, 0);
      s.pending.assign(n, 0);
    }
    int64_t threads = block_.x * block_.y * block_.z;
    std::vector<Warp> warps(size_t((threads + kWarp - 1) / kWarp));
    for (size_t w = 0; w < warps.size(); ++w) {
      int64_t live = std::min<int64_t>(kWarp, threads - int64_t(w) * kWarp);
      warps[w].exists = live == kWarp ? 0xFFFFFFFFu : (1u << live) - 1;
      warps[w].mask = warps[w].exists;
      warps[w].regs.assign(size_t(k_.slots) * kWarp, Lane{0});
      warps[w].reg_bytes.resize(k_.buffers.size());
      warps[w].reg_init.resize(k_.buffers.size());
      for (size_t b = 0; b < k_.buffers.size(); ++b)
        if (k_.buffers[b].kind == BufKind::Reg) {
          size_t n = size_t(k_.buffers[b].size * k_.buffers[b].elem.itemsize()) * kWarp;
          warps[w].reg_bytes[b].assign(n, 0);
          warps[w].reg_init[b].assign(n, 0);
        }
    }
    for (;;) {
      for (size_t w = 0; w < warps.size(); ++w) {
        warp_id_ = int(w);
        Warp& wp = warps[w];
        while (!wp.done && !wp.at_barrier) step(wp);
      }
      bool waiting = false, all_done = true;
      int barrier_pc = -1;
      for (const Warp& wp : warps) {
        if (wp.done) continue;
        all_done = false;
        waiting = true;
        if (barrier_pc >= 0 && wp.pc != barrier_pc) fault_block("warps wait at different barriers");
        barrier_pc = wp.pc;
      }
      if (all_done) return;
      if (waiting) {
        ++epoch_;
        for (Warp& wp : warps)
          if (!wp.done) wp.at_barrier = false, ++wp.pc;
      }
    }
  }

  int thread_of(int lane) const { return warp_id_ * kWarp + lane; }
  Lane* reg(Warp& w, int slot, int elem = 0) {
    return &w.regs[(size_t(slot) + size_t(elem)) * kWarp];
  }

  template <class F>
  void each(uint32_t mask, F f) {
    while (mask) {
      int l = std::countr_zero(mask);
      mask &= mask - 1;
      f(l);
    }
  }

  // ---- memory ----
  // Checks an access of `bytes` at element `index` of buffer b by lane l, and returns the
  // byte offset.
  int64_t check_access(int b, int64_t index, int bytes, int lane, bool write) {
    const BufferDecl& d = k_.buffers[size_t(b)];
    int64_t elem = d.elem.itemsize(), offset = index * elem, size;
    uintptr_t base = 0;
    if (d.kind == BufKind::Global) {
      const Buffer& buf = std::get<Buffer>(args_[size_t(d.slot)]);
      size = int64_t(buf.bytes);
      base = reinterpret_cast<uintptr_t>(buf.ptr);
    } else {
      size = d.size * elem;
    }
    if (index < 0 || offset + bytes > size)
      fault(std::string(write ? "out-of-bounds write" : "out-of-bounds read") + " of " +
                std::to_string(bytes) + " bytes (the buffer has " +
                std::to_string(size / std::max<int64_t>(elem, 1)) + " elements)",
            b, index, thread_of(lane));
    if (bytes > elem && (base + uintptr_t(offset)) % uintptr_t(bytes) != 0)
      fault("misaligned " + std::to_string(bytes) + "-byte " + (write ? "write" : "read") +
                " (byte offset " + std::to_string(offset) + ")",
            b, index, thread_of(lane));
    return offset;
  }

  unsigned char* memory(Warp& w, int b, int64_t offset, int lane) {
    const BufferDecl& d = k_.buffers[size_t(b)];
    if (d.kind == BufKind::Global)
      return static_cast<unsigned char*>(std::get<Buffer>(args_[size_t(d.slot)]).ptr) + offset;
    if (d.kind == BufKind::Shared) return shared_[size_t(b)].bytes.data() + offset;
    return w.reg_bytes[size_t(b)].data() + size_t(lane) * size_t(d.size * d.elem.itemsize()) +
           size_t(offset);
  }

  void track(Warp& w, int b, int64_t index, int64_t offset, int bytes, int lane, bool write) {
    const BufferDecl& d = k_.buffers[size_t(b)];
    int t = thread_of(lane);
    if (d.kind == BufKind::Reg) {
      unsigned char* init =
          w.reg_init[size_t(b)].data() + size_t(lane) * size_t(d.size * d.elem.itemsize());
      for (int i = 0; i < bytes; ++i) {
        if (write)
          init[offset + i] = 1;
        else if (!init[offset + i])
          fault("read of register memory never written", b, index, t);
      }
      return;
    }
    if (d.kind != BufKind::Shared) return;
    SharedBuf& s = shared_[size_t(b)];
    for (int64_t i = offset; i < offset + bytes; ++i) {
      if (s.pending[size_t(i)] && !write)
        fault("read of an async copy's destination before its WAIT", b, index, t);
      if (write) {
        bool ww = s.w_epoch[size_t(i)] == epoch_ && s.writer[size_t(i)] != t;
        bool rw =
            s.r_epoch[size_t(i)] == epoch_ && s.reader[size_t(i)] != -1 && s.reader[size_t(i)] != t;
        if (ww || rw)
          fault("shared memory race: a write after " + std::string(ww ? "a write" : "a read") +
                    " by " +
                    thread_text(ww ? s.writer[size_t(i)] : std::max(s.reader[size_t(i)], 0)) +
                    " with no barrier between,",
                b, index, t);
        s.writer[size_t(i)] = t;
        s.w_epoch[size_t(i)] = epoch_;
        s.init[size_t(i)] = 1;
      } else {
        if (!s.init[size_t(i)]) fault("read of shared memory never written", b, index, t);
        if (s.w_epoch[size_t(i)] == epoch_ && s.writer[size_t(i)] != t)
          fault("shared memory race: a read after a write by " + thread_text(s.writer[size_t(i)]) +
                    " with no barrier between,",
                b, index, t);
        if (s.r_epoch[size_t(i)] != epoch_)
          s.reader[size_t(i)] = t, s.r_epoch[size_t(i)] = epoch_;
        else if (s.reader[size_t(i)] != t)
          s.reader[size_t(i)] = -2;
      }
    }
  }

  void load(Warp& w, const Instr& in) {
    DType d = in.dtype, e = d.element();
    int n = d.count(), bytes = d.itemsize();
    each(w.mask, [&](int l) {
      bool on = in.gate < 0 || reg(w, in.gate)[l].i != 0;
      if (!on) {
        for (int v = 0; v < n; ++v) reg(w, in.out, v)[l] = reg(w, in.alt, v)[l];
        return;
      }
      int64_t index = reg(w, in.idx)[l].i;
      int64_t off = check_access(in.buf, index, bytes, l, false);
      track(w, in.buf, index, off, bytes, l, false);
      const unsigned char* p = memory(w, in.buf, off, l);
      for (int v = 0; v < n; ++v) reg(w, in.out, v)[l] = decode(p + v * e.itemsize(), e);
    });
  }

  void store(Warp& w, const Instr& in) {
    DType d = in.dtype, e = d.element();
    int n = d.count(), bytes = d.itemsize();
    each(w.mask, [&](int l) {
      if (in.gate >= 0 && reg(w, in.gate)[l].i == 0) return;
      int64_t index = reg(w, in.idx)[l].i;
      int64_t off = check_access(in.buf, index, bytes, l, true);
      track(w, in.buf, index, off, bytes, l, true);
      unsigned char* p = memory(w, in.buf, off, l);
      for (int v = 0; v < n; ++v) encode(p + v * e.itemsize(), e, reg(w, in.value, v)[l]);
    });
  }

  void async_copy(Warp& w, const Instr& in) {
    int bytes = in.dtype.itemsize();
    each(w.mask, [&](int l) {
      int64_t si = reg(w, in.src_idx)[l].i, di = reg(w, in.idx)[l].i;
      int64_t soff = check_access(in.src_buf, si, bytes, l, false);
      int64_t doff = check_access(in.buf, di, bytes, l, true);
      const unsigned char* src = memory(w, in.src_buf, soff, l);
      PendingCopy c{thread_of(l), next_token_, in.buf, doff,
                    std::vector<unsigned char>(src, src + bytes)};
      SharedBuf& s = shared_[size_t(in.buf)];
      for (int i = 0; i < bytes; ++i) s.pending[size_t(doff + i)] = thread_of(l) + 1;
      reg(w, in.out)[l].i = next_token_;
      pending_.push_back(std::move(c));
    });
    ++next_token_;
  }

  void wait(Warp& w, const Instr& in) {
    each(w.mask, [&](int l) {
      int t = thread_of(l);
      for (int s : in.src) {
        int64_t token = reg(w, s)[l].i;
        for (auto it = pending_.begin(); it != pending_.end();) {
          if (it->thread != t || it->token != token) {
            ++it;
            continue;
          }
          SharedBuf& sb = shared_[size_t(it->buf)];
          for (size_t i = 0; i < it->data.size(); ++i) sb.pending[size_t(it->offset) + i] = 0;
          int64_t index = it->offset / k_.buffers[size_t(it->buf)].elem.itemsize();
          track(w, it->buf, index, it->offset, int(it->data.size()), l, true);
          std::memcpy(sb.bytes.data() + it->offset, it->data.data(), it->data.size());
          it = pending_.erase(it);
        }
      }
    });
  }

  // ---- arithmetic ----
  Lane alu(const Instr& in, Lane a, Lane b, Lane c) {
    DType d = in.dtype, s = in.in;
    Lane r{0};
    bool f = s.is_float();
    bool u = s.is_unsigned();
    switch (in.op) {
      case Op::NEG:
        if (f)
          r.f = -a.f;
        else
          r.i = -a.i;
        break;
      case Op::RECIP:
        r.f = 1.0 / a.f;
        break;
      case Op::SQRT:
        r.f = std::sqrt(a.f);
        break;
      case Op::EXP2:
        r.f = std::exp2(a.f);
        break;
      case Op::LOG2:
        r.f = std::log2(a.f);
        break;
      case Op::SIN:
        r.f = std::sin(a.f);
        break;
      case Op::TRUNC:
        r.f = std::trunc(a.f);
        break;
      case Op::ADD:
        if (f)
          r.f = a.f + b.f;
        else
          r.i = int64_t(uint64_t(a.i) + uint64_t(b.i));
        break;
      case Op::SUB:
        if (f)
          r.f = a.f - b.f;
        else
          r.i = int64_t(uint64_t(a.i) - uint64_t(b.i));
        break;
      case Op::MUL:
        if (f)
          r.f = a.f * b.f;
        else
          r.i = int64_t(uint64_t(a.i) * uint64_t(b.i));
        break;
      case Op::FDIV:
        r.f = a.f / b.f;
        break;
      case Op::IDIV:
      case Op::MOD:
        if (b.i == 0) throw std::domain_error("integer division by zero");
        if (u)
          r.i = int64_t(in.op == Op::IDIV ? uint64_t(a.i) / uint64_t(b.i)
                                          : uint64_t(a.i) % uint64_t(b.i));
        else if (a.i == INT64_MIN && b.i == -1)
          r.i = in.op == Op::IDIV ? INT64_MIN : 0;
        else
          r.i = in.op == Op::IDIV ? a.i / b.i : a.i % b.i;
        break;
      case Op::MAX:
        if (f)
          r.f = std::fmax(a.f, b.f);
        else
          r.i = u ? int64_t(std::max(uint64_t(a.i), uint64_t(b.i))) : std::max(a.i, b.i);
        break;
      case Op::MIN:
        if (f)
          r.f = std::fmin(a.f, b.f);
        else
          r.i = u ? int64_t(std::min(uint64_t(a.i), uint64_t(b.i))) : std::min(a.i, b.i);
        break;
      case Op::CMPLT:
        r.i = f ? a.f < b.f : u ? uint64_t(a.i) < uint64_t(b.i) : a.i < b.i;
        break;
      case Op::CMPEQ:
        r.i = f ? a.f == b.f : a.i == b.i;
        break;
      case Op::CMPNE:
        r.i = f ? a.f != b.f : a.i != b.i;
        break;
      case Op::AND:
        r.i = a.i & b.i;
        break;
      case Op::OR:
        r.i = a.i | b.i;
        break;
      case Op::XOR:
        r.i = a.i ^ b.i;
        break;
      case Op::SHL:
        r.i = int64_t(uint64_t(a.i) << (b.i & 63));
        break;
      case Op::SHR:
        r.i = u ? int64_t(uint64_t(a.i) >> (b.i & 63)) : a.i >> (b.i & 63);
        break;
      case Op::WHERE:
        return a.i ? b : c;
      case Op::MULACC:
        if (f)
          r.f = a.f * b.f + c.f;
        else
          r.i = int64_t(uint64_t(a.i) * uint64_t(b.i) + uint64_t(c.i));
        break;
      default:
        throw BackendError("emu: kernel '" + k_.name + "' uses " + op_name(in.op) +
                           ", which the emulator does not run");
    }
    if (d.is_float())
      r.f = round_float(r.f, d);
    else
      r.i = wrap_int(r.i, d.element());
    return r;
  }

  Lane cast(const Instr& in, Lane a) {
    DType to = in.dtype.element(), from = in.in.element();
    Lane r{0};
    if (to.is_float())
      r.f = round_float(from.is_float()      ? a.f
                        : from.is_unsigned() ? double(uint64_t(a.i))
                                             : double(a.i),
                        to);
    else if (to.is_bool())
      r.i = from.is_float() ? a.f != 0 : a.i != 0;
    else
      r.i = wrap_int(from.is_float() ? int64_t(std::trunc(a.f)) : a.i, to);
    return r;
  }

  void mma(Warp& w, const Instr& in) {
    const MmaLayout& L = *in.mma;
    if (w.mask != 0xFFFFFFFFu)
      fault("MMA with only some lanes of the warp active", -1, 0,
            thread_of(std::countr_zero(~w.mask | 0u)));
    double A[16 * 16], B[16 * 8], C[16 * 8];  // the largest registered shape: m16n8k16
    for (int l = 0; l < kWarp; ++l) {
      for (int i = 0; i < L.a.count(); ++i) {
        auto [r, c] = L.a_at(l, i);
        A[r * L.k + c] = reg(w, in.src[0], i)[l].f;
      }
      for (int i = 0; i < L.b.count(); ++i) {
        auto [r, c] = L.b_at(l, i);
        B[r * L.n + c] = reg(w, in.src[1], i)[l].f;
      }
      for (int i = 0; i < L.c.count(); ++i) {
        auto [r, c] = L.c_at(l, i);
        C[r * L.n + c] = reg(w, in.src[2], i)[l].f;
      }
    }
    for (int l = 0; l < kWarp; ++l)
      for (int i = 0; i < L.c.count(); ++i) {
        auto [r, c] = L.c_at(l, i);
        double acc = C[r * L.n + c];
        for (int kk = 0; kk < L.k; ++kk) acc += A[r * L.k + kk] * B[kk * L.n + c];
        reg(w, in.out, i)[l].f = double(float(acc));
      }
  }

  void shuffle(Warp& w, const Instr& in) {
    std::vector<Lane> src(reg(w, in.src[0]), reg(w, in.src[0]) + kWarp);
    each(w.mask, [&](int l) {
      int64_t arg = reg(w, in.src[1])[l].i, from = l;
      if (in.text == "idx")
        from = arg % kWarp;
      else if (in.text == "xor")
        from = (l ^ arg) & (kWarp - 1);
      else if (in.text == "up")
        from = l - arg >= 0 ? l - arg : l;
      else
        from = l + arg < kWarp ? l + arg : l;
      if (!((w.mask >> from) & 1))
        fault("shuffle from lane " + std::to_string(from) + ", which is not active,", -1, 0,
              thread_of(l));
      reg(w, in.out)[l] = src[size_t(from)];
    });
  }

  int64_t special(const Instr& in, int lane) const {
    if (in.special.kind == SpecialKind::BlockIdx)
      return in.special.dim == 0 ? bid_.x : in.special.dim == 1 ? bid_.y : bid_.z;
    int64_t t = thread_of(lane);
    if (in.special.dim == 0) return t % block_.x;
    if (in.special.dim == 1) return (t / block_.x) % block_.y;
    return t / (block_.x * block_.y);
  }

  // ---- one instruction of one warp ----
  void step(Warp& w) {
    if (w.pc >= int(k_.code.size())) {
      w.done = true;
      return;
    }
    const Instr& in = k_.code[size_t(w.pc)];
    ++issued_;
    int count = in.dtype.is_value() ? in.dtype.count() : 1;
    switch (in.kind) {
      case Kind::Nop:
        break;
      case Kind::Const:
        each(w.exists, [&](int l) { reg(w, in.out)[l] = in.imm; });
        break;
      case Kind::IntParam:
      case Kind::Var: {
        Lane v;
        v.i = std::get<int64_t>(args_[size_t(in.imm.i)]);
        each(w.exists, [&](int l) { reg(w, in.out)[l] = v; });
        break;
      }
      case Kind::Special:
        each(w.mask, [&](int l) { reg(w, in.out)[l].i = special(in, l); });
        break;
      case Kind::Range: {
        w.masks.push_back(w.mask);
        uint32_t live = 0;
        each(w.mask, [&](int l) {
          reg(w, in.out)[l].i = 0;
          if (0 < reg(w, in.src[0])[l].i) live |= 1u << l;
        });
        if (!live) {
          w.end_level = in.level;
          w.pc = in.end_pc;
          return;
        }
        w.mask = live;
        break;
      }
      case Kind::End: {
        size_t start = w.end_level >= 0 ? size_t(w.end_level) : 0;
        bool skipped = w.end_level >= 0;
        w.end_level = -1;
        for (size_t level = start; level < in.closes.size(); ++level) {
          const Instr& r = k_.code[size_t(in.closes[level])];
          if (!(skipped && level == start)) {
            uint32_t live = 0;
            each(w.mask, [&](int l) {
              int64_t& i = reg(w, r.out)[l].i;
              if (++i < reg(w, r.src[0])[l].i) live |= 1u << l;
            });
            if (live) {
              w.mask = live;
              w.pc = in.closes[level] + 1;
              return;
            }
          }
          w.mask = w.masks.back();
          w.masks.pop_back();
        }
        break;
      }
      case Kind::Index:
        each(w.mask, [&](int l) { reg(w, in.out)[l] = reg(w, in.src[0])[l]; });
        break;
      case Kind::Load:
        load(w, in);
        break;
      case Kind::Store:
        store(w, in);
        break;
      case Kind::AsyncCopy:
        async_copy(w, in);
        break;
      case Kind::Wait:
        wait(w, in);
        break;
      case Kind::Barrier:
        if (w.mask != w.exists)
          fault("barrier reached by only some threads of a warp", -1, 0,
                thread_of(std::countr_zero(w.mask | 0u)));
        w.at_barrier = true;
        return;  // the block scheduler moves it past the barrier
      case Kind::Shuffle:
        shuffle(w, in);
        break;
      case Kind::Mma:
        mma(w, in);
        break;
      case Kind::Vectorize:
        for (size_t v = 0; v < in.src.size(); ++v)
          each(w.mask, [&](int l) { reg(w, in.out, int(v))[l] = reg(w, in.src[v])[l]; });
        break;
      case Kind::Extract:
        for (size_t v = 0; v < in.lanes.size(); ++v)
          each(w.mask,
               [&](int l) { reg(w, in.out, int(v))[l] = reg(w, in.src[0], int(in.lanes[v]))[l]; });
        break;
      case Kind::Cast:
        for (int v = 0; v < count; ++v)
          each(w.mask, [&](int l) { reg(w, in.out, v)[l] = cast(in, reg(w, in.src[0], v)[l]); });
        break;
      case Kind::Bitcast:
        bitcast(w, in);
        break;
      case Kind::Alu: {
        Lane zero{0};
        for (int v = 0; v < count; ++v)
          each(w.mask, [&](int l) {
            Lane a = reg(w, in.src[0], v)[l];
            Lane b = in.src.size() > 1 ? reg(w, in.src[1], v)[l] : zero;
            Lane c = in.src.size() > 2 ? reg(w, in.src[2], v)[l] : zero;
            try {
              reg(w, in.out, v)[l] = alu(in, a, b, c);
            } catch (const std::domain_error& e) {
              fault(e.what(), -1, 0, thread_of(l));
            }
          });
        break;
      }
    }
    ++w.pc;
  }

  void bitcast(Warp& w, const Instr& in) {
    DType from = in.in, to = in.dtype;
    each(w.mask, [&](int l) {
      std::vector<unsigned char> bytes(size_t(from.itemsize()));
      for (int v = 0; v < from.count(); ++v)
        encode(bytes.data() + v * from.element().itemsize(), from.element(),
               reg(w, in.src[0], v)[l]);
      for (int v = 0; v < to.count(); ++v)
        reg(w, in.out, v)[l] = decode(bytes.data() + v * to.element().itemsize(), to.element());
    });
  }

  const EmuKernel& k_;
  LaunchDims grid_, block_, bid_;
  std::span<const KernelArg> args_;
  std::vector<SharedBuf> shared_;
  std::vector<PendingCopy> pending_;
  uint32_t epoch_ = 1;
  int64_t next_token_ = 1;
  int warp_id_ = 0;
  uint64_t issued_ = 0;
};

}  // namespace

std::shared_ptr<const EmuKernel> emu_compile(const LinearProgram& p) { return Translator(p).run(); }

void emu_launch_dims(const EmuKernel& k, LaunchDims& grid, LaunchDims& block) {
  grid = k.grid;
  block = k.block;
}

void emu_run(const EmuKernel& k, LaunchDims grid, LaunchDims block, std::span<const KernelArg> args,
             EmuStats* stats) {
  uint64_t n = Runner(k, grid, block, args).run();
  if (stats) stats->warp_instructions += n;
}

}  // namespace kitten
