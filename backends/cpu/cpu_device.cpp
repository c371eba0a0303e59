#include "backends/cpu/cpu_device.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

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

// The processor's model name from /proc/cpuinfo ("cpu" where it says none).
std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0)
      if (size_t colon = line.find(':'); colon != std::string::npos) {
        size_t start = line.find_first_not_of(" \t", colon + 1);
        if (start != std::string::npos) return line.substr(start);
      }
  return "cpu";
}

// ---- the subprocess compiler -----------------------------------------------------------

// How a compiler run ended: its exit status (-1 when a signal ended it) and what it wrote
// to stdout and stderr, interleaved; or, when it could not be started, why.
struct CompilerRun {
  int status = -1;
  std::string output;
  std::string start_error;
};

// Runs argv[0] (a path, or a name looked up on PATH) with its arguments, never through a
// shell: no compiler name, path or setting is ever parsed as a command.
CompilerRun run_compiler(const std::vector<std::string>& argv) {
  CompilerRun r;
  int fds[2];
  // Close-on-exec, so that a compiler started by another thread does not inherit the write
  // end and keep this read from ending.
  if (pipe2(fds, O_CLOEXEC) != 0) {
    r.start_error = std::string("cannot create a pipe: ") + std::strerror(errno);
    return r;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int err = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (err != 0) {
    close(fds[0]);
    r.start_error = "cannot run the C compiler '" + argv[0] + "': " + std::strerror(err) +
                    " (KITTEN_CC names one program: a path, or a name on PATH)";
    return r;
  }
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) != 0;) {
    if (n > 0)
      r.output.append(buf, size_t(n));
    else if (errno != EINTR)
      break;
  }
  close(fds[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string temp_dir() {
  std::string t = (std::filesystem::temp_directory_path() / "kitten-XXXXXX").string();
  if (!mkdtemp(t.data())) throw BackendError("cpu: cannot create a temporary directory");
  return t;
}

// A temporary directory, removed with everything in it when the holder goes.
struct TempDir {
  std::string path = temp_dir();
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

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
    CompilerRun r = run_compiler({cc_, "--version"});
    version_ = r.output.substr(0, r.output.find('\n'));
    if (!r.start_error.empty())
      version_ = "unavailable: " + r.start_error;
    else if (r.status != 0)
      version_ = "unavailable: " + version_;
  }
  std::string target() const override { return host_arch() + "-linux-shared"; }
  std::string version() const override { return version_; }
  const std::string& cc() const { return cc_; }

 protected:
  // What this returns is cached, so it is checked to load here: an empty or broken output
  // would otherwise fail every later run from the cache.
  std::string compile_uncached(const std::string& source) override {
    TempDir dir;
    std::string src = dir.path + "/kernel.c", so = dir.path + "/kernel.so";
    std::ofstream(src) << source;
    CompilerRun r = run_compiler({cc_, "-O2", "-fPIC", "-shared", "-o", so, src, "-lm"});
    if (!r.start_error.empty()) throw BackendError("cpu: " + r.start_error);
    if (r.status != 0) throw BackendError(compile_error_message("cpu: " + cc_, r.output, source));
    std::string binary = read_file(so);
    if (binary.empty())
      throw BackendError("cpu: '" + cc_ + "' exited with status 0 but wrote no shared object " +
                         "(KITTEN_CC must name a C compiler)");
    if (void* h = dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL))
      dlclose(h);
    else
      throw BackendError("cpu: the shared object that '" + cc_ +
                         "' wrote does not load: " + dlerror());
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
    props_.model = cpu_model();
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
  RenderedKernel render(const LinearProgram& p) override { return render_c(p, &props_.target); }
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
    if (i < size_t(info.num_params)) check_arg(info, i, args[i], "cpu");
    if (auto* b = std::get_if<Buffer>(&args[i]))
      raw[i] = b->ptr;
    else if (auto* v = std::get_if<int64_t>(&args[i]))
      raw[i] = reinterpret_cast<void*>(intptr_t(*v));
    else if (i >= size_t(info.num_params))
      throw BackendError("cpu: kernel '" + info.name + "' variable argument " + std::to_string(i) +
                         " is a tensor map");
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
