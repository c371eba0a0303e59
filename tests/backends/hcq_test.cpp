// The HCQ objects on every device: queues run in order, signals order queues, graphs
// replay with rebound buffers and updated launches, and the compile cache hits, misses and
// rebuilds.
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>

#include "kernels/examples.h"
#include "test_device.h"

namespace kitten {
namespace {

// A grid extent that reads variables is evaluated from each launch's integer arguments;
// a launch that lacks one, or makes the extent less than a block, is refused with why.
TEST(LaunchGrid, ExtentsOfVariablesComeFromTheLaunchsArguments) {
  UOp n = define_var("n", 1, 1 << 20), h = define_var("h", 1, 64);
  std::array<UOp, 3> extent = {(n + 63) / 64, UOp(), h};
  std::vector<std::string> vars = {"h", "n"};
  std::vector<KernelArg> args = {Buffer{}, int64_t(3), int64_t(130)};
  LaunchDims g = resolve_grid({0, 5, 0}, extent, vars, 1, args);
  EXPECT_EQ(g.x, 3);
  EXPECT_EQ(g.y, 5);  // constant
  EXPECT_EQ(g.z, 3);
  args[2] = int64_t(-100);
  EXPECT_NE(error_of([&] {
              resolve_grid({}, extent, vars, 1, args);
            }).find("along x is 0 for these arguments (at least 1 block)"),
            std::string::npos);
  args.pop_back();
  EXPECT_NE(error_of([&] {
              resolve_grid({}, extent, vars, 1, args);
            }).find("reads the variable n, which the launch does not pass"),
            std::string::npos);
}

class Hcq : public DeviceTest {};

std::vector<double> add_ref(const HostData& a, const HostData& b) {
  std::vector<double> w(a.values.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = a.values[i] + b.values[i];
  return w;
}

TEST_P(Hcq, QueueRunsCommandsInOrderAndSignals) {
  const int64_t n = 1000;
  HostData a = HostData::random(dtypes::float32, n, 1), b = HostData::random(dtypes::float32, n, 2);
  HostData out = HostData::poisoned(dtypes::float32, n),
           copy = HostData::poisoned(dtypes::float32, n);
  DeviceBuffer da(*dev, a), db(*dev, b), dout(*dev, out), dcopy(*dev, copy);
  CompiledKernel k = compile_kernel(*dev, elementwise_add_kernel(1, n, dtypes::float32, false));
  auto q = dev->new_queue();
  auto done = dev->new_signal(0);
  Timestamp t0, t1;
  q->timestamp(t0);
  q->exec(*k.program, k.rendered.info.global, k.rendered.info.local, {dout.buf, da.buf, db.buf});
  q->copy(dcopy.buf, dout.buf, size_t(n) * 4);  // after the kernel: sees its result
  q->timestamp(t1);
  q->signal(*done, 7);
  q->submit();
  done->wait(7);
  EXPECT_EQ(done->value(), 7u);
  dcopy.read(copy);
  expect_exact(copy, add_ref(a, b));
  EXPECT_GT(t1.ns, t0.ns);
}

TEST_P(Hcq, SignalsOrderWorkAcrossTwoQueues) {
  EXPECT_LE(add_then_copy_across_queues(*dev, 4096, 1), tolerance(dtypes::float32));
}

TEST_P(Hcq, GraphReplayMatchesDirectLaunchesWithAndWithoutRebinding) {
  const int64_t n = 777;
  HostData a = HostData::random(dtypes::float32, n, 5), b = HostData::random(dtypes::float32, n, 6);
  HostData c = HostData::random(dtypes::float32, n, 7);
  HostData out = HostData::poisoned(dtypes::float32, n),
           out2 = HostData::poisoned(dtypes::float32, n);
  DeviceBuffer da(*dev, a), db(*dev, b), dc(*dev, c), dout(*dev, out), dout2(*dev, out2);
  CompiledKernel k = compile_kernel(*dev, elementwise_add_kernel(1, n, dtypes::float32, false));
  auto g = dev->new_graph();
  // out = a + b; out = out + b  (two launches, the second reading the first's result)
  g->record(*k.program, k.rendered.info.global, k.rendered.info.local, {dout.buf, da.buf, db.buf});
  g->record(*k.program, k.rendered.info.global, k.rendered.info.local,
            {dout.buf, dout.buf, db.buf});
  auto q = dev->new_queue();
  auto s = dev->new_signal(0);
  uint64_t done = 0;
  auto replay = [&](std::span<const std::pair<Buffer, Buffer>> rebind) {
    g->replay(*q, rebind);
    q->signal(*s, ++done);
    q->submit();
    s->wait(done);
  };
  replay({});
  dout.read(out);
  std::vector<double> want(static_cast<size_t>(n));
  // Two float32 additions in turn, each rounded.
  for (size_t i = 0; i < want.size(); ++i)
    want[i] = double(float(a.values[i] + b.values[i]) + float(b.values[i]));
  expect_exact(out, want);
  // Rebound: a -> c and out -> out2, in the same single submission.
  std::pair<Buffer, Buffer> rebind[] = {{da.buf, dc.buf}, {dout.buf, dout2.buf}};
  replay(rebind);
  dout2.read(out2);
  for (size_t i = 0; i < want.size(); ++i)
    want[i] = double(float(c.values[i] + b.values[i]) + float(b.values[i]));
  expect_exact(out2, want);
  // Updated: the second launch adds c instead of b (from then on).
  g->update(1, k.rendered.info.global, {dout.buf, dout.buf, dc.buf});
  replay({});
  dout.read(out);
  for (size_t i = 0; i < want.size(); ++i)
    want[i] = double(float(a.values[i] + b.values[i]) + float(c.values[i]));
  expect_exact(out, want);
  EXPECT_THROW(g->update(2, k.rendered.info.global, {}), BackendError);
}

// The autotuner compiles thousands of kernels: each program's code is freed with it, and
// two programs of the same kernel name live side by side.
TEST_P(Hcq, ProgramsOfOneNameCoexistAndFreeIndependently) {
  HostData x = HostData::random(dtypes::float32, 5, 8);
  DeviceBuffer dx(*dev, x);
  for (int round = 0; round < 20; ++round) {
    CompiledKernel small = compile_kernel(*dev, stencil_kernel(3));
    CompiledKernel large = compile_kernel(*dev, stencil_kernel(5));
    HostData o3 = HostData::poisoned(dtypes::float32, 3),
             o5 = HostData::poisoned(dtypes::float32, 5);
    DeviceBuffer d3(*dev, o3), d5(*dev, o5);
    small.run(std::vector<KernelArg>{d3.buf, dx.buf});
    large.program.reset();  // freed while `small` keeps running
    small.run(std::vector<KernelArg>{d3.buf, dx.buf});
    d3.read(o3);
    EXPECT_EQ(o3.get(2), float(x.values[1] + x.values[2]));  // x[3] is past the end: gated off
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, Hcq, testing::ValuesIn(test_devices()), test_name);

#ifndef KITTEN_CUDA_TESTS
// ---- the compile cache -------------------------------------------------------------------

// Counts real compiles; its "binary" is the source reversed.
class CountingCompiler : public Compiler {
 public:
  using Compiler::Compiler;
  int compiles = 0;
  std::string target() const override { return "test-target"; }
  std::string version() const override { return "test 1.0"; }

 protected:
  std::string compile_uncached(const std::string& s) override {
    ++compiles;
    return std::string(s.rbegin(), s.rend());
  }
};

TEST(CompileCache, MissThenHitAndACorruptEntryIsRebuilt) {
  std::string dir = testing::TempDir() + "kitten-cache-test-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  CountingCompiler c{CompileCache(dir)};
  EXPECT_EQ(c.compile("abc"), "cba");
  EXPECT_EQ(c.compiles, 1);  // a miss
  EXPECT_EQ(c.compile("abc"), "cba");
  EXPECT_EQ(c.compiles, 1);  // a hit
  std::vector<std::filesystem::path> entries;
  for (auto& e : std::filesystem::directory_iterator(dir)) entries.push_back(e.path());
  ASSERT_EQ(entries.size(), 1u);
  {  // flip a byte of the payload: the checksum no longer matches
    std::fstream f(entries[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.put('X');
  }
  EXPECT_EQ(c.compile("abc"), "cba");
  EXPECT_EQ(c.compiles, 2);                      // rebuilt, never loaded
  std::filesystem::resize_file(entries[0], 10);  // truncated
  EXPECT_EQ(c.compile("abc"), "cba");
  EXPECT_EQ(c.compiles, 3);
  EXPECT_EQ(c.compile("abc"), "cba");
  EXPECT_EQ(c.compiles, 3);  // the rebuilt entry is good again
  EXPECT_EQ(c.compile("abd"), "dba");
  EXPECT_EQ(c.compiles, 4);  // another source, another key
  std::filesystem::remove_all(dir);
}

// Runs `probe` in a child process that SIGALRM ends after 10 s and whose heap is capped at
// 2 GiB, so that a probe that blocks or reads without end fails the test instead of hanging
// it or exhausting memory. Returns the child's exit status, or -1 when a signal ended it.
int in_child(const std::function<int()>& probe) {
  pid_t pid = fork();
  if (pid == 0) {
    alarm(10);
    rlimit heap{rlim_t(2) << 30, rlim_t(2) << 30};
    setrlimit(RLIMIT_DATA, &heap);
    _exit(probe());
  }
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) != pid) return -2;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// An entry's path holding something other than a regular file (made by `plant`) is a
// miss, not a hang or an endless read, and the next store replaces it with an entry.
void expect_miss_then_replaced(const std::string& name,
                               const std::function<void(const std::string&)>& plant) {
  std::string dir = testing::TempDir() + "kitten-cache-" + name + "-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  CountingCompiler c{CompileCache(dir)};
  c.compile("abc");
  std::filesystem::path entry = std::filesystem::directory_iterator(dir)->path();
  std::filesystem::remove(entry);
  plant(entry.string());
  std::string key = CompileCache::key("abc", c.target(), c.version());
  int got = in_child([&] { return CompileCache(dir).get(key) ? 1 : 0; });
  ASSERT_EQ(got, 0) << name << ": 1 is a hit, -1 a hang or a crash";
  EXPECT_EQ(c.compile("abc"), "cba");
  EXPECT_EQ(c.compiles, 2);
  EXPECT_TRUE(std::filesystem::is_regular_file(std::filesystem::symlink_status(entry))) << name;
  EXPECT_EQ(c.compile("abc"), "cba");
  EXPECT_EQ(c.compiles, 2);  // the replaced entry hits
  std::filesystem::remove_all(dir);
}

TEST(CompileCache, AFifoAtAnEntryIsAMiss) {
  expect_miss_then_replaced("fifo",
                            [](const std::string& p) { ASSERT_EQ(mkfifo(p.c_str(), 0600), 0); });
}

TEST(CompileCache, ASymlinkToDevZeroAtAnEntryIsAMiss) {
  expect_miss_then_replaced(
      "devzero", [](const std::string& p) { std::filesystem::create_symlink("/dev/zero", p); });
}

TEST(CompileCache, KeyCoversSourceTargetAndVersion) {
  std::string k = CompileCache::key("s", "t", "v");
  EXPECT_EQ(k, CompileCache::key("s", "t", "v"));
  EXPECT_NE(k, CompileCache::key("s2", "t", "v"));
  EXPECT_NE(k, CompileCache::key("s", "t2", "v"));
  EXPECT_NE(k, CompileCache::key("s", "t", "v2"));
  EXPECT_NE(CompileCache::key("ab", "c", "v"), CompileCache::key("a", "bc", "v"));
  EXPECT_EQ(k.size(), 32u);
}

TEST(CompileCache, RealKernelsAreCachedOnDisk) {
  std::string dir = testing::TempDir() + "kitten-cache-real-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  auto d = make_cpu_device(CpuCompileMode::Subprocess, CompileCache(dir));
  compile_kernel(*d, stencil_kernel(5));
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) files += e.path().extension() == ".bin";
  EXPECT_EQ(files, 1u);
  std::filesystem::remove_all(dir);
}

#endif

}  // namespace
}  // namespace kitten
