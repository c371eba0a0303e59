// The cpu backend's subprocess compiler with unusual settings: a KITTEN_CC that a shell
// would split into commands, paths with spaces, and compilers whose output does not load.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "kernels/examples.h"
#include "test_device.h"

namespace kitten {
namespace {

// Sets (or, given nullopt, unsets) an environment variable for the life of the holder.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value->c_str(), 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A fresh directory under the test's temporary directory; `stem` may hold spaces.
std::string fresh_dir(const std::string& stem) {
  std::string t = testing::TempDir() + stem + "-XXXXXX";
  return mkdtemp(t.data()) ? t : "";
}

size_t files_in(const std::string& dir) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

// The message of the BackendError that compiling a kernel throws, or "" when it compiles.
std::string compile_error(Device& d) {
  try {
    compile_kernel(d, stencil_kernel(5));
  } catch (const BackendError& e) {
    return e.what();
  }
  return "";
}

std::unique_ptr<Device> subprocess_device(const std::string& cache_dir) {
  return make_cpu_device(CpuCompileMode::Subprocess, CompileCache(cache_dir));
}

TEST(CpuSubprocess, KittenCcIsOneProgramNeverAShellCommand) {
  std::string dir = fresh_dir("kitten-cc-shell");
  ASSERT_FALSE(dir.empty());
  std::string marker = dir + "/ran";
  ScopedEnv cc("KITTEN_CC", "cc; touch " + marker);
  auto d = subprocess_device("");
  EXPECT_NE(d->props().compiler.find("unavailable: cannot run the C compiler 'cc; touch "),
            std::string::npos)
      << d->props().compiler;
  std::string err = compile_error(*d);
  EXPECT_NE(err.find("cannot run the C compiler 'cc; touch " + marker + "'"), std::string::npos)
      << err;
  EXPECT_NE(err.find("KITTEN_CC names one program"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the text after ';' ran as a command";
  std::filesystem::remove_all(dir);
}

TEST(CpuSubprocess, PathsWithSpacesWork) {
  std::string dir = fresh_dir("kitten tmp with spaces");
  ASSERT_FALSE(dir.empty());
  ScopedEnv tmp("TMPDIR", dir);
  {
    ScopedEnv cc("KITTEN_CC", std::nullopt);
    auto d = subprocess_device("");
    EXPECT_EQ(compile_error(*d), "");
  }
  // A compiler whose own path has a space.
  if (std::filesystem::exists("/usr/bin/cc")) {
    std::filesystem::create_symlink("/usr/bin/cc", dir + "/my cc");
    ScopedEnv cc("KITTEN_CC", dir + "/my cc");
    auto d = subprocess_device("");
    EXPECT_EQ(d->props().compiler.find("unavailable"), std::string::npos) << d->props().compiler;
    EXPECT_EQ(compile_error(*d), "");
  }
  std::filesystem::remove_all(dir);
}

TEST(CpuSubprocess, ACompilerThatWritesNothingIsAnErrorAndNothingIsCached) {
  std::string cache = fresh_dir("kitten-cache-empty");
  ASSERT_FALSE(cache.empty());
  ScopedEnv cc("KITTEN_CC", "true");
  auto d = subprocess_device(cache);
  for (int attempt = 0; attempt < 2; ++attempt) {  // the second fails the same way
    std::string err = compile_error(*d);
    EXPECT_NE(err.find("cpu: 'true' exited with status 0 but wrote no shared object"),
              std::string::npos)
        << err;
  }
  EXPECT_EQ(files_in(cache), 0u);
  std::filesystem::remove_all(cache);
}

TEST(CpuSubprocess, AnOutputThatDoesNotLoadIsAnErrorAndNothingIsCached) {
  std::string dir = fresh_dir("kitten-cc-garbage"), cache = dir + "/cache";
  ASSERT_FALSE(dir.empty());
  std::string script = dir + "/garbage-cc";
  // Called as: cc -O2 -fPIC -shared -o OUT SRC -lm; --version succeeds.
  std::ofstream(script) << "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho garbage > \"$5\"\n";
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  ScopedEnv cc("KITTEN_CC", script);
  auto d = subprocess_device(cache);
  std::string err = compile_error(*d);
  EXPECT_NE(err.find("wrote does not load"), std::string::npos) << err;
  EXPECT_EQ(files_in(cache), 0u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kitten
