#include "backends/cuda/cuda_device.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "backends/c_renderer.h"
#include "backends/cuda/cuda_api.h"

namespace kitten {

namespace {

using namespace std::chrono_literals;

void check(cu::Result r, const std::string& what) {
  if (r != 0) throw BackendError("cuda: " + what + ": " + cu::error_text(r));
}

std::string dims_text(LaunchDims g, LaunchDims l) {
  auto d = [](LaunchDims x) {
    return std::to_string(x.x) + "x" + std::to_string(x.y) + "x" + std::to_string(x.z);
  };
  return "grid " + d(g) + ", block " + d(l);
}

// ---- NVRTC -------------------------------------------------------------------------------

class NvrtcCompiler : public Compiler {
 public:
  NvrtcCompiler(std::string arch, CompileCache cache)
      : Compiler(std::move(cache)), arch_(std::move(arch)) {
    const cu::Nvrtc& n = cu::nvrtc();
    if (!n.loaded) throw BackendError("cuda: " + n.why);
    int major = 0, minor = 0;
    n.Version(&major, &minor);
    version_ =
        "nvrtc " + std::to_string(major) + "." + std::to_string(minor) + " (" + n.library + ")";
  }
  std::string target() const override { return arch_; }
  // KITTEN_CUDA_FMAD=0 compiles without contracting a*b+c into fused multiply-adds (part of
  // the version, so the compile cache keeps the two apart).
  std::string version() const override { return version_ + (contract() ? "" : " --fmad=false"); }
  static bool contract() {
    const char* e = std::getenv("KITTEN_CUDA_FMAD");
    return !(e && std::string(e) == "0");
  }

 protected:
  std::string compile_uncached(const std::string& source) override {
    const cu::Nvrtc& n = cu::nvrtc();
    cu::Nvrtc::Program prog;
    if (int r = n.CreateProgram(&prog, source.c_str(), "kernel.cu", 0, nullptr, nullptr); r != 0)
      throw BackendError(std::string("cuda: nvrtcCreateProgram: ") + n.GetErrorString(r));
    std::string arch = "--gpu-architecture=" + arch_;
    const char* opts[] = {arch.c_str(), "--std=c++17", "-lineinfo", "--fmad=false"};
    int r = n.CompileProgram(prog, contract() ? 3 : 4, opts);
    size_t log_size = 0;
    n.GetProgramLogSize(prog, &log_size);
    std::string log(log_size, '\0');
    if (log_size) n.GetProgramLog(prog, log.data());
    log.resize(std::strlen(log.c_str()));  // the size counts the terminating NUL
    std::string cubin;
    if (r == 0) {
      size_t size = 0;
      n.GetCUBINSize(prog, &size);
      cubin.resize(size);
      n.GetCUBIN(prog, cubin.data());
    }
    n.DestroyProgram(&prog);
    if (r != 0)
      throw BackendError(compile_error_message("cuda: NVRTC (" + arch_ + ")", log, source));
    // ptxas drops a setmaxnreg it cannot honour (the register count at entry unknown) with
    // only a warning: the kernel would run with registers it does not have.
    if (log.find("setmaxnreg") != std::string::npos)
      throw BackendError("cuda: NVRTC (" + arch_ + ") ignored setmaxnreg: " + log);
    return cubin;
  }

 private:
  std::string arch_, version_;
};

// ---- the context and its memory ------------------------------------------------------------

struct Context {
  const cu::Driver& d = cu::driver();
  cu::Device dev = 0;
  cu::Context ctx = nullptr;
  cu::Stream stream = nullptr;  // for copies and synchronous launches
  void current() const {        // cheap when this thread already has it
    thread_local cu::Context now = nullptr;
    if (now == ctx) return;
    check(d.CtxSetCurrent(ctx), "cuCtxSetCurrent");
    now = ctx;
  }
  void sync(const std::string& what) const { check(d.StreamSynchronize(stream), what); }
};

class CudaAllocator : public Allocator {
 public:
  explicit CudaAllocator(std::shared_ptr<Context> c) : c_(std::move(c)) {}
  Buffer alloc(size_t bytes) override {
    c_->current();
    cu::DevicePtr p = 0;
    check(c_->d.MemAlloc(&p, std::max<size_t>(bytes, 1)),
          "cuMemAlloc of " + std::to_string(bytes) + " bytes");
    return {reinterpret_cast<void*>(p), bytes};
  }
  void free(Buffer b) override {
    c_->current();
    c_->d.MemFree(reinterpret_cast<cu::DevicePtr>(b.ptr));
  }
  void copy_in(Buffer dst, const void* src, size_t bytes) override {
    if (bytes > dst.bytes)
      throw BackendError("cuda: copy of " + std::to_string(bytes) + " bytes into a buffer of " +
                         std::to_string(dst.bytes));
    c_->current();
    check(c_->d.MemcpyHtoDAsync(reinterpret_cast<cu::DevicePtr>(dst.ptr), src, bytes, c_->stream),
          "copy to the device");
    c_->sync("copy to the device");
  }
  void copy_out(void* dst, Buffer src, size_t bytes) override {
    if (bytes > src.bytes)
      throw BackendError("cuda: copy of " + std::to_string(bytes) + " bytes out of a buffer of " +
                         std::to_string(src.bytes));
    c_->current();
    check(c_->d.MemcpyDtoHAsync(dst, reinterpret_cast<cu::DevicePtr>(src.ptr), bytes, c_->stream),
          "copy from the device");
    c_->sync("copy from the device");
  }

 private:
  std::shared_ptr<Context> c_;
};

// Kernel parameters as the driver wants them: an array of pointers to the values. Held
// inline (no allocation on the launch path) up to kInline arguments.
struct Params {
  static constexpr size_t kInline = 32;
  std::array<unsigned long long, kInline> inline_values;
  std::array<void*, kInline> inline_pointers;
  std::vector<unsigned long long> heap_values;
  std::vector<void*> heap_pointers;
  struct alignas(64) EncodedMap {  // CUtensorMap: 128 opaque bytes
    unsigned long long bits[16];
  };
  std::vector<EncodedMap> maps;
  void** pointers_data = nullptr;
  Params(const KernelInfo& info, std::span<const KernelArg> args) {
    size_t want = size_t(info.num_params) + info.vars.size();
    if (args.size() != want)
      throw BackendError("cuda: kernel '" + info.name + "' takes " + std::to_string(want) +
                         " arguments, got " + std::to_string(args.size()));
    unsigned long long* values = inline_values.data();
    void** pointers = inline_pointers.data();
    if (args.size() > kInline) {
      heap_values.resize(args.size());
      heap_pointers.resize(args.size());
      values = heap_values.data();
      pointers = heap_pointers.data();
    }
    maps.reserve(info.tensor_maps.size());  // no reallocation: pointers point into it
    for (size_t i = 0; i < args.size(); ++i) {
      if (i < size_t(info.num_params)) check_arg(info, i, args[i], "cuda");
      pointers[i] = &values[i];
      if (const auto* b = std::get_if<Buffer>(&args[i])) {
        values[i] = reinterpret_cast<unsigned long long>(b->ptr);
      } else if (const auto* v = std::get_if<int64_t>(&args[i])) {
        values[i] = static_cast<unsigned long long>(*v);
      } else if (info.tensor_maps.count(int(i))) {
        maps.push_back(encode(info, std::get<TensorMap>(args[i])));
        pointers[i] = &maps.back();
      } else {  // a tensor map where the kernel reads nothing
        values[i] = 0;
      }
    }
    pointers_data = pointers;
  }
  // cuTensorMapEncodeTiled with the map's dtype, dims, strides, box and swizzle;
  // elements outside the tensor read as zeros.
  static EncodedMap encode(const KernelInfo& info, const TensorMap& m) {
    const cu::Driver& d = cu::driver();
    if (!d.TensorMapEncodeTiled)
      throw BackendError("cuda: kernel '" + info.name +
                         "' takes a tensor map and this driver has no cuTensorMapEncodeTiled");
    int type = -1;
    switch (m.dtype.scalar_type()) {
      case ScalarType::UInt8:
      case ScalarType::Int8:
      case ScalarType::Float8E4M3:
      case ScalarType::Float8E5M2:
        type = 0;
        break;
      case ScalarType::UInt16:
      case ScalarType::Int16:
        type = 1;
        break;
      case ScalarType::UInt32:
        type = 2;
        break;
      case ScalarType::Int32:
        type = 3;
        break;
      case ScalarType::UInt64:
        type = 4;
        break;
      case ScalarType::Int64:
        type = 5;
        break;
      case ScalarType::Float16:
        type = 6;
        break;
      case ScalarType::Float32:
        type = 7;
        break;
      case ScalarType::Float64:
        type = 8;
        break;
      case ScalarType::BFloat16:
        type = 9;
        break;
      default:
        throw BackendError("cuda: a tensor map of " + std::string(m.dtype.name()));
    }
    std::array<unsigned long long, 5> dims{}, strides{};
    std::array<unsigned, 5> box{}, ones{1, 1, 1, 1, 1};
    for (size_t i = 0; i < m.dims.size(); ++i) {
      dims[i] = static_cast<unsigned long long>(m.dims[i]);
      box[i] = unsigned(m.box[i]);
      if (i > 0) strides[i - 1] = static_cast<unsigned long long>(m.strides[i - 1]);
    }
    static constexpr int swizzles[] = {0, 1, 2, 3};  // none, 32B, 64B, 128B
    EncodedMap out{};
    check(d.TensorMapEncodeTiled(&out, type, unsigned(m.dims.size()), m.buffer.ptr, dims.data(),
                                 strides.data(), box.data(), ones.data(), 0,
                                 swizzles[int(m.swizzle)], 2, 0),
          "kernel '" + info.name + "': encoding a tensor map");
    return out;
  }
  Params(const Params&) = delete;
  void** data() { return pointers_data; }
};

class CudaProgram : public Program {
 public:
  CudaProgram(std::shared_ptr<Context> c, const std::string& cubin, KernelInfo info)
      : c_(std::move(c)), info_(std::move(info)) {
    c_->current();
    check(c_->d.ModuleLoadData(&module_, cubin.data()), "loading kernel '" + info_.name + "'");
    check(c_->d.ModuleGetFunction(&fn_, module_, info_.symbol.c_str()),
          "kernel '" + info_.name + "'");
    if (info_.dynamic_shared > 48 * 1024)
      check(c_->d.FuncSetAttribute(fn_, cu::kFuncAttrMaxDynamicShared, int(info_.dynamic_shared)),
            "kernel '" + info_.name + "' shared memory");
  }
  ~CudaProgram() override {
    c_->current();
    c_->d.ModuleUnload(module_);
  }
  std::string resources() const override {
    int regs = 0, local = 0;
    c_->current();
    check(c_->d.FuncGetAttribute(&regs, cu::kFuncAttrNumRegs, fn_), "kernel attributes");
    check(c_->d.FuncGetAttribute(&local, cu::kFuncAttrLocalBytes, fn_), "kernel attributes");
    return std::to_string(regs) + " registers, " + std::to_string(local) +
           " bytes of local memory (spills) per thread";
  }
  // Launches on `stream` without waiting.
  void enqueue(cu::Stream stream, LaunchDims g, LaunchDims l, std::span<const KernelArg> args,
               size_t shared) {
    Params p(info_, args);
    c_->current();
    cu::Result r = c_->d.LaunchKernel(fn_, unsigned(g.x), unsigned(g.y), unsigned(g.z),
                                      unsigned(l.x), unsigned(l.y), unsigned(l.z), unsigned(shared),
                                      stream, p.data(), nullptr);
    if (r != 0)  // the message is built only on failure: this is the launch path
      check(r, "launching kernel '" + info_.name + "' (" + dims_text(g, l) + ")");
  }
  void launch(LaunchDims g, LaunchDims l, std::span<const KernelArg> args, size_t shared) override {
    enqueue(c_->stream, g, l, args, std::max(shared, info_.dynamic_shared));
    cu::Result r = c_->d.StreamSynchronize(c_->stream);
    if (r != 0)
      throw BackendError(
          "cuda: kernel '" + info_.name + "' (" + dims_text(g, l) +
          ") failed: " + cu::error_text(r) +
          (r >= 700 && r <= 719  // the sticky launch errors: illegal address ... launch failed
               ? " (the CUDA context is lost: later calls in this process fail)"
               : ""));
  }
  cu::Function function() const { return fn_; }
  const KernelInfo& info() const { return info_; }

 private:
  std::shared_ptr<Context> c_;
  KernelInfo info_;
  cu::Module module_ = nullptr;
  cu::Function fn_ = nullptr;
};

class CudaSignal : public Signal {
 public:
  CudaSignal(std::shared_ptr<Context> c, uint64_t v) : c_(std::move(c)) {
    c_->current();
    void* mem = nullptr;
    check(c_->d.MemHostAlloc(&mem, 8, cu::kHostAllocDeviceMap), "allocating a signal");
    host_ = static_cast<uint64_t*>(mem);
    check(c_->d.MemHostGetDevicePointer(&dev_, mem, 0), "mapping a signal");
    set(v);
  }
  ~CudaSignal() override { c_->d.MemFreeHost(host_); }
  uint64_t value() const override { return __atomic_load_n(host_, __ATOMIC_ACQUIRE); }
  void set(uint64_t v) override { __atomic_store_n(host_, v, __ATOMIC_RELEASE); }
  void wait(uint64_t v) override {
    auto deadline = std::chrono::steady_clock::now() + 120s;
    while (value() < v) {
      if (std::chrono::steady_clock::now() > deadline)
        throw BackendError("cuda: a signal did not reach " + std::to_string(v) + " within 120 s");
      std::this_thread::yield();
    }
  }
  cu::DevicePtr device_address() const { return dev_; }

 private:
  std::shared_ptr<Context> c_;
  uint64_t* host_ = nullptr;  // written by the device: read with atomics
  cu::DevicePtr dev_ = 0;
};

class CudaQueue : public Queue {
 public:
  explicit CudaQueue(std::shared_ptr<Context> c) : c_(std::move(c)) {
    c_->current();
    check(c_->d.StreamCreate(&stream_, cu::kStreamNonBlocking), "creating a stream");
  }
  ~CudaQueue() override {
    c_->current();
    c_->d.StreamSynchronize(stream_);
    c_->d.StreamDestroy(stream_);
  }
  // Commands go to the stream as they are recorded; submit() has nothing left to hand over.
  using Queue::exec;
  void exec(Program& p, LaunchDims g, LaunchDims l, std::span<const KernelArg> args,
            size_t shared) override {
    auto& cp = dynamic_cast<CudaProgram&>(p);
    cp.enqueue(stream_, g, l, args, std::max(shared, cp.info().dynamic_shared));
  }
  void copy(Buffer dst, Buffer src, size_t bytes) override {
    if (bytes > dst.bytes || bytes > src.bytes)
      throw BackendError("cuda queue: copy larger than its buffers");
    c_->current();
    check(c_->d.MemcpyDtoDAsync(reinterpret_cast<cu::DevicePtr>(dst.ptr),
                                reinterpret_cast<cu::DevicePtr>(src.ptr), bytes, stream_),
          "queue copy");
  }
  void signal(Signal& s, uint64_t v) override {
    c_->current();
    check(c_->d.StreamWriteValue64(stream_, dynamic_cast<CudaSignal&>(s).device_address(), v, 0),
          "queue signal");
  }
  void wait(Signal& s, uint64_t v) override {
    c_->current();
    check(c_->d.StreamWaitValue64(stream_, dynamic_cast<CudaSignal&>(s).device_address(), v,
                                  cu::kWaitValueGeq),
          "queue wait");
  }
  void timestamp(Timestamp& t) override {
    c_->current();
    check(c_->d.LaunchHostFunc(
              stream_,
              [](void* p) {
                static_cast<Timestamp*>(p)->ns =
                    uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count());
              },
              &t),
          "queue timestamp");
  }
  void submit() override {}
  cu::Stream stream() const { return stream_; }

 private:
  std::shared_ptr<Context> c_;
  cu::Stream stream_ = nullptr;
};

class CudaGraph : public Graph {
 public:
  explicit CudaGraph(std::shared_ptr<Context> c) : c_(std::move(c)) {}
  ~CudaGraph() override {
    c_->current();
    if (exec_) c_->d.GraphExecDestroy(exec_);
    if (graph_) c_->d.GraphDestroy(graph_);
  }
  void record(Program& p, LaunchDims g, LaunchDims l, std::vector<KernelArg> args) override {
    if (exec_) throw BackendError("cuda graph: record after the first replay");
    launches_.push_back({&dynamic_cast<CudaProgram&>(p), g, l, std::move(args)});
  }
  void update(size_t i, LaunchDims g, std::vector<KernelArg> args) override {
    if (i >= launches_.size()) throw BackendError("cuda graph: no launch " + std::to_string(i));
    if (launches_[i].global.x != g.x || launches_[i].global.y != g.y ||
        launches_[i].global.z != g.z)
      regrid_.push_back(i);
    launches_[i].global = g;
    launches_[i].args = std::move(args);
  }
  void replay(Queue& q, std::span<const std::pair<Buffer, Buffer>> rebind) override {
    c_->current();
    auto& cq = dynamic_cast<CudaQueue&>(q);
    if (!exec_) build();
    for (size_t i = 0; i < launches_.size(); ++i) {
      std::vector<KernelArg> args = launches_[i].args;
      for (KernelArg& a : args) rebind_arg(a, rebind);
      bool regrid = std::find(regrid_.begin(), regrid_.end(), i) != regrid_.end();
      if (args != bound_[i] || regrid) {  // only changed nodes are updated (maps encoded afresh)
        Params p(launches_[i].program->info(), args);
        cu::KernelNodeParams np = node_params(launches_[i], p);
        check(c_->d.GraphExecKernelNodeSetParams(exec_, nodes_[i], &np), "rebinding a graph node");
        bound_[i] = std::move(args);
      }
    }
    regrid_.clear();
    check(c_->d.GraphLaunch(exec_, cq.stream()), "launching a graph");
  }

 private:
  struct Launch {
    CudaProgram* program;
    LaunchDims global, local;
    std::vector<KernelArg> args;
  };
  static cu::KernelNodeParams node_params(const Launch& l, Params& p) {
    return {l.program->function(),
            unsigned(l.global.x),
            unsigned(l.global.y),
            unsigned(l.global.z),
            unsigned(l.local.x),
            unsigned(l.local.y),
            unsigned(l.local.z),
            unsigned(l.program->info().dynamic_shared),
            p.data(),
            nullptr,
            nullptr,
            nullptr};
  }
  void build() {
    check(c_->d.GraphCreate(&graph_, 0), "creating a graph");
    cu::GraphNode prev = nullptr;
    for (const Launch& l : launches_) {
      Params p(l.program->info(), l.args);
      cu::KernelNodeParams np = node_params(l, p);
      cu::GraphNode node;
      check(c_->d.GraphAddKernelNode(&node, graph_, prev ? &prev : nullptr, prev ? 1 : 0, &np),
            "adding a graph node");
      nodes_.push_back(node);
      bound_.push_back(l.args);
      prev = node;
    }
    check(c_->d.GraphInstantiate(&exec_, graph_, 0), "instantiating a graph");
  }
  std::shared_ptr<Context> c_;
  std::vector<Launch> launches_;
  std::vector<cu::GraphNode> nodes_;
  std::vector<std::vector<KernelArg>> bound_;
  std::vector<size_t> regrid_;  // launches whose grid changed since the last replay
  cu::GraphT graph_ = nullptr;
  cu::GraphExec exec_ = nullptr;
};

class CudaDevice : public Device {
 public:
  CudaDevice(std::shared_ptr<Context> c, CompileCache cache) : c_(c), alloc_(c) {
    const cu::Driver& d = c_->d;
    char name[256] = {};
    d.DeviceGetName(name, sizeof name, c_->dev);
    auto attr = [&](int a) {
      int v = 0;
      d.DeviceGetAttribute(&v, a, c_->dev);
      return v;
    };
    int major = attr(cu::kAttrCcMajor), minor = attr(cu::kAttrCcMinor);
    props_.name = "cuda";
    props_.model = name;
    int driver_version = 0;
    d.DriverGetVersion(&driver_version);
    props_.driver = "CUDA driver " + std::to_string(driver_version);
    Target& t = props_.target;
    t.arch = "sm_" + std::to_string(major) + std::to_string(minor) + (major >= 9 ? "a" : "");
    t.multiprocessors = attr(cu::kAttrMultiprocessors);
    t.warp_size = attr(cu::kAttrWarpSize);
    t.max_threads_per_block = attr(cu::kAttrMaxThreadsPerBlock);
    t.shared_per_block = attr(cu::kAttrSharedPerBlock);
    t.shared_per_block_optin = attr(cu::kAttrSharedOptin);
    t.registers_per_thread = 255;
    t.registers_per_block = attr(cu::kAttrRegistersPerBlock);
    int cc = major * 10 + minor;
    t.features = kFeatureBlocks | kFeatureShuffle | (cc >= 75 ? kFeatureLdmatrix : 0u) |
                 (cc >= 80 ? kFeatureMmaSync | kFeatureAsyncCopy : 0u) |
                 (major >= 9 ? kFeatureWgmma | kFeatureTma | kFeatureStmatrix | kFeatureMbarrier |
                                   kFeatureSetmaxnreg
                             : 0u);
    t.global_vector_bytes = t.shared_vector_bytes = 16;
    t.narrow_vectors = true;
    if (cc >= 80) t.mma = mma_sync_layouts();
    t.atomics = common_atomics();  // red.add.bf16x2 needs sm_90
    if (major < 9) std::erase(t.atomics, std::pair{AtomicOp::Add, dtypes::bfloat16.vec(2)});
    compiler_ = std::make_unique<NvrtcCompiler>(t.arch, std::move(cache));
    props_.compiler = std::string(name) + ", " + compiler_->version();
  }
  const DeviceProps& props() const override { return props_; }
  Allocator& allocator() override { return alloc_; }
  Compiler& compiler() override { return *compiler_; }
  RenderedKernel render(const LinearProgram& p) override { return render_cuda(p, &props_.target); }
  std::unique_ptr<Program> load(const std::string& binary, const KernelInfo& info) override {
    return std::make_unique<CudaProgram>(c_, binary, info);
  }
  std::unique_ptr<Queue> new_queue() override { return std::make_unique<CudaQueue>(c_); }
  std::unique_ptr<Signal> new_signal(uint64_t v) override {
    return std::make_unique<CudaSignal>(c_, v);
  }
  std::unique_ptr<Graph> new_graph() override { return std::make_unique<CudaGraph>(c_); }

 private:
  std::shared_ptr<Context> c_;
  DeviceProps props_;
  CudaAllocator alloc_;
  std::unique_ptr<NvrtcCompiler> compiler_;
};

// The process's one context (the device's primary context), or why there is none.
std::shared_ptr<Context> open_context(std::string& why) {
  static std::string reason;
  static std::shared_ptr<Context> ctx = [&]() -> std::shared_ptr<Context> {
    const cu::Driver& d = cu::driver();
    if (!d.loaded) return reason = d.why, nullptr;
    if (cu::Result r = d.Init(0); r != 0)
      return reason = "cuInit failed: " + cu::error_text(r), nullptr;
    int n = 0;
    if (d.DeviceGetCount(&n) != 0 || n == 0) return reason = "the CUDA driver sees no GPU", nullptr;
    if (!cu::nvrtc().loaded) return reason = cu::nvrtc().why, nullptr;
    auto c = std::make_shared<Context>();
    if (cu::Result r = d.DeviceGet(&c->dev, 0); r != 0) return reason = cu::error_text(r), nullptr;
    if (cu::Result r = d.DevicePrimaryCtxRetain(&c->ctx, c->dev); r != 0)
      return reason = cu::error_text(r), nullptr;
    d.CtxSetCurrent(c->ctx);
    if (cu::Result r = d.StreamCreate(&c->stream, cu::kStreamNonBlocking); r != 0)
      return reason = cu::error_text(r), nullptr;
    return c;
  }();
  why = reason;
  return ctx;
}

}  // namespace

std::string cuda_unavailable_reason() {
  std::string why;
  return open_context(why) ? "" : why;
}

std::unique_ptr<Device> make_cuda_device(CompileCache cache) {
  std::string why;
  auto c = open_context(why);
  if (!c) throw BackendError("unavailable here: " + why);
  return std::make_unique<CudaDevice>(c, std::move(cache));
}

std::unique_ptr<Device> make_cuda_device() {
  return make_cuda_device(CompileCache::from_environment());
}

double cuda_elapsed_ms(Queue& q, const std::function<void()>& enqueue) {
  auto& cq = dynamic_cast<CudaQueue&>(q);
  const cu::Driver& d = cu::driver();
  cu::Event start, stop;
  check(d.EventCreate(&start, 0), "creating an event");
  check(d.EventCreate(&stop, 0), "creating an event");
  check(d.EventRecord(start, cq.stream()), "recording an event");
  enqueue();
  check(d.EventRecord(stop, cq.stream()), "recording an event");
  check(d.EventSynchronize(stop), "waiting for an event");
  float ms = 0;
  check(d.EventElapsedTime(&ms, start, stop), "timing events");
  d.EventDestroy(start);
  d.EventDestroy(stop);
  return ms;
}

double cuda_bare_launches_ms(Queue& q, Program& p, LaunchDims g, LaunchDims l,
                             std::span<const KernelArg> args, int n) {
  auto& cq = dynamic_cast<CudaQueue&>(q);
  auto& cp = dynamic_cast<CudaProgram&>(p);
  Params params(cp.info(), args);
  const cu::Driver& d = cu::driver();
  check(d.StreamSynchronize(cq.stream()), "synchronizing");
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i)
    check(d.LaunchKernel(cp.function(), unsigned(g.x), unsigned(g.y), unsigned(g.z), unsigned(l.x),
                         unsigned(l.y), unsigned(l.z), 0, cq.stream(), params.data(), nullptr),
          "bare launch");
  check(d.StreamSynchronize(cq.stream()), "synchronizing");
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double cuda_bare_graph_ms(Queue& q, Program& p, LaunchDims g, LaunchDims l,
                          std::span<const KernelArg> args, int n,
                          std::span<const KernelArg> rebound) {
  auto& cq = dynamic_cast<CudaQueue&>(q);
  auto& cp = dynamic_cast<CudaProgram&>(p);
  Params params(cp.info(), args);
  const cu::Driver& d = cu::driver();
  cu::GraphT graph;
  check(d.GraphCreate(&graph, 0), "creating a graph");
  auto node_params = [&](Params& ps) {
    return cu::KernelNodeParams{cp.function(), unsigned(g.x), unsigned(g.y), unsigned(g.z),
                                unsigned(l.x), unsigned(l.y), unsigned(l.z), 0,
                                ps.data(),     nullptr,       nullptr,       nullptr};
  };
  cu::KernelNodeParams np = node_params(params);
  std::vector<cu::GraphNode> nodes;
  for (int i = 0; i < n; ++i) {
    cu::GraphNode node;
    check(d.GraphAddKernelNode(&node, graph, nodes.empty() ? nullptr : &nodes.back(),
                               nodes.empty() ? 0 : 1, &np),
          "adding a graph node");
    nodes.push_back(node);
  }
  cu::GraphExec exec;
  check(d.GraphInstantiate(&exec, graph, 0), "instantiating a graph");
  check(d.GraphLaunch(exec, cq.stream()), "launching a graph");  // the first launch uploads it
  check(d.StreamSynchronize(cq.stream()), "synchronizing");
  auto t0 = std::chrono::steady_clock::now();
  if (!rebound.empty()) {
    Params other(cp.info(), rebound);
    cu::KernelNodeParams rp = node_params(other);
    for (cu::GraphNode node : nodes)
      check(d.GraphExecKernelNodeSetParams(exec, node, &rp), "rebinding a node");
  }
  check(d.GraphLaunch(exec, cq.stream()), "launching a graph");
  check(d.StreamSynchronize(cq.stream()), "synchronizing");
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  d.GraphExecDestroy(exec);
  d.GraphDestroy(graph);
  return ms;
}

std::unique_ptr<Compiler> make_nvrtc_compiler(const std::string& arch, CompileCache cache) {
  return std::make_unique<NvrtcCompiler>(arch, std::move(cache));
}

}  // namespace kitten
