#include "dsl/expand.h"

#include <algorithm>
#include <functional>
#include <unordered_map>
#include <unordered_set>

#include "dsl/opt.h"
#include "dsl/printer.h"
#include "dsl/symbolic.h"

namespace kitten {

namespace {

using Mask = uint64_t;

class Expander {
 public:
  Expander(const UOp& sink, const Target& target) : sink_(sink), target_(target) {}

  UOp run() {
    std::vector<UOp> order = toposort(sink_);
    for (const UOp& u : order)
      if (u.op() == Op::RANGE &&
          (u.axis().kind == AxisKind::Upcast || u.axis().kind == AxisKind::Unroll)) {
        if (u.src(0).op() != Op::CONST)
          throw IrError("expand: " + std::string(axis_kind_name(u.axis().kind)) + " axis " +
                        std::to_string(u.axis().id) + " needs a constant extent");
        if (axes_.size() == 64) throw IrError("expand: more than 64 expanded axes");
        pos_[u.id()] = int(axes_.size());
        axes_.push_back(u);
      }
    if (axes_.empty()) return sink_;
    std::sort(axes_.begin(), axes_.end(),
              [](const UOp& a, const UOp& b) { return a.axis().id < b.axis().id; });
    for (size_t p = 0; p < axes_.size(); ++p) pos_[axes_[p].id()] = int(p);
    for (const UOp& u : order) {
      Mask m = 0;
      for (const UOp& s : u.src()) m |= mask_.at(s.id());
      if (auto p = pos_.find(u.id()); p != pos_.end()) m |= bit(p->second);
      if (u.op() == Op::END) {
        for (size_t k = 1; k < u.src().size(); ++k)
          if (auto p = pos_.find(u.src(k).id()); p != pos_.end()) {
            m &= ~bit(p->second);
            if (axes_[size_t(p->second)].axis().kind == AxisKind::Unroll)
              unroll_body_[p->second] = u.src(0);
          }
      }
      mask_[u.id()] = m;
      if ((u.op() == Op::STORE || u.op() == Op::ATOMIC)) {
        UOp root = buffer_root(u.src(0).src(0));
        if (root.op() == Op::DEFINE_REG) replicated_[root.id()] |= m & upcast_mask();
      }
    }
    for (size_t p = 0; p < axes_.size(); ++p)
      if (axes_[p].axis().kind == AxisKind::Unroll && !unroll_body_.count(int(p)))
        throw IrError("expand: unroll axis " + std::to_string(axes_[p].axis().id) +
                      " is closed by no END");
    for (const UOp& u : order) {
      bool t = pos_.count(u.id()) || (u.op() == Op::DEFINE_REG && replicated(u));
      for (const UOp& s : u.src()) t = t || touched_.count(s.id());
      if (t) touched_.insert(u.id());
    }
    if (mask_.at(sink_.id()) != 0) throw IrError("expand: an expanded axis is never closed");
    std::vector<int64_t> asg(axes_.size(), 0);
    return build(sink_, asg);
  }

 private:
  static Mask bit(int p) { return Mask(1) << p; }
  Mask upcast_mask() const {
    Mask m = 0;
    for (size_t p = 0; p < axes_.size(); ++p)
      if (axes_[p].axis().kind == AxisKind::Upcast) m |= bit(int(p));
    return m;
  }
  int64_t extent(int p) const { return axes_[size_t(p)].src(0).const_int(); }
  Mask replicated(const UOp& reg) const {
    auto it = replicated_.find(reg.id());
    return it == replicated_.end() ? 0 : it->second;
  }
  // The assignment's axes in `m` as one number (mixed radix, lowest axis fastest).
  int64_t code(Mask m, const std::vector<int64_t>& asg) const {
    int64_t c = 0;
    for (int p = int(axes_.size()) - 1; p >= 0; --p)
      if (m & bit(p)) c = c * extent(p) + asg[size_t(p)];
    return c;
  }
  int64_t count(Mask m) const {
    int64_t c = 1;
    for (size_t p = 0; p < axes_.size(); ++p)
      if (m & bit(int(p))) c *= extent(int(p));
    return c;
  }
  // Calls f for every assignment that agrees with `asg` outside `vary`, in code order.
  void each(Mask vary, std::vector<int64_t> asg,
            const std::function<void(const std::vector<int64_t>&)>& f) const {
    for (size_t p = 0; p < axes_.size(); ++p)
      if (vary & bit(int(p))) asg[p] = 0;
    while (true) {
      f(asg);
      size_t p = 0;
      for (; p < axes_.size(); ++p) {
        if (!(vary & bit(int(p)))) continue;
        if (++asg[p] < extent(int(p))) break;
        asg[p] = 0;
      }
      if (p == axes_.size()) return;
    }
  }

  UOp build(const UOp& u, const std::vector<int64_t>& asg) {
    if (!touched_.count(u.id())) return u;
    Mask m = mask_.at(u.id());
    auto key = std::make_pair(u.id(), code(m, asg));
    if (auto it = memo_.find(key); it != memo_.end()) return it->second;
    UOp out = make(u, asg);
    memo_.emplace(key, out);
    return out;
  }

  UOp make(const UOp& u, const std::vector<int64_t>& asg) {
    Op op = u.op();
    if (auto p = pos_.find(u.id()); p != pos_.end())
      return const_int(u.dtype(), asg[size_t(p->second)]);
    if (op == Op::DEFINE_REG) {
      DType d = u.dtype();
      return define_reg(d.pointee(), d.size() * count(replicated(u)), u.slot());
    }
    if (op == Op::END) return make_end(u, asg);
    if (op == Op::AFTER) return make_after(u, asg);
    if (op == Op::LOAD || op == Op::STORE || op == Op::ATOMIC) {
      UOp root = buffer_root(u.src(0).src(0));
      if (root.op() == Op::DEFINE_REG && replicated(root)) return register_access(u, root, asg);
      if (op != Op::ATOMIC)
        if (std::optional<UOp> v = vectorized(u, asg)) return *v;
    }
    std::vector<UOp> src;
    for (const UOp& s : u.src()) src.push_back(build(s, asg));
    return UOp::make(op, u.dtype(), src, u.arg());
  }

  // An access to a register buffer that upcast copies write each for themselves goes to
  // the copy's own instance. A write that does not depend on an axis of the instances
  // writes every instance along it; a read that does not is ambiguous and refused.
  UOp register_access(const UOp& u, const UOp& root, const std::vector<int64_t>& asg) {
    Mask r = replicated(root), missing = r & ~mask_.at(u.id());
    if (missing && u.op() == Op::LOAD)
      throw IrError("expand: register buffer " + std::to_string(root.slot()) +
                    " is written per copy of an upcast axis and read outside it:\n" +
                    print_graph(sink_, u));
    const UOp& ix = u.src(0);
    std::vector<UOp> writes;
    each(missing, asg, [&](const std::vector<int64_t>& a) {
      std::vector<UOp> isrc;
      for (const UOp& s : ix.src()) isrc.push_back(build(s, a));
      if (int64_t offset = code(r, a) * root.dtype().size())
        isrc[1] = isrc[1] + const_int(isrc[1].dtype(), offset);
      std::vector<UOp> src{UOp::make(Op::INDEX, ix.dtype(), isrc, ix.arg())};
      for (size_t k = 1; k < u.src().size(); ++k) src.push_back(build(u.src(k), a));
      writes.push_back(UOp::make(u.op(), u.dtype(), src, u.arg()));
    });
    if (writes.size() == 1) return writes[0];
    return UOp::make(Op::GROUP, dtypes::void_, writes);
  }

  // The copies of the body for every value of the expanded ranges this END closes, under
  // the ranges it still closes (or alone, where it closes none).
  UOp make_end(const UOp& u, const std::vector<int64_t>& asg) {
    Mask closed = 0;
    std::vector<UOp> kept;
    for (size_t k = 1; k < u.src().size(); ++k) {
      if (auto p = pos_.find(u.src(k).id()); p != pos_.end())
        closed |= bit(p->second);
      else
        kept.push_back(build(u.src(k), asg));
    }
    // An END that still closes a loop closes it around every copy: one loop, the upcast
    // copies side by side in its body. Unrolled copies run one after another, so a loop
    // inside an unrolled range cannot be shared; that is refused.
    Mask vary = closed & mask_.at(u.src(0).id());
    if (!kept.empty()) {
      vary = mask_.at(u.src(0).id());
      if (Mask seq = vary & ~closed & ~upcast_mask())
        for (size_t p = 0; p < axes_.size(); ++p)
          if (seq & bit(int(p)))
            throw IrError("expand: unroll axis " + std::to_string(axes_[p].axis().id) +
                          " holds a loop (" + print_graph(sink_, u) +
                          "); unroll the loop's own axis instead");
    }
    std::vector<UOp> copies;
    each(vary, asg, [&](const std::vector<int64_t>& a) {
      UOp b = build(u.src(0), a);
      if (std::find(copies.begin(), copies.end(), b) == copies.end()) copies.push_back(b);
    });
    UOp body = copies.size() == 1 ? copies[0] : UOp::make(Op::GROUP, dtypes::void_, copies);
    if (kept.empty()) return body;
    kept.insert(kept.begin(), body);
    return UOp::make(Op::END, u.dtype(), kept, u.arg());
  }

  // An AFTER that named an upcast range drops it (the copies are independent); one that
  // named an unroll range is ordered, in copy k, after copy k - 1 of the range's body.
  UOp make_after(const UOp& u, const std::vector<int64_t>& asg) {
    std::vector<UOp> src{build(u.src(0), asg)};
    for (size_t k = 1; k < u.src().size(); ++k) {
      const UOp& s = u.src(k);
      auto p = pos_.find(s.id());
      if (p == pos_.end()) {
        src.push_back(build(s, asg));
        continue;
      }
      int ax = p->second;
      if (axes_[size_t(ax)].axis().kind == AxisKind::Upcast || asg[size_t(ax)] == 0) continue;
      std::vector<int64_t> prev = asg;
      --prev[size_t(ax)];
      const UOp& body = unroll_body_.at(ax);
      // The unroll axes the AFTER names that split the same loop inside this one (lower
      // ids: a range unrolled twice, copy (1, 0) comes after (0, 0) and (0, 1)): copy k
      // waits for every copy of theirs in copy k - 1.
      Mask inner = 0;
      for (size_t j = 1; j < u.src().size(); ++j)
        if (auto q = pos_.find(u.src(j).id()); q != pos_.end() && q->second < ax &&
                                               unroll_body_.count(q->second) &&
                                               unroll_body_.at(q->second) == body)
          inner |= bit(q->second);
      each((mask_.at(body.id()) & ~mask_.at(u.id())) | inner, prev,
           [&](const std::vector<int64_t>& a) { src.push_back(build(body, a)); });
    }
    if (src.size() == 1) return src[0];
    return UOp::make(Op::AFTER, src, u.arg());
  }

  // A global load or store whose copies along an upcast axis (for loads, also an unroll
  // axis) are contiguous and start at a proven multiple of their count: one vector access
  // (the copies read lanes of it).
  std::optional<UOp> vectorized(const UOp& u, const std::vector<int64_t>& asg) {
    const UOp& ix = u.src(0);
    if (ix.src(0).dtype().space() != AddrSpace::Global || ix.dtype().pointee().is_vector())
      return std::nullopt;
    DType elem = ix.dtype().pointee();
    // As wide as the target moves, and no wider than the parameters' alignment, which is
    // what a start proven a multiple of the lane count is aligned to.
    int lanes_max = std::min(target_.max_vector_lanes(AddrSpace::Global, elem),
                             std::max(1, target_.param_align / int(elem.itemsize())));
    // Loads may also merge the copies of an UNROLL: they read memory no copy writes (the
    // buffer does not depend on the axis through an AFTER), so reading it all at the first
    // copy reads the same values.
    Mask m = mask_.at(ix.src(1).id()) & (u.op() == Op::LOAD ? ~Mask(0) : upcast_mask());
    for (size_t p = 0; p < axes_.size(); ++p) {
      if (!(m & bit(int(p)))) continue;
      int64_t w = extent(int(p));
      if (w < 2 || w > lanes_max || (w & (w - 1))) continue;
      // Every lane under the same gate and the same ordering (an IF the copies differ in
      // keeps them apart).
      if (ix.src().size() == 3 && (mask_.at(ix.src(2).id()) & bit(int(p)))) continue;
      if (mask_.at(ix.src(0).id()) & bit(int(p))) continue;
      if (u.op() == Op::STORE && ix.src().size() == 3) continue;
      if (axis_stride(ix.src(1), axes_[p]) != 1) continue;
      std::vector<int64_t> first = asg;
      first[p] = 0;
      UOp base = simplify(build(ix.src(1), first));
      if (!provably_multiple(base, w)) continue;
      return vector_access(u, asg, int(p), w, base);
    }
    return std::nullopt;
  }

  UOp vector_access(const UOp& u, const std::vector<int64_t>& asg, int p, int64_t w,
                    const UOp& base) {
    const UOp& ix = u.src(0);
    DType vec = ix.dtype().pointee().vec(int(w));
    std::vector<int64_t> first = asg;
    first[size_t(p)] = 0;
    std::vector<UOp> isrc{build(ix.src(0), first), base};
    if (ix.src().size() == 3) isrc.push_back(build(ix.src(2), first));
    UOp vix = UOp::make(Op::INDEX, vec.ptr(ix.dtype().space()), isrc);
    if (u.op() == Op::LOAD) {
      auto key = std::make_pair(u.id(), code(mask_.at(u.id()), first));
      UOp whole;
      if (auto it = vector_loads_.find(key); it != vector_loads_.end()) {
        whole = it->second;
      } else {
        UOp alt =
            u.src().size() == 2
                ? UOp::make(Op::VECTORIZE, vec, std::vector<UOp>(size_t(w), build(u.src(1), first)))
                : UOp();
        whole = alt ? load(vix, alt) : load(vix);
        vector_loads_.emplace(key, whole);
      }
      return UOp::make(Op::EXTRACT, vec.element(), {whole}, std::vector<int64_t>{asg[size_t(p)]});
    }
    // A store: every copy is the one store of the whole vector.
    if (asg[size_t(p)] != 0) return build(u, first);
    std::vector<UOp> lanes;
    for (int64_t k = 0; k < w; ++k) {
      std::vector<int64_t> a = asg;
      a[size_t(p)] = k;
      lanes.push_back(build(u.src(1), a));
    }
    return store(vix, UOp::make(Op::VECTORIZE, vec, lanes));
  }

  UOp sink_;
  const Target& target_;
  std::vector<UOp> axes_;  // the expanded ranges, by axis id
  std::unordered_map<const void*, int> pos_;
  std::unordered_map<const void*, Mask> mask_;  // the expanded axes each node depends on
  std::unordered_set<const void*> touched_;
  std::unordered_map<const void*, Mask> replicated_;  // register buffers: per-copy axes
  std::unordered_map<int, UOp> unroll_body_;
  struct PairHash {
    size_t operator()(const std::pair<const void*, int64_t>& k) const {
      return std::hash<const void*>()(k.first) * 31 + std::hash<int64_t>()(k.second);
    }
  };
  std::unordered_map<std::pair<const void*, int64_t>, UOp, PairHash> memo_, vector_loads_;
};

}  // namespace

UOp expand(const UOp& sink, const Target& target) { return Expander(sink, target).run(); }

}  // namespace kitten
