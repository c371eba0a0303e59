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
#include <sstream>
#include <thread>

#include "backends/c_renderer.h"
#include "backends/cpu/clang_jit.h"
#include "backends/cpu/thread_pool.h"
#include "backends/host.h"

namespace kitten {

namespace {

using KernelFn = void (*)(void* const*, long long, long long);

std::string host_arch() {
  utsname u{};
  uname(&u);
  return u.machine;
}

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
    if (st != 0) throw BackendError(compile_error_message("cpu: " + cc_, log, source));
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
    fn_ = reinterpret_cast<KernelFn>(dlsym(handle_, info.symbol.c_str()));
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

// ---- the device ------------------------------------------------------------------------

class CpuDevice : public HostDevice {
 public:
  CpuDevice(CpuCompileMode mode, CompileCache cache)
      : pool_(std::max(1u, std::thread::hardware_concurrency())) {
    props_.name = "cpu";
    props_.target = host_target(host_arch(), int(pool_.size()));
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
  Compiler& compiler() override { return jit_ ? static_cast<Compiler&>(*jit_) : *subprocess_; }
  RenderedKernel render(const LinearProgram& p) override { return render_c(p); }
  std::unique_ptr<Program> load(const std::string& binary, const KernelInfo& info) override {
    if (jit_) return jit_->load(binary, info, pool_);
    return std::make_unique<DlopenProgram>(binary, info, pool_);
  }

 private:
  DeviceProps props_;
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
