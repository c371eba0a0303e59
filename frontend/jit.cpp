#include "frontend/jit.h"

#include <cstdlib>

#include "frontend/schedule.h"

namespace kitten {

struct Jit::Captured {
  Capture record;
  std::unique_ptr<Graph> graph;
  std::vector<Buffer> inputs;  // the captured call's input buffers (none for a variable)
  // Captured launches that read variables: (index in record.launches, first graph launch).
  std::vector<std::pair<size_t, size_t>> var_launches;
  // Each output: one of the inputs, a buffer the capture made (a fresh one per replay),
  // or a tensor that lived before (a parameter), returned as it is.
  struct Output {
    int input = -1;
    Tensor fixed;
    Buffer made;
    Shape shape;
    DType dtype;
    std::vector<NodePtr> vdims;  // its variable axes (rebound by name at a replay)
  };
  std::vector<Output> outputs;
};

Jit::Jit(Fn f) : f_(std::move(f)) {
  const char* e = std::getenv("KITTEN_JIT");
  enabled_ = !(e && std::string(e) == "0");
}

Jit::~Jit() = default;

size_t Jit::graph_kernels() const { return last_ ? last_->record.launches.size() : 0; }

const Capture* Jit::capture() const { return last_ ? &last_->record : nullptr; }

namespace {

bool is_var(const Tensor& t) { return t.node()->kind == NodeKind::Var; }

// What a capture depends on: devices, dtypes and shapes, and variables by name and range
// (not value).
std::string signature(const std::vector<Tensor>& inputs) {
  std::string s;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    const LazyNode& n = *t.node();
    // Inputs given as the same memory are one buffer in a capture: part of the signature.
    for (size_t j = 0; j < i && !is_var(t); ++j)
      if (!is_var(inputs[j]) && shares_memory(t.node().get(), inputs[j].node().get())) {
        s += "=" + std::to_string(j);
        break;
      }
    auto var = [](const LazyNode& v) {
      return "var " + v.name + "[" + std::to_string(v.arg[0]) + ", " + std::to_string(v.arg[1]) +
             "]";
    };
    if (is_var(t)) {
      s += var(n) + ";";
      continue;
    }
    s += t.device() + ":" + std::string(t.dtype().name()) + shape_text(t.shape());
    for (const NodePtr& v : n.vdims) s += v ? " " + var(*v) : " -";  // its variable axes
    s += ";";
  }
  return s;
}

std::vector<Tensor> realized(std::vector<Tensor> ts, const char* what) {
  for (Tensor& t : ts) {
    if (!t.defined()) throw TensorError(std::string("jit: an undefined tensor among the ") + what);
    if (!is_var(t) || std::string(what) == "outputs") t.realize();
  }
  return ts;
}

bool reads_vars(const CompiledKernel& k) {
  bool any = !k.rendered.info.vars.empty();
  for (const KernelLaunch& p : k.then) any = any || !p.rendered.info.vars.empty();
  return any;
}

}  // namespace

std::vector<Tensor> Jit::operator()(const std::vector<Tensor>& given) {
  std::vector<Tensor> inputs = realized(given, "inputs");
  replayed_ = false;
  last_ = nullptr;
  if (!enabled_) return realized(f_(inputs), "outputs");
  std::string sig = signature(inputs);
  auto it = captured_.find(sig);
  if (it == captured_.end()) {
    if (++calls_[sig] == 1) return realized(f_(inputs), "outputs");
    // The second call: run it while recording what it queues.
    auto c = std::make_unique<Captured>();
    std::vector<Tensor> outs;
    {
      CaptureScope scope(c->record);
      outs = realized(f_(inputs), "outputs");
    }
    if (c->record.device.empty())
      c->record.device = !inputs.empty() ? inputs[0].device()
                         : !outs.empty() ? outs[0].device()
                                         : "cpu";
    for (const Tensor& t : inputs) {
      if (t.device() != c->record.device)
        throw TensorError("jit: an input on " + t.device() + " for a function that runs on " +
                          c->record.device);
      c->inputs.push_back(is_var(t) ? Buffer{} : t.node()->data()->buffer);
    }
    c->graph = frontend_device(c->record.device).new_graph();
    size_t at = 0;
    for (size_t i = 0; i < c->record.launches.size(); ++i) {
      const auto& [kernel, args] = c->record.launches[i];
      kernel->record(*c->graph, args);
      if (reads_vars(*kernel)) c->var_launches.emplace_back(i, at);
      at += 1 + kernel->then.size();
    }
    for (const Tensor& t : outs) {
      Captured::Output o{-1, {}, {}, t.shape(), t.dtype(), t.node()->vdims};
      Buffer b = t.node()->data()->buffer;
      for (size_t i = 0; i < inputs.size() && o.input < 0; ++i)
        if (c->inputs[i] == b && b.bytes) o.input = int(i);
      if (o.input < 0 && c->record.made.count(b.ptr) && b.bytes) {
        o.made = b;
        c->record.keep(t.node()->data(), true);
      } else if (o.input < 0) {
        o.fixed = t;
      }
      c->outputs.push_back(std::move(o));
    }
    last_ = c.get();
    captured_[sig] = std::move(c);
    return outs;
  }
  // A replay: the inputs' buffers and fresh outputs in place of the captured ones.
  Captured& c = *it->second;
  std::vector<std::pair<Buffer, Buffer>> rebind;
  // The variables given now: as inputs, or as the lengths of inputs' variable axes.
  std::map<std::string, NodePtr> bound;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const NodePtr& n = inputs[i].node();
    if (is_var(inputs[i])) {
      bound[n->name] = n;
      continue;
    }
    rebind.emplace_back(c.inputs[i], n->data()->buffer);
    for (const NodePtr& v : n->vdims)
      if (v) bound[v->name] = v;
  }
  // Launches reading variables get their new values (variables the function made itself
  // keep their captured ones).
  for (auto [i, at] : c.var_launches) {
    const auto& [kernel, captured] = c.record.launches[i];
    std::vector<KernelArg> args = captured;
    const std::vector<std::string>& names = kernel->rendered.info.vars;
    size_t first = args.size() - names.size();
    for (size_t j = 0; j < names.size(); ++j)
      if (auto v = bound.find(names[j]); v != bound.end())
        args[first + j] = int64_t(v->second->value);
    bool whole = kernel->direct();
    std::vector<KernelArg> part = whole ? args : kernel->part_args(*kernel, args);
    c.graph->update(at, launch_grid(kernel->rendered.info, part), part);
    for (size_t k = 0; k < kernel->then.size(); ++k) {
      part = kernel->part_args(kernel->then[k], args);
      c.graph->update(at + 1 + k, launch_grid(kernel->then[k].rendered.info, part), part);
    }
  }
  // Storages moved since the capture (into a fused optimiser's buffer) are where they are now.
  for (size_t i = 0; i < c.record.storages.size(); ++i)
    if (c.record.storages[i]->buffer != c.record.buffers[i])
      rebind.emplace_back(c.record.buffers[i], c.record.storages[i]->buffer);
  std::vector<Tensor> outs;
  Device& dev = frontend_device(c.record.device);
  std::map<const void*, std::shared_ptr<Storage>> fresh;  // an output returned twice: one buffer
  for (const Captured::Output& o : c.outputs) {
    Tensor out;
    if (o.input >= 0) {
      out = inputs[size_t(o.input)];
    } else if (o.fixed.defined()) {
      out = o.fixed;
    } else {
      auto& s = fresh[o.made.ptr];
      if (!s) {
        s = std::make_shared<Storage>(&dev, c.record.device, o.made.bytes);
        rebind.emplace_back(o.made, s->buffer);
      }
      out = Tensor::from_storage(s, o.shape, o.dtype);
    }
    if (!o.vdims.empty()) {
      // Variable axes take the lengths given now (a variable made inside keeps its own).
      out = Tensor::from_storage(out.node()->data(), o.shape, o.dtype);
      for (size_t a = 0; a < o.vdims.size(); ++a)
        if (const NodePtr& v = o.vdims[a]) {
          auto now = bound.find(v->name);
          out = out.narrow(int(a), 0, Tensor(now != bound.end() ? now->second : v));
        }
    }
    outs.push_back(out);
  }
  replay_graph(c.record.device, *c.graph, rebind, c.record.launches.size());
  replayed_ = true;
  last_ = &c;
  return outs;
}

}  // namespace kitten
