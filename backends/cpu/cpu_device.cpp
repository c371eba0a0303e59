#include "backends/cpu/cpu_device.h"

#include <dlfcn.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

#include "backends/cpu/c_renderer.h"
#include "backends/cpu/clang_jit.h"
#include "backends/cpu/thread_pool.h"

namespace kitten {

namespace {

using KernelFn = void (*)(void* const*, long long, long long);

std::string host_arch() {
  utsname u{};
  uname(&u);
  return u.machine;
}

// ---- allocator -------------------------------------------------------------------------

class CpuAllocator : public Allocator {
 public:
  Buffer alloc(size_t bytes) override {
    size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw BackendError("cpu: out of memory allocating " + std::to_string(bytes) + " bytes");
    return {p, bytes};
  }
  void free(Buffer b) override { std::free(b.ptr); }
  void copy_in(Buffer dst, const void* src, size_t bytes) override {
    check(dst, bytes);
    std::memcpy(dst.ptr, src, bytes);
  }
  void copy_out(void* dst, Buffer src, size_t bytes) override {
    check(src, bytes);
    std::memcpy(dst, src.ptr, bytes);
  }

 private:
  static void check(Buffer b, size_t bytes) {
    if (bytes > b.bytes)
      throw BackendError("cpu: copy of " + std::to_string(bytes) + " bytes into a buffer of " +
                         std::to_string(b.bytes));
  }
};

// ---- the subprocess compiler -----------------------------------------------------------

std::string run_capture(const std::string& cmd, int& status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

std::string temp_dir() {
  std::string t = (std::filesystem::temp_directory_path() / "kitten-XXXXXX").string();
  if (!mkdtemp(t.data())) throw BackendError("cpu: cannot create a temporary directory");
  return t;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class SubprocessCompiler : public Compiler {
 public:
  explicit SubprocessCompiler(CompileCache cache) : Compiler(std::move(cache)) {
    const char* cc = std::getenv("KITTEN_CC");
    cc_ = cc && *cc ? cc : "cc";
    int st;
    std::string v = run_capture(cc_ + " --version 2>&1", st);
    version_ = v.substr(0, v.find('\n'));
    if (st != 0) version_ = "unavailable: " + version_;
  }
  std::string target() const override { return host_arch() + "-linux-shared"; }
  std::string version() const override { return version_; }
  const std::string& cc() const { return cc_; }

 protected:
  std::string compile_uncached(const std::string& source) override {
    std::string dir = temp_dir();
    std::string src = dir + "/kernel.c", so = dir + "/kernel.so";
    std::ofstream(src) << source;
    int st;
    std::string log =
        run_capture(cc_ + " -O2 -fPIC -shared -o " + so + " " + src + " -lm 2>&1", st);
    std::string binary = st == 0 ? read_file(so) : "";
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (st != 0) throw BackendError(compile_error_message(cc_, log, source));
    return binary;
  }

 private:
  std::string cc_, version_;
};

class DlopenProgram : public Program {
 public:
  DlopenProgram(const std::string& binary, const KernelInfo& info, ThreadPool& pool)
      : info_(info), pool_(pool) {
    std::string dir = temp_dir(), path = dir + "/kernel.so";
    std::ofstream(path, std::ios::binary) << binary;
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    std::string err = handle_ ? "" : dlerror();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);  // the mapping stays valid after the file goes
    if (!handle_) throw BackendError("cpu: cannot load kernel '" + info.name + "': " + err);
    fn_ = reinterpret_cast<KernelFn>(dlsym(handle_, info.name.c_str()));
    if (!fn_) throw BackendError("cpu: kernel '" + info.name + "' has no function of that name");
  }
  ~DlopenProgram() override { dlclose(handle_); }
  void launch(LaunchDims global, LaunchDims local, std::span<const KernelArg> args,
              size_t shared) override {
    run_cpu_kernel(fn_, info_, pool_, global, local, args, shared);
  }

 private:
  KernelInfo info_;
  ThreadPool& pool_;
  void* handle_ = nullptr;
  KernelFn fn_ = nullptr;
};

// ---- queues, signals, graphs -----------------------------------------------------------

class CpuSignal : public Signal {
 public:
  explicit CpuSignal(uint64_t v) : value_(v) {}
  uint64_t value() const override {
    std::lock_guard lock(mu_);
    return value_;
  }
  void set(uint64_t v) override {
    {
      std::lock_guard lock(mu_);
      value_ = v;
    }
    cv_.notify_all();
  }
  void wait(uint64_t v) override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return value_ >= v; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t value_;
};

class CpuQueue : public Queue {
 public:
  CpuQueue() : worker_([this] { work(); }) {}
  ~CpuQueue() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  void exec(Program& p, LaunchDims global, LaunchDims local, std::vector<KernelArg> args,
            size_t shared) override {
    pending_.push_back([&p, global, local, args = std::move(args), shared] {
      p.launch(global, local, args, shared);
    });
  }
  void copy(Buffer dst, Buffer src, size_t bytes) override {
    if (bytes > dst.bytes || bytes > src.bytes)
      throw BackendError("cpu queue: copy of " + std::to_string(bytes) +
                         " bytes between buffers of " + std::to_string(src.bytes) + " and " +
                         std::to_string(dst.bytes));
    pending_.push_back([=] { std::memcpy(dst.ptr, src.ptr, bytes); });
  }
  void signal(Signal& s, uint64_t v) override {
    pending_.push_back([&s, v] { s.set(v); });
  }
  void wait(Signal& s, uint64_t v) override {
    pending_.push_back([&s, v] { s.wait(v); });
  }
  void timestamp(Timestamp& t) override {
    pending_.push_back([&t] {
      t.ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count());
    });
  }
  void enqueue(std::function<void()> f) { pending_.push_back(std::move(f)); }
  void submit() override {
    {
      std::lock_guard lock(mu_);
      if (!failure_.empty())
        throw BackendError("cpu queue: an earlier command failed: " + failure_);
      for (auto& f : pending_) work_.push_back(std::move(f));
    }
    pending_.clear();
    cv_.notify_all();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !work_.empty(); });
        if (work_.empty()) return;
        f = std::move(work_.front());
        work_.pop_front();
      }
      try {
        f();
      } catch (const std::exception& e) {
        std::lock_guard lock(mu_);
        if (failure_.empty()) failure_ = e.what();
      }
    }
  }
  std::vector<std::function<void()>> pending_;  // recorded since the last submit
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> work_;
  std::string failure_;
  bool stop_ = false;
  std::thread worker_;
};

class CpuGraph : public Graph {
 public:
  void record(Program& p, LaunchDims global, LaunchDims local,
              std::vector<KernelArg> args) override {
    launches_.push_back({&p, global, local, std::move(args)});
  }
  void replay(Queue& q, std::span<const std::pair<Buffer, Buffer>> rebind) override {
    auto* cq = dynamic_cast<CpuQueue*>(&q);
    if (!cq) throw BackendError("cpu graph: replay needs a cpu queue");
    std::vector<Launch> ls = launches_;
    for (Launch& l : ls)
      for (KernelArg& a : l.args)
        if (auto* b = std::get_if<Buffer>(&a))
          for (const auto& [from, to] : rebind)
            if (*b == from) *b = to;
    cq->enqueue([ls = std::move(ls)] {
      for (const Launch& l : ls) l.program->launch(l.global, l.local, l.args);
    });
  }

 private:
  struct Launch {
    Program* program;
    LaunchDims global, local;
    std::vector<KernelArg> args;
  };
  std::vector<Launch> launches_;
};

// ---- the device ------------------------------------------------------------------------

class CpuDevice : public Device {
 public:
  CpuDevice(CpuCompileMode mode, CompileCache cache)
      : pool_(std::max(1u, std::thread::hardware_concurrency())) {
    props_.name = "cpu";
    props_.arch = host_arch();
    props_.cores = int(pool_.size());
    props_.warp_size = 1;
    if (mode == CpuCompileMode::Jit) {
      jit_ = make_clang_jit(std::move(cache));
      props_.compiler = "in-process Clang + LLVM ORC JIT (" + jit_->version() + ")";
    } else {
      auto sub = std::make_unique<SubprocessCompiler>(std::move(cache));
      props_.compiler =
          "subprocess '" + sub->cc() + "' + dlopen (" + sub->version() + ")" +
          (cpu_has_jit() ? "" : "; this build has no LLVM/Clang for in-process compiles");
      subprocess_ = std::move(sub);
    }
  }
  const DeviceProps& props() const override { return props_; }
  Allocator& allocator() override { return alloc_; }
  Compiler& compiler() override { return jit_ ? static_cast<Compiler&>(*jit_) : *subprocess_; }
  RenderedKernel render(const LinearProgram& p) override { return render_c(p); }
  std::unique_ptr<Program> load(const std::string& binary, const KernelInfo& info) override {
    if (jit_) return jit_->load(binary, info, pool_);
    return std::make_unique<DlopenProgram>(binary, info, pool_);
  }
  std::unique_ptr<Queue> new_queue() override { return std::make_unique<CpuQueue>(); }
  std::unique_ptr<Signal> new_signal(uint64_t initial) override {
    return std::make_unique<CpuSignal>(initial);
  }
  std::unique_ptr<Graph> new_graph() override { return std::make_unique<CpuGraph>(); }

 private:
  DeviceProps props_;
  CpuAllocator alloc_;
  ThreadPool pool_;
  std::unique_ptr<ClangJit> jit_;
  std::unique_ptr<SubprocessCompiler> subprocess_;
};

}  // namespace

void run_cpu_kernel(void (*fn)(void* const*, long long, long long), const KernelInfo& info,
                    ThreadPool& pool, LaunchDims global, LaunchDims local,
                    std::span<const KernelArg> args, size_t shared) {
  size_t want = size_t(info.num_params) + info.vars.size();
  if (args.size() != want)
    throw BackendError("cpu: kernel '" + info.name + "' takes " + std::to_string(want) +
                       " arguments, got " + std::to_string(args.size()));
  if (local.x * local.y * local.z != 1 || shared != 0 || global.y * global.z != 1)
    throw BackendError("cpu: kernel '" + info.name +
                       "' launched with a block or shared memory; the cpu runs one thread per "
                       "index of one global dimension");
  std::vector<void*> raw(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    bool is_buffer = i < info.buffer_params.size() && info.buffer_params[i];
    if (auto* b = std::get_if<Buffer>(&args[i])) {
      if (!is_buffer)
        throw BackendError("cpu: kernel '" + info.name + "' argument " + std::to_string(i) +
                           " is an integer, got a buffer");
      raw[i] = b->ptr;
    } else {
      if (is_buffer)
        throw BackendError("cpu: kernel '" + info.name + "' argument " + std::to_string(i) +
                           " is a buffer, got an integer");
      raw[i] = reinterpret_cast<void*>(intptr_t(std::get<int64_t>(args[i])));
    }
  }
  int64_t n = global.x;
  if (n <= 1) {
    fn(raw.data(), 0, n);
    return;
  }
  int64_t chunks = std::min<int64_t>(n, int64_t(pool.size()) * 4);
  pool.run(chunks, [&](int64_t c) { fn(raw.data(), n * c / chunks, n * (c + 1) / chunks); });
}

std::string compile_error_message(const std::string& compiler, const std::string& log,
                                  const std::string& source) {
  std::string msg = "cpu: " + compiler + " could not compile the kernel:\n" + log;
  std::smatch m;
  if (std::regex_search(log, m, std::regex(R"(:(\d+):\d+: (fatal )?error)"))) {
    int line = std::stoi(m[1]);
    std::istringstream in(source);
    std::string text;
    msg += "source around line " + std::to_string(line) + ":\n";
    for (int n = 1; std::getline(in, text); ++n)
      if (n >= line - 3 && n <= line + 3)
        msg += (n == line ? "> " : "  ") + std::to_string(n) + " | " + text + "\n";
  }
  return msg;
}

std::unique_ptr<Device> make_cpu_device(CpuCompileMode mode, CompileCache cache) {
  if (mode == CpuCompileMode::Jit && !cpu_has_jit())
    throw BackendError("cpu: this build has no LLVM/Clang, so no in-process compiler");
  return std::make_unique<CpuDevice>(mode, std::move(cache));
}

std::unique_ptr<Device> make_cpu_device() {
  const char* m = std::getenv("KITTEN_CPU_COMPILER");
  bool sub = !cpu_has_jit() || (m && std::string(m) == "subprocess");
  return make_cpu_device(sub ? CpuCompileMode::Subprocess : CpuCompileMode::Jit,
                         CompileCache::from_environment());
}

}  // namespace kitten
