#include "autotune/measure.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <thread>

#include "backends/cuda/cuda_device.h"
#include "backends/emu/emulator.h"
#include "dsl/eval.h"
#include "dsl/float_format.h"
#include "dsl/linearize.h"

extern char** environ;

namespace kitten::autotune {
namespace {

using Clock = std::chrono::steady_clock;

// One running worker: its pid, the read end of its output, its deadline.
struct Running {
  size_t input;
  pid_t pid;
  int out;
  Clock::time_point deadline;
  std::string output;
};

// Starts argv in a process group of its own with `in` as its standard input and `out` as
// its standard output and error; an errno value where it could not start.
int spawn(const std::vector<std::string>& argv, int in, int out, pid_t& pid) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in, 0);
  posix_spawn_file_actions_adddup2(&actions, out, 1);
  posix_spawn_file_actions_adddup2(&actions, out, 2);
  // Its own process group, so that a deadline kills what it started too (a C compiler);
  // SIGPIPE at its default whatever this process does with it.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t def;
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &def);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int err = posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  return err;
}

// Starts argv with `input` on its stdin (written by a thread, so a worker that never reads
// cannot block us) and stdout + stderr on a pipe.
bool start_worker(const std::vector<std::string>& argv, const std::string& input, Running& r,
                  std::string& why) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0) return why = std::strerror(errno), false;
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]), close(in[1]);
    return why = std::strerror(errno), false;
  }
  int err = spawn(argv, in[0], out[1], r.pid);
  close(in[0]);
  close(out[1]);
  if (err != 0) {
    close(in[1]), close(out[0]);
    why = "cannot start the compile worker '" + argv[0] + "': " + std::strerror(err);
    return false;
  }
  r.out = out[0];
  std::thread([fd = in[1], input] {
    // A worker that exits without reading must not kill us: SIGPIPE blocked in this thread
    // alone (write then fails with EPIPE; the pending signal goes with the thread).
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
    for (size_t at = 0; at < input.size();) {
      ssize_t n = write(fd, input.data() + at, input.size() - at);
      if (n > 0)
        at += size_t(n);
      else if (errno != EINTR)
        break;
    }
    close(fd);
  }).detach();
  return true;
}

// Reaps a worker whose output has ended, killing its group at the deadline (one that
// closed its output and goes on would otherwise hold the search).
WorkerRun::End wait_end(pid_t pid, bool killed, Clock::time_point deadline) {
  int st = 0;
  for (;;) {
    pid_t got = waitpid(pid, &st, killed ? 0 : WNOHANG);
    if (got == pid || (got < 0 && errno != EINTR)) break;
    if (got == 0 && Clock::now() > deadline) {
      kill(-pid, SIGKILL);
      killed = true;
    } else if (got == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  if (killed) return WorkerRun::End::TimedOut;
  if (WIFSIGNALED(st)) return WorkerRun::End::Crashed;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? WorkerRun::End::Ok : WorkerRun::End::Failed;
}

// The host bytes of `values` as `dtype` (floats rounded to nearest, integers wrapped).
std::vector<unsigned char> encode(const std::vector<double>& values, DType dtype) {
  size_t w = size_t(dtype.itemsize());
  std::vector<unsigned char> out(values.size() * w);
  for (size_t i = 0; i < values.size(); ++i) {
    unsigned char* p = &out[i * w];
    double v = values[i];
    if (dtype == dtypes::float64) {
      std::memcpy(p, &v, 8);
    } else if (dtype == dtypes::float32) {
      float f = float(v);
      std::memcpy(p, &f, 4);
    } else if (const FloatFormat* f = dtype.narrow_float()) {
      uint32_t code = encode_float(*f, v);
      std::memcpy(p, &code, w);  // little-endian: the low bytes
    } else {
      int64_t x = wrap_to(int64_t(v), dtype);
      std::memcpy(p, &x, w);
    }
  }
  return out;
}

// `count` random elements of `dtype` as the kernel reads them: floats m/128 for m in
// [-128, 128) (exact in every float dtype of 8 or more significant bits), integers from -8
// to 7; drawn a byte at a time from a table of the 256 values, so that inputs of tens of
// millions of elements take milliseconds.
std::vector<unsigned char> random_bytes(DType dtype, int64_t count, std::mt19937_64& rng) {
  std::vector<double> values(256);
  for (int m = 0; m < 256; ++m)
    values[size_t(m)] = dtype.is_float() ? (m - 128) / 128.0 : m % 16 - 8;
  std::vector<unsigned char> table = encode(values, dtype), out(size_t(count) * table.size() / 256);
  size_t w = table.size() / 256;
  uint64_t bits = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (i % 8 == 0) bits = rng();
    std::memcpy(&out[size_t(i) * w], &table[(bits & 255) * w], w);
    bits >>= 8;
  }
  return out;
}

double decode(const unsigned char* p, DType dtype) {
  if (dtype == dtypes::float64) {
    double v;
    std::memcpy(&v, p, 8);
    return v;
  }
  if (dtype == dtypes::float32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  if (dtype == dtypes::bfloat16) {  // the high half of a float32: no table needed
    uint32_t bits = uint32_t(p[0]) << 16 | uint32_t(p[1]) << 24;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  if (const FloatFormat* f = dtype.narrow_float()) {
    uint32_t code = 0;
    std::memcpy(&code, p, size_t(dtype.itemsize()));
    return decode_float(*f, code);
  }
  int64_t x = 0;
  std::memcpy(&x, p, size_t(dtype.itemsize()));
  return double(wrap_to(x, dtype));
}

// The validator's tolerance for a written buffer of `dtype`, relative to the largest
// magnitude in the reference's buffer (docs/testing.md): reassociated sums in the
// candidate change low bits, a wrong index or a lost term does not stay below it.
double tolerance(DType dtype) {
  if (dtype == dtypes::float64) return std::ldexp(1.0, -40);
  if (dtype == dtypes::float32) return std::ldexp(1.0, -14);
  if (const FloatFormat* f = dtype.narrow_float()) return std::ldexp(1.0, 2 - f->man_bits);
  return 0;  // integers and bool: exact
}

}  // namespace

std::vector<WorkerRun> run_workers(const std::vector<std::string>& argv,
                                   const std::vector<std::string>& inputs, int jobs,
                                   double timeout_s) {
  std::vector<WorkerRun> results(inputs.size());
  std::vector<Running> running;
  size_t next = 0;
  auto timeout =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  while (next < inputs.size() || !running.empty()) {
    while (next < inputs.size() && running.size() < size_t(std::max(1, jobs))) {
      Running r{next, 0, -1, Clock::now() + timeout, {}};
      std::string why;
      if (start_worker(argv, inputs[next], r, why))
        running.push_back(std::move(r));
      else
        results[next] = {WorkerRun::End::NotStarted, why};
      ++next;
    }
    if (running.empty()) continue;
    std::vector<pollfd> fds;
    for (const Running& r : running) fds.push_back({r.out, POLLIN, 0});
    Clock::time_point soonest = running[0].deadline;
    for (const Running& r : running) soonest = std::min(soonest, r.deadline);
    auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(soonest - Clock::now());
    int n = poll(fds.data(), fds.size(), int(std::clamp<int64_t>(wait_ms.count() + 1, 0, 1000)));
    if (n < 0 && errno != EINTR) {
      std::string why = std::strerror(errno);
      for (Running& r : running) {  // nothing left behind
        kill(-r.pid, SIGKILL);
        close(r.out);
        wait_end(r.pid, true, r.deadline);
      }
      throw std::runtime_error("autotune: waiting for the compile workers: " + why);
    }
    for (size_t i = running.size(); i-- > 0;) {
      Running& r = running[i];
      bool ended = false, killed = false;
      if (n > 0 && fds[i].revents) {
        char buf[4096];
        ssize_t got = read(r.out, buf, sizeof buf);
        if (got > 0)
          r.output.append(buf, size_t(got));
        else if (got == 0 || errno != EINTR)
          ended = true;
      }
      if (!ended && Clock::now() > r.deadline) {
        kill(-r.pid, SIGKILL);
        ended = killed = true;
      }
      if (!ended) continue;
      close(r.out);
      WorkerRun::End end = wait_end(r.pid, killed, r.deadline);
      if (end == WorkerRun::End::TimedOut)
        r.output += "\n(killed after " + std::to_string(int(timeout_s)) + " s)";
      results[r.input] = {end, std::move(r.output)};
      running.erase(running.begin() + std::ptrdiff_t(i));
    }
  }
  return results;
}

// The buffers of the timing runs, by the space's order, and the L2 flush before each: on
// GPUs flush_kernel reads `flush_from` (zeros) and never writes `flush_to` (one float); on
// cpus `flush_from` is copied into `flush_to`.
// Freed with it (also where DeviceMeasure's constructor throws half way).
struct DeviceMeasure::Inputs {
  explicit Inputs(Allocator& a) : alloc(a) {}
  ~Inputs() {
    for (Buffer b : buffers) alloc.free(b);
    for (Buffer b : {flush_from, flush_to})
      if (b.ptr) alloc.free(b);
  }
  Allocator& alloc;
  std::vector<Buffer> buffers;
  Buffer flush_from{}, flush_to{};
  std::optional<CompiledKernel> flush;  // GPUs: flush_kernel
};

namespace {

// The L2 flush before each timed run on a GPU: every float of `count` zeros read, none
// written (the store's gate is never true). A copy flushes too, but it leaves the L2 full
// of dirty lines whose write-back the measured kernel then pays for: about 5 us of a
// 1x4096x4096 GEMV's 21 us on the H100, charged to a kernel that wrote nothing.
UOp flush_kernel(int64_t count) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp i = range(count, 0, AxisKind::Global);
  UOp v = load(index(x, i));
  UOp nonzero = alu(Op::CMPNE, v, const_(f, 0.0));
  return sink({end(store(index(out, const_int(i.dtype(), 0), nonzero), v), {i})}, "l2_flush");
}

}  // namespace

std::string measure_answer(const Measured& m) {
  std::string error = m.error;
  std::replace(error.begin(), error.end(), '\n', ' ');
  char head[96];
  std::snprintf(head, sizeof head, "measured %d %.17g %.17g ", int(m.status), m.cost, m.noise);
  return head + error;
}

std::optional<Measured> parse_measure_answer(const std::string& line) {
  std::istringstream in(line);
  std::string word, cost, noise;
  int status = -1;
  if (!(in >> word >> status >> cost >> noise) || word != "measured" || status < 0 ||
      status > int(Measured::Status::RunFailed))
    return std::nullopt;
  Measured m;
  m.status = Measured::Status(status);
  char *cost_end = nullptr, *noise_end = nullptr;
  m.cost = std::strtod(cost.c_str(), &cost_end);  // "inf" too
  m.noise = std::strtod(noise.c_str(), &noise_end);
  if (*cost_end || *noise_end || std::isnan(m.cost)) return std::nullopt;
  std::getline(in >> std::ws, m.error);
  return m;
}

// A long-lived measure worker. Requests and answers go over one socket (its standard
// input, output and error), so that writing to a worker that died raises no SIGPIPE here.
class DeviceMeasure::Worker {
 public:
  explicit Worker(std::vector<std::string> argv) : argv_(std::move(argv)) {}
  ~Worker() { stop(); }
  bool running() const { return pid_ > 0; }
  // Whether it has said "ready" (its device open, its inputs made); whether any worker
  // started here ever has.
  bool ready() const { return ready_; }
  bool ever_ready() const { return ever_ready_; }
  // Reaps a worker that has ended while idle (reading what it wrote, its "ready" too), so
  // that the next request starts a new one and its end is charged to no candidate.
  void reap_if_ended() {
    int st = 0;
    if (!running() || waitpid(pid_, &st, WNOHANG) != pid_) return;
    char buf[4096];
    for (ssize_t got; (got = recv(fd_, buf, sizeof buf, MSG_DONTWAIT)) > 0;)
      pending_.append(buf, size_t(got));
    scan_ready();
    close(fd_);
    pid_ = fd_ = -1;
    pending_.clear();
  }
  // Starts the worker where none runs: "" or why it could not be.
  std::string start() {
    if (running()) return "";
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return std::strerror(errno);
    int err = spawn(argv_, sv[1], sv[1], pid_);
    close(sv[1]);
    if (err != 0) {
      close(sv[0]);
      pid_ = -1;
      return "cannot start the measure worker '" + argv_[0] + "': " + std::strerror(err);
    }
    fd_ = sv[0];
    ready_ = false;
    return "";
  }
  // Sends `line`, expecting no answer (nothing where no worker runs). A hint is dropped
  // where the worker is not reading yet (its socket full) rather than waited for.
  void tell(const std::string& line, bool hint = false) {
    for (size_t at = 0; running() && at < line.size();) {
      int flags = MSG_NOSIGNAL | (hint && at == 0 ? MSG_DONTWAIT : 0);
      ssize_t n = send(fd_, line.data() + at, line.size() - at, flags);
      if (n > 0)
        at += size_t(n);
      else if (errno != EINTR)
        break;  // not taken (a hint), or it has ended: the next ask reads its end
    }
  }
  // Sends `line` (starting a worker where none runs: reap_if_ended first, so that one
  // that ended while idle is not charged to this request) and waits until `timeout_s` for
  // the answer line: Ok with it in `answer`; TimedOut (killed), Crashed or Failed where
  // the worker ended first, NotStarted; `output` holds what else it wrote.
  WorkerRun ask(const std::string& line, double timeout_s, std::string& answer) {
    if (std::string why = start(); !why.empty()) return {WorkerRun::End::NotStarted, why};
    Clock::time_point deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                    std::chrono::duration<double>(timeout_s));
    tell(line);
    for (;;) {
      // The answer: the first line holding a well-formed one (after anything the worker
      // wrote to stderr without a newline).
      scan_ready();
      for (size_t start = 0, nl; (nl = pending_.find('\n', start)) != std::string::npos;
           start = nl + 1) {
        size_t at = pending_.find("measured ", start);
        if (at < nl && parse_measure_answer(pending_.substr(at, nl - at))) {
          answer = pending_.substr(at, nl - at);
          WorkerRun r{WorkerRun::End::Ok, pending_.substr(0, at)};
          pending_.erase(0, nl + 1);
          return r;
        }
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() < 0) return end(true, timeout_s);
      pollfd p{fd_, POLLIN, 0};
      int n = poll(&p, 1, int(std::min<int64_t>(left.count() + 1, 1000)));
      if (n < 0 && errno != EINTR) return end(true, timeout_s);
      if (n <= 0) continue;
      char buf[4096];
      ssize_t got = read(fd_, buf, sizeof buf);
      if (got > 0)
        pending_.append(buf, size_t(got));
      else if (got == 0 || errno != EINTR)
        return end(false, timeout_s);
    }
  }
  // Ends the worker: its input closed (it exits), killed where it has not within 5 s.
  void stop() {
    if (running()) end(false, 5);
  }

 private:
  void scan_ready() {
    for (size_t start = 0, nl; !ready_ && (nl = pending_.find('\n', start)) != std::string::npos;
         start = nl + 1)
      if (pending_.compare(start, nl - start, "ready") == 0) ready_ = ever_ready_ = true;
  }
  WorkerRun end(bool kill_now, double timeout_s) {
    if (kill_now) kill(-pid_, SIGKILL);
    close(fd_);
    Clock::time_point deadline = Clock::now() + std::chrono::seconds(5);
    WorkerRun r{wait_end(pid_, kill_now, deadline), std::move(pending_)};
    if (r.end == WorkerRun::End::TimedOut) {
      char b[64];
      std::snprintf(b, sizeof b, "\n(killed after %.3g s)", timeout_s);
      r.output += b;
    }
    pid_ = fd_ = -1;
    pending_.clear();
    return r;
  }
  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  int fd_ = -1;
  bool ready_ = false, ever_ready_ = false;
  std::string pending_;  // read but not yet an answer
};

DeviceMeasure::DeviceMeasure(Device& dev, const SearchSpace& space, MeasureOptions options)
    : dev_(dev),
      space_(space),
      opts_(std::move(options)),
      inputs_(std::make_unique<Inputs>(dev.allocator())) {
  if (!opts_.measure_worker.empty() && compile_workers() && timed()) {
    worker_ = std::make_unique<Worker>(opts_.measure_worker);  // its own inputs and flush
    return;
  }
  std::mt19937_64 rng(opts_.seed);
  for (const BufferSpec& b : space_.buffers) {
    std::vector<unsigned char> bytes = random_bytes(b.dtype, b.count, rng);
    Buffer buf = inputs_->buffers.emplace_back(dev_.allocator().alloc(bytes.size()));
    dev_.allocator().copy_in(buf, bytes.data(), buf.bytes);
  }
  if (opts_.flush_l2 && timed()) {
    bool gpu = dev_.props().target.has(kFeatureBlocks);
    size_t bytes = size_t(gpu ? 256 : 64) << 20;
    inputs_->flush_from = dev_.allocator().alloc(bytes);
    if (gpu) {
      dev_.allocator().copy_in(inputs_->flush_from, std::vector<unsigned char>(bytes).data(),
                               bytes);
      inputs_->flush_to = dev_.allocator().alloc(sizeof(float));
      inputs_->flush = compile_kernel(dev_, flush_kernel(int64_t(bytes / sizeof(float))));
    } else {
      inputs_->flush_to = dev_.allocator().alloc(bytes);
    }
  }
}

DeviceMeasure::~DeviceMeasure() {
  in_process_.clear();
  inputs_.reset();
}

bool DeviceMeasure::timed() const { return dev_.props().name != "emu"; }

bool DeviceMeasure::compile_workers() const {
  return !opts_.worker.empty() && !dev_.compiler().cache().dir().empty();
}

std::vector<KernelArg> DeviceMeasure::args_for(const CompiledKernel& k,
                                               const std::vector<Buffer>& bufs) const {
  std::vector<KernelArg> args;
  for (size_t i = 0; i < bufs.size(); ++i) {
    int64_t slot = space_.buffers[i].slot;
    if (int64_t(args.size()) != slot)
      throw std::invalid_argument("autotune: the buffers of '" + space_.name +
                                  "' do not fill the parameter slots in order");
    args.push_back(space_.arg ? space_.arg(k, slot, bufs[i]) : KernelArg(bufs[i]));
  }
  return space_.vars.empty() ? args : bind_args(k.rendered.info, std::move(args), space_.vars);
}

std::vector<Measured> DeviceMeasure::prepare(const std::vector<const Candidate*>& round) {
  std::vector<Measured> out(round.size());
  in_process_.clear();  // the last round's that were never measured (the time budget)
  // The measure worker opens its device and lowers the round's candidates while they
  // compile (where it cannot start, the first measurement says why).
  if (worker_) worker_->reap_if_ended();
  if (worker_ && worker_->start().empty()) {
    std::string hints = "round\n";  // the last round's lowerings ahead are dropped
    for (const Candidate* c : round) hints += "lower " + c->schedule.to_string() + "\n";
    worker_->tell(hints, true);
  }
  if (!compile_workers()) {
    for (size_t i = 0; i < round.size(); ++i) try {
        in_process_.emplace(std::pair(round[i]->key.lo, round[i]->key.hi),
                            compile_lowered(dev_, round[i]->lowered));
      } catch (const std::exception& e) {
        out[i] = {Measured::Status::CompileFailed, 0, e.what()};
      }
    return out;
  }
  // Render in this process (fast, cannot hang); the workers compile into the cache, so
  // that loading them here is a cache hit.
  std::vector<std::string> sources;
  std::vector<size_t> owner;
  for (size_t i = 0; i < round.size(); ++i) try {
      for (const UOp& k : round[i]->lowered.kernels) {
        sources.push_back(dev_.render(linearize(k)).source);
        owner.push_back(i);
      }
    } catch (const std::exception& e) {
      out[i] = {Measured::Status::CompileFailed, 0, e.what()};
    }
  int jobs = opts_.jobs > 0 ? opts_.jobs : int(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<WorkerRun> runs = run_workers(opts_.worker, sources, jobs, opts_.compile_timeout_s);
  for (size_t j = 0; j < runs.size(); ++j) {
    if (runs[j].end == WorkerRun::End::NotStarted)  // no candidate's fault: say so once
      throw std::runtime_error("autotune: " + runs[j].output);
    Measured& m = out[owner[j]];
    if (m.status != Measured::Status::Ok || runs[j].end == WorkerRun::End::Ok) continue;
    m.status = runs[j].end == WorkerRun::End::TimedOut  ? Measured::Status::TimedOut
               : runs[j].end == WorkerRun::End::Crashed ? Measured::Status::Crashed
                                                        : Measured::Status::CompileFailed;
    m.error = runs[j].output.empty() ? "the worker said nothing" : runs[j].output;
  }
  return out;
}

CompiledKernel DeviceMeasure::compiled(const Candidate& c) {
  auto it = in_process_.find({c.key.lo, c.key.hi});
  if (it == in_process_.end()) return compile_lowered(dev_, c.lowered);
  CompiledKernel k = std::move(it->second);
  in_process_.erase(it);
  return k;
}

Measured DeviceMeasure::measure_in_worker(const Candidate& c, double best) {
  // The deadline: the runs at twice the best's time each (before any best, reps times
  // measure_timeout_s: the start schedules may be slow), measure_timeout_s beyond, and once
  // more for a worker not ready yet (its device, inputs and flush kernel).
  double runs =
      std::isfinite(best) ? 2 * best * (opts_.reps + 1) : opts_.measure_timeout_s * opts_.reps;
  worker_->reap_if_ended();
  bool ready = worker_->running() && worker_->ready();
  double timeout = runs + opts_.measure_timeout_s * (ready ? 1 : 2);
  char head[32];
  std::snprintf(head, sizeof head, "%.17g ", best);
  std::string answer;
  WorkerRun run = worker_->ask(head + c.schedule.to_string() + "\n", timeout, answer);
  std::optional<Measured> m;
  if (run.end == WorkerRun::End::Ok) m = parse_measure_answer(answer);
  if (m) {
    if (m->status == Measured::Status::RunFailed) worker_->stop();  // a device left unusable
    return *m;
  }
  // A worker that cannot start, or ends before any worker was ever ready, is no
  // candidate's fault. (A new worker that fails after a hang left the device unusable
  // costs that candidate: the search goes on with the best so far.)
  if (run.end == WorkerRun::End::NotStarted || !worker_->ever_ready())
    throw MeasureUnavailable("autotune: the measure worker (" + opts_.measure_worker[0] +
                             " ...) could not get ready: " + run.output +
                             " (--in-process measures in the search's own process)");
  Measured failed;
  bool hung = run.end == WorkerRun::End::TimedOut;
  failed.status = hung ? Measured::Status::TimedOut : Measured::Status::Crashed;
  failed.error = std::string("the measure worker ") +
                 (hung ? "took longer than its deadline (a hang, or a run far slower than the "
                         "best): "
                       : "ended: ") +
                 run.output;
  worker_->stop();
  return failed;
}

Measured DeviceMeasure::measure(const Candidate& c, double best) {
  if (worker_) return measure_in_worker(c, best);
  CompiledKernel k = compiled(c);
  std::vector<KernelArg> args = args_for(k, inputs_->buffers);
  Measured m;
  if (!timed()) {
    m.cost = emu_cost(k, args, dev_.props().target);
    return m;
  }
  bool cuda = dev_.props().name == "cuda";
  std::unique_ptr<Queue> q = dev_.new_queue();
  auto run_once = [&]() -> double {
    if (inputs_->flush) {
      std::vector<KernelArg> flush_args{KernelArg(inputs_->flush_to),
                                        KernelArg(inputs_->flush_from)};
      inputs_->flush->enqueue(*q, flush_args);
      q->submit();
    } else if (inputs_->flush_from.ptr) {
      q->copy(inputs_->flush_to, inputs_->flush_from, inputs_->flush_from.bytes);
      q->submit();
    }
    if (cuda) return cuda_elapsed_ms(*q, [&] { k.enqueue(*q, args); }) * 1e-3;
    std::unique_ptr<Signal> done = dev_.new_signal(0);
    q->signal(*done, 1);
    q->submit();
    done->wait(1);  // the flush is over before the clock starts
    Clock::time_point t0 = Clock::now();
    k.run(args);
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  run_once();  // warm: first-launch costs, caches of the binary
  std::vector<double> times;
  for (int i = 0; i < std::max(1, opts_.reps); ++i) {
    times.push_back(run_once());
    if (times.back() > 2 * best) {
      m.status = Measured::Status::EarlyStop;
      break;
    }
  }
  std::sort(times.begin(), times.end());
  m.cost = times[times.size() / 2];
  std::vector<double> dev;
  for (double t : times) dev.push_back(std::abs(t - m.cost));
  std::sort(dev.begin(), dev.end());
  m.noise = m.cost > 0 ? dev[dev.size() / 2] / m.cost : 0;
  return m;
}

std::string DeviceMeasure::validate(const Candidate& c, const Candidate& reference) {
  // Fresh inputs: another seed than the timing runs used.
  std::mt19937_64 rng(opts_.seed ^ 0x5eed5eed5eedull);
  std::vector<std::vector<unsigned char>> fresh;
  for (const BufferSpec& b : space_.buffers) fresh.push_back(random_bytes(b.dtype, b.count, rng));
  struct Buffers {  // freed however the run ends
    Allocator& a;
    std::vector<Buffer> list;
    ~Buffers() {
      for (Buffer b : list) a.free(b);
    }
  };
  auto run = [&](const Candidate& which) {
    CompiledKernel k = compile_lowered(dev_, which.lowered);
    Buffers bufs{dev_.allocator(), {}};
    for (size_t i = 0; i < fresh.size(); ++i) {
      bufs.list.push_back(dev_.allocator().alloc(fresh[i].size()));
      // A buffer only written starts at zero in both runs (a kernel may accumulate into it).
      std::vector<unsigned char> init = fresh[i];
      if (!space_.buffers[i].read) std::fill(init.begin(), init.end(), 0);
      dev_.allocator().copy_in(bufs.list.back(), init.data(), init.size());
    }
    k.run(args_for(k, bufs.list));
    std::vector<std::vector<unsigned char>> out;
    for (size_t i = 0; i < bufs.list.size(); ++i) {
      out.emplace_back(fresh[i].size());
      dev_.allocator().copy_out(out.back().data(), bufs.list[i], fresh[i].size());
    }
    return out;
  };
  std::vector<StableKey> ref_key;
  for (const UOp& k : reference.lowered.kernels) ref_key.push_back(k.key());
  if (!reference_out_ || reference_out_->first != ref_key)
    reference_out_.emplace(ref_key, run(reference));
  const std::vector<std::vector<unsigned char>>& want = reference_out_->second;
  std::vector<std::vector<unsigned char>> got;
  try {
    got = run(c);
  } catch (const std::exception& e) {
    return std::string("it failed to run: ") + e.what();
  }
  for (size_t i = 0; i < space_.buffers.size(); ++i) {
    const BufferSpec& b = space_.buffers[i];
    if (!b.written) continue;
    size_t w = size_t(b.dtype.itemsize());
    double scale = 0;
    for (size_t e = 0; e * w < want[i].size(); ++e)
      scale = std::max(scale, std::abs(decode(&want[i][e * w], b.dtype)));
    double tol = tolerance(b.dtype) * std::max(scale, 1e-30);
    for (size_t e = 0; e * w < want[i].size(); ++e) {
      if (std::memcmp(&got[i][e * w], &want[i][e * w], w) == 0) continue;  // the same bits
      double x = decode(&got[i][e * w], b.dtype), y = decode(&want[i][e * w], b.dtype);
      bool same = (std::isnan(x) && std::isnan(y)) || std::abs(x - y) <= tol;
      if (!same) {
        char msg[256];
        std::snprintf(msg, sizeof msg,
                      "buffer %lld element %zu is %.9g, the reference gives %.9g (tolerance %.3g)",
                      (long long)b.slot, e, x, y, tol);
        return msg;
      }
    }
  }
  return "";
}

double emu_cost(const CompiledKernel& k, std::span<const KernelArg> args, const Target& target) {
  double cost = 0;
  auto part = [&](const KernelLaunch& l) {
    std::vector<KernelArg> all = k.part_args(l, args);
    EmuStats stats;
    LaunchDims grid = launch_grid(l.rendered.info, all), block = l.rendered.info.local;
    emu_run(*emu_compile(l.linear, target), grid, block, all, &stats);
    double warps = double(grid.x * grid.y * grid.z) *
                   std::ceil(double(block.x * block.y * block.z) / std::max(1, target.warp_size));
    double schedulers = std::min(warps, double(target.multiprocessors) * 4);
    cost += double(stats.warp_instructions + stats.shared_wavefronts) / std::max(1.0, schedulers);
  };
  part(k);
  for (const KernelLaunch& l : k.then) part(l);
  return cost;
}

}  // namespace kitten::autotune
