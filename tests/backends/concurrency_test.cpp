// The backends' own threads under ThreadSanitizer (`make test-tsan`): the cpu thread pool
// driven from several threads, host queues ordered by signals, kernels compiled and run
// from several threads at once, and kernels lowered on several threads at once (the
// autotuner's measure worker lowers a round's candidates so).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "backends/cpu/thread_pool.h"
#include "backends/host.h"
#include "dsl/lower.h"
#include "kernels/examples.h"
#include "kernels/gemm.h"
#include "test_device.h"

namespace kitten {
namespace {

// The same kernels lowered on four threads at once, a tile GEMM (its repack copies, a
// lowering cache shared by the threads) and a generated matrix product, are the kernels
// lowered alone.
TEST(BackendConcurrency, KernelsLoweredOnSeveralThreadsAtOnce) {
  Target t = h100_target();
  GemmProblem p{95, 100, 72, dtypes::bfloat16, dtypes::bfloat16};
  UOp matmul = matmul_kernel(33, 40, 72, dtypes::float32);
  auto keys = [&](GemmLoweringCache* cache, int variant) {
    Schedule s = Schedule::parse(variant % 2 ? "REPACK=2 BN=128" : "REPACK=2");
    std::string out;
    for (const UOp& k : gemm_kernels(p, s, t, cache).kernels) out += k.key().hex() + " ";
    for (const UOp& k :
         lower_kernels(matmul, t, Schedule::parse(variant % 2 ? "UPCAST:1:4" : "")).kernels)
      out += k.key().hex() + " ";
    return out;
  };
  std::vector<std::string> alone{keys(nullptr, 0), keys(nullptr, 1)};
  GemmLoweringCache shared;
  std::vector<std::string> got(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { got[size_t(i)] = keys(&shared, i); });
  for (auto& th : threads) th.join();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got[size_t(i)], alone[size_t(i % 2)]) << i;
}

TEST(BackendConcurrency, ThreadPoolRunsFromSeveralThreads) {
  ThreadPool pool(4);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] {
      for (int r = 0; r < 50; ++r) pool.run(64, [&](int64_t i) { total += i; });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 3 * 50 * (63 * 64 / 2));
}

TEST(BackendConcurrency, HostQueuesOrderedBySignals) {
  auto dev = make_cpu_device(CpuCompileMode::Subprocess, CompileCache(test_cache_dir()));
  EXPECT_LE(add_then_copy_across_queues(*dev, 4096, 20), tolerance(dtypes::float32));
}

TEST(BackendConcurrency, AHostQueuesFailureIsRaisedOnceByTheCallThatWaited) {
  auto dev = make_cpu_device(CpuCompileMode::Subprocess, CompileCache(test_cache_dir()));
  auto q = dev->new_queue();
  auto done = dev->new_signal(0);
  dynamic_cast<HostQueue&>(*q).enqueue([] { throw BackendError("the kernel faulted"); });
  q->signal(*done, 1);
  q->submit();
  done->wait(1);  // the commands after the failed one still ran
  try {
    q->raise_failure();
    ADD_FAILURE() << "no failure raised";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("the kernel faulted"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(q->raise_failure());  // raised once
  q->signal(*done, 2);
  EXPECT_NO_THROW(q->submit());  // the queue goes on
  done->wait(2);
}

TEST(BackendConcurrency, KernelsCompiledAndRunFromSeveralThreads) {
  auto dev = make_cpu_device(CpuCompileMode::Subprocess, CompileCache(test_cache_dir()));
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      int64_t n = 100 + t;
      HostData x = HostData::random(dtypes::float32, size_t(n), uint64_t(t)),
               o = HostData::poisoned(dtypes::float32, size_t(n));
      DeviceBuffer dx(*dev, x), dout(*dev, o);
      CompiledKernel k = compile_kernel(*dev, stencil_kernel(n));
      std::vector<KernelArg> args = {dout.buf, dx.buf};
      k.run(args);
      dout.read(o);
      for (int64_t i = 0; i < n; ++i) {
        double want = (i > 0 ? x.values[size_t(i - 1)] : 0) + x.values[size_t(i)] +
                      (i + 1 < n ? x.values[size_t(i + 1)] : 0);
        if (std::fabs(o.get(size_t(i)) - want) > 1e-5 * (1 + std::fabs(want))) ++wrong;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

// Threads, then two processes, storing and loading one key in one directory: every load is
// a miss or the whole binary, and no temporary file is left behind.
TEST(BackendConcurrency, CompileCacheOneKeyFromThreadsAndProcesses) {
  std::string dir = testing::TempDir() + "kitten-cache-race-XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  CompileCache cache(dir);
  std::string key = CompileCache::key("source", "target", "version"), binary(200000, '\0');
  for (size_t i = 0; i < binary.size(); ++i) binary[i] = char(i * 131 % 251);
  auto hammer = [&](int rounds) {
    int bad = 0;
    for (int r = 0; r < rounds; ++r) {
      cache.put(key, binary);
      std::optional<std::string> got = cache.get(key);
      bad += got && *got != binary;
    }
    return bad;
  };
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&] { bad += hammer(30); });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  pid_t kids[2];
  for (pid_t& kid : kids)
    if ((kid = fork()) == 0) _exit(hammer(60) == 0 ? 0 : 1);
  for (pid_t kid : kids) {
    int status = 0;
    ASSERT_EQ(waitpid(kid, &status, 0), kid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a process read a torn entry";
  }
  EXPECT_EQ(cache.get(key), binary);
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    files.push_back(e.path().filename());
  EXPECT_EQ(files, std::vector<std::string>{key + ".bin"});
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kitten
