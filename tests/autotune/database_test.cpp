// The tuning database: entries round-trip; two writer processes lose nothing; corrupt,
// truncated and foreign files are refused and left byte-identical; a tuning process
// killed midway keeps what it finished; a stored entry means no search; an entry whose
// schedule no longer applies is skipped with its reason; an entry made under other
// versions is used, and `kitten tune --check` flags it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autotune/database.h"
#include "backends/registry.h"
#include "kernels/examples.h"

namespace kitten::autotune {
namespace {

namespace fs = std::filesystem;

const DeviceId kDevice{"Test GPU 9000", "sm_90a", "driver 1", "compiler 1"};

// A fresh directory per test, removed afterwards.
class Dir {
 public:
  Dir() {
    char tmpl[] = "/tmp/kitten-db-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~Dir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TuneEntry entry(const std::string& kernel, int64_t n, const std::string& schedule = "UPCAST:0:4") {
  TuneEntry e;
  e.id = {kernel, text_key(kernel), {n, 2 * n}, {"float32"}};
  e.schedule = schedule;
  e.cost = 1.5e-4 * double(n);
  e.start_cost = 3e-4 * double(n);
  e.noise = 0.02;
  e.driver = kDevice.driver;
  e.compiler = kDevice.compiler;
  e.search_s = 4.25;
  e.report = "candidates: 3 generated\nstopped: after 1 rounds\n";
  return e;
}

TEST(Database, EntriesRoundTrip) {
  Dir dir;
  TuneDatabase db(dir.file("db.yaml"), kDevice);
  db.save(entry("sum", 7));
  db.save(entry("matmul", 9, "UPCAST:1:8 UNROLL:2:4"));
  db.save(entry("sum", 7, "UPCAST:0:2"));  // replaces the first
  TuneDatabase back = TuneDatabase::load(dir.file("db.yaml"), kDevice);
  ASSERT_EQ(back.entries().size(), 2u);
  const TuneEntry* e = back.find(entry("matmul", 9).id);
  ASSERT_NE(e, nullptr);
  TuneEntry want = entry("matmul", 9, "UPCAST:1:8 UNROLL:2:4");
  EXPECT_EQ(e->id, want.id);
  EXPECT_EQ(e->schedule, want.schedule);
  EXPECT_DOUBLE_EQ(e->cost, want.cost);
  EXPECT_DOUBLE_EQ(e->start_cost, want.start_cost);
  EXPECT_DOUBLE_EQ(e->noise, want.noise);
  EXPECT_EQ(e->driver, want.driver);
  EXPECT_EQ(e->compiler, want.compiler);
  EXPECT_DOUBLE_EQ(e->search_s, want.search_s);
  EXPECT_EQ(e->report, want.report);
  EXPECT_FALSE(e->date.empty());
  EXPECT_EQ(back.find(entry("sum", 7).id)->schedule, "UPCAST:0:2");
  EXPECT_EQ(back.find(entry("sum", 8).id), nullptr);  // another shape
  EXPECT_EQ(back.to_yaml(), read(dir.file("db.yaml")));
  // No temporary file is left beside it.
  for (const auto& f : fs::directory_iterator(fs::path(dir.file("db.yaml")).parent_path()))
    EXPECT_EQ(f.path().string().find(".tmp."), std::string::npos) << f.path();
}

TEST(Database, TwoWriterProcessesLoseNothing) {
  Dir dir;
  std::string path = dir.file("db.yaml");
  constexpr int kEach = 25;
  pid_t pids[2];
  for (int w = 0; w < 2; ++w) {
    pids[w] = fork();
    ASSERT_GE(pids[w], 0);
    if (pids[w] == 0) {
      int status = 0;
      try {
        TuneDatabase db(path, kDevice);
        for (int i = 0; i < kEach; ++i) db.save(entry("k" + std::to_string(w), i + 1));
      } catch (...) {
        status = 1;
      }
      _exit(status);
    }
  }
  for (pid_t p : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(p, &status, 0), p);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  TuneDatabase db = TuneDatabase::load(path, kDevice);
  EXPECT_EQ(db.entries().size(), size_t(2 * kEach));
  for (int w = 0; w < 2; ++w)
    for (int i = 0; i < kEach; ++i)
      EXPECT_NE(db.find(entry("k" + std::to_string(w), i + 1).id), nullptr) << w << " " << i;
}

TEST(Database, CorruptTruncatedAndForeignFilesAreRefusedAndKept) {
  Dir dir;
  std::string good_path = dir.file("good.yaml");
  TuneDatabase good(good_path, kDevice);
  good.save(entry("sum", 3));
  good.save(entry("sum", 4));
  std::string text = read(good_path);
  DeviceId other = kDevice;
  other.model = "Another GPU";
  std::vector<std::pair<std::string, std::string>> bad = {
      {"not YAML", "format: 1\nentries: [\n"},
      {"not a database", "- just\n- a list\n"},
      {"format", "format: 7\nmodel: x\n"},
      {"entry missing a field",
       "format: 1\nmodel: Test GPU 9000\narch: sm_90a\nentries:\n"
       "  - kernel: sum\ncount: 1\n"},
      {"bad structure", std::string(text).replace(text.find("structure: ") + 11, 4, "zzzz")},
      // Cut at the second entry's start (the first entry whole) and mid-entry.
      {"truncated at an entry",
       text.substr(0, text.find("  - kernel", text.find("  - kernel") + 1))},
      {"truncated mid-entry", text.substr(0, text.size() * 2 / 3)},
      {"truncated before count", text.substr(0, text.find("count:"))},
  };
  for (const auto& [what, content] : bad) {
    std::string path = dir.file("bad.yaml");
    write(path, content);
    EXPECT_THROW(TuneDatabase::load(path, kDevice), DatabaseError) << what;
    TuneDatabase db(path, kDevice);
    EXPECT_THROW(db.save(entry("sum", 5)), DatabaseError) << what;
    EXPECT_EQ(read(path), content) << what << ": the file was rewritten";
  }
  // A file made for another device: refused, by name, and kept.
  try {
    TuneDatabase::load(good_path, other);
    ADD_FAILURE() << "a foreign file was loaded";
  } catch (const DatabaseError& e) {
    EXPECT_NE(std::string(e.what()).find("made for 'Test GPU 9000'"), std::string::npos)
        << e.what();
  }
  TuneDatabase foreign(good_path, other);
  EXPECT_THROW(foreign.save(entry("sum", 5)), DatabaseError);
  EXPECT_EQ(read(good_path), text);
}

// Costs by schedule text (100 for the rest), counting what it is asked to do.
class CountingMeasure : public Measure {
 public:
  int prepared = 0, measured = 0;
  std::string kill_at;  // a schedule whose measurement kills this process
  std::vector<Measured> prepare(const std::vector<const Candidate*>& round) override {
    prepared += int(round.size());
    return std::vector<Measured>(round.size());
  }
  Measured measure(const Candidate& c, double) override {
    ++measured;
    if (!kill_at.empty()) raise(SIGKILL);
    return {Measured::Status::Ok,
            c.schedule.to_string().find("UPCAST") != std::string::npos ? 1.0 : 2.0, ""};
  }
  std::string validate(const Candidate&, const Candidate&) override { return ""; }
  bool timed() const override { return false; }
};

SearchSpace sum_space(int64_t rows) {
  SearchSpace s =
      action_space(reduce_kernel(rows, 40, 1, Op::ADD, dtypes::float32), host_target("x86_64", 2));
  s.id.shape = {rows, 40};
  s.id.dtypes = {"float32"};
  return s;
}

SearchOptions quick() {
  SearchOptions o;
  o.max_rounds = 2;
  o.estimate = [](const Candidate&) { return 0.0; };
  return o;
}

TEST(Database, AnUnreadableFileIsRefusedNotTakenForMissing) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads a file of mode 000";
  Dir dir;
  std::string path = dir.file("db.yaml");
  TuneDatabase db(path, kDevice);
  db.save(entry("sum", 3));
  std::string text = read(path);
  fs::permissions(path, fs::perms::none);
  EXPECT_THROW(TuneDatabase::load(path, kDevice), DatabaseError);
  EXPECT_THROW(db.save(entry("sum", 4)), DatabaseError);
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(read(path), text);
}

TEST(Database, NothingIsSavedWhereNoWinnerAgrees) {
  class Disagrees : public CountingMeasure {
    std::string validate(const Candidate&, const Candidate&) override { return "wrong"; }
  };
  Dir dir;
  TuneDatabase db(dir.file("db.yaml"), kDevice);
  Disagrees m;
  try {
    tune_kernel(sum_space(41), host_target("x86_64", 2), m, db, quick());
    ADD_FAILURE() << "a search whose winners all disagreed was kept";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no winner agreed"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(db.entries().empty());
  EXPECT_FALSE(fs::exists(dir.file("db.yaml")));
}

TEST(Database, AStoredEntryMeansNoSearch) {
  Dir dir;
  TuneDatabase db(dir.file("db.yaml"), kDevice);
  SearchSpace space = sum_space(33);
  Target t = host_target("x86_64", 2);
  CountingMeasure first;
  TuneResult a = tune_kernel(space, t, first, db, quick());
  EXPECT_FALSE(a.hit);
  EXPECT_GT(first.measured, 0);
  EXPECT_NE(a.entry.schedule.find("UPCAST"), std::string::npos) << a.entry.schedule;
  TuneDatabase again = TuneDatabase::load(dir.file("db.yaml"), kDevice);
  CountingMeasure second;
  TuneResult b = tune_kernel(space, t, second, again, quick());
  EXPECT_TRUE(b.hit);
  EXPECT_EQ(b.entry.schedule, a.entry.schedule);
  EXPECT_EQ(second.prepared, 0);  // nothing compiled
  EXPECT_EQ(second.measured, 0);
  CountingMeasure forced;
  EXPECT_FALSE(tune_kernel(space, t, forced, again, quick(), /*force=*/true).hit);
  EXPECT_GT(forced.measured, 0);
}

TEST(Database, AnEntryThatNoLongerAppliesIsSkippedWithItsReason) {
  Dir dir;
  Target t = host_target("x86_64", 2);
  SearchSpace space = sum_space(35);
  TuneEntry stale = entry("sum", 1, "UPCAST:42:4");  // the kernel has no axis 42
  stale.id = space.id;
  TuneDatabase db(dir.file("db.yaml"), kDevice);
  db.save(stale);
  CountingMeasure m;
  TuneResult r = tune_kernel(space, t, m, db, quick());
  EXPECT_FALSE(r.hit);
  EXPECT_NE(r.skipped.find("no longer applies"), std::string::npos) << r.skipped;
  EXPECT_NE(r.skipped.find("42"), std::string::npos) << r.skipped;
  EXPECT_GT(m.measured, 0);
  EXPECT_NE(db.find(space.id)->schedule, "UPCAST:42:4");  // the search's winner replaced it
}

TEST(Database, ATuningProcessKilledMidwayKeepsWhatItFinished) {
  Dir dir;
  std::string path = dir.file("db.yaml");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Target t = host_target("x86_64", 2);
    TuneDatabase db(path, kDevice);
    CountingMeasure m;
    tune_kernel(sum_space(37), t, m, db, quick());  // finished and saved
    m.kill_at = "any";
    tune_kernel(sum_space(39), t, m, db, quick());  // killed while measuring
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  TuneDatabase db = TuneDatabase::load(path, kDevice);
  ASSERT_EQ(db.entries().size(), 1u);
  EXPECT_EQ(db.entries()[0].id, sum_space(37).id);
}

TEST(Database, TheListOfKernelsToTuneIsCheckedWithLines) {
  std::vector<TuneRequest> r = parse_tune_list(
      "kernels:\n  - {kernel: gemm, shape: [64, 48, 40], dtype: bfloat16}\n  - kernel: sum\n",
      "list.yaml");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].kernel, "gemm");
  EXPECT_EQ(r[0].shape, (std::vector<int64_t>{64, 48, 40}));
  EXPECT_EQ(r[0].dtype, "bfloat16");
  EXPECT_EQ(r[1].line, 3);
  for (const char* bad : {"kernels: 3\n", "kernels:\n  - {kernel: sum, shape: [0]}\n",
                          "kernels:\n  - {kernel: sum, shapes: [4]}\n",
                          "kernels:\n  - {shape: [4]}\n", "kernels: [\n"}) {
    EXPECT_THROW(parse_tune_list(bad, "list.yaml"), DatabaseError) << bad;
  }
  try {
    parse_tune_list("kernels:\n  - {kernel: sum}\n  - {kernel: sum, shape: [x]}\n", "list.yaml");
    ADD_FAILURE();
  } catch (const DatabaseError& e) {
    EXPECT_NE(std::string(e.what()).find("list.yaml: line 3"), std::string::npos) << e.what();
  }
}

// Runs the kitten CLI; its stdout and exit status.
std::pair<std::string, int> kitten(const std::string& args) {
  std::string cmd = std::string(KITTEN_BIN) + " " + args + " 2>&1";
  std::FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  int status = pclose(p);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

TEST(Database, AnEntryMadeUnderOtherVersionsIsUsedAndCheckFlagsIt) {
  Dir dir;
  std::string db_path = dir.file("db.yaml"), list = dir.file("list.yaml");
  write(list, "kernels:\n  - {kernel: sum, shape: [16, 40]}\n");
  auto [tuned, status] =
      kitten("tune " + list + " --device emu --db " + db_path + " --rounds 1 --in-process");
  ASSERT_EQ(status, 0) << tuned;
  EXPECT_NE(tuned.find("saved"), std::string::npos) << tuned;
  // Rewrite the entry's versions, as if an older driver and compiler had made it.
  std::unique_ptr<Device> emu = open_device("emu");
  DeviceId id = DeviceId::of(*emu);
  TuneDatabase db = TuneDatabase::load(db_path, id);
  ASSERT_EQ(db.entries().size(), 1u);
  TuneEntry old = db.entries()[0];
  old.driver = "an old driver";
  old.compiler = "an old compiler";
  db.save(old);
  // A run uses it, and says it was stored: no search.
  auto [again, status2] =
      kitten("tune " + list + " --device emu --db " + db_path + " --rounds 1 --in-process");
  EXPECT_EQ(status2, 0) << again;
  EXPECT_NE(again.find("stored: no search"), std::string::npos) << again;
  Tuned t(*emu, db_path);
  EXPECT_EQ(t.find(old.id)->schedule, old.schedule);
  // --check re-times it (the emulator's cost is exact: no regression) and flags the versions.
  auto [checked, status3] = kitten("tune --check --device emu --db " + db_path);
  EXPECT_EQ(status3, 0) << checked;
  EXPECT_NE(checked.find("made under other versions (an old driver, an old compiler)"),
            std::string::npos)
      << checked;
  EXPECT_NE(checked.find("1.000x  ok"), std::string::npos) << checked;
  auto [shown, status4] = kitten("tune --show --db " + db_path);
  EXPECT_EQ(status4, 0) << shown;
  EXPECT_NE(shown.find("sum 16x40 float32"), std::string::npos) << shown;
}

TEST(Database, TuneRefusesACorruptFileAndReportsABadListEntry) {
  Dir dir;
  std::string db_path = dir.file("db.yaml"), list = dir.file("list.yaml");
  write(db_path, "format: 1\nmodel: emulator\narch: sm_90a\nentries:\n");  // no count
  write(list, "kernels:\n  - {kernel: sum, shape: [16, 40]}\n");
  auto [out, status] = kitten("tune " + list + " --device emu --db " + db_path + " --rounds 1");
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("truncated"), std::string::npos) << out;
  EXPECT_EQ(read(db_path), "format: 1\nmodel: emulator\narch: sm_90a\nentries:\n");
  // A list entry kitten cannot tune is reported with its line; the others are tuned.
  write(list, "kernels:\n  - {kernel: nosuch, shape: [4]}\n  - {kernel: sum, shape: [16, 40]}\n");
  std::string fresh = dir.file("fresh.yaml");
  auto [out2, status2] =
      kitten("tune " + list + " --device emu --db " + fresh + " --rounds 1 --in-process");
  EXPECT_EQ(status2, 1) << out2;
  EXPECT_NE(out2.find("line 2: no searchable kernel named 'nosuch'"), std::string::npos) << out2;
  EXPECT_NE(out2.find("1 kernels not tuned"), std::string::npos) << out2;
  std::unique_ptr<Device> emu = open_device("emu");
  EXPECT_EQ(TuneDatabase::load(fresh, DeviceId::of(*emu)).entries().size(), 1u);
}

TEST(Database, BenchTakesTheTunedScheduleAndSkipsOneThatNoLongerApplies) {
  Dir dir;
  std::string db_path = dir.file("db.yaml");
  std::unique_ptr<Device> emu = open_device("emu");
  TuneDatabase db(db_path, DeviceId::of(*emu));
  // The GEMM's id as kitten bench makes it (tools/spaces.cpp: gemm_id).
  TuneEntry e = entry("gemm", 1, "BM=64 BN=64 WM=2 WN=2 WGMMA=0");
  e.id = {"gemm", text_key("gemm 48x40x32 bfloat16->bfloat16"), {48, 40, 32},
          {"bfloat16", "bfloat16"}};
  db.save(e);
  std::string bench = "bench gemm --device emu --shape 48,40,32 --out bfloat16 --db " + db_path;
  auto [out, status] = kitten(bench);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("BM=64 BN=64 BK="), std::string::npos) << out;
  EXPECT_NE(out.find("(tuned, from " + db_path), std::string::npos) << out;
  EXPECT_NE(out.find("check: passed"), std::string::npos) << out;
  auto [untuned, status2] = kitten(bench + " --untuned");
  EXPECT_EQ(status2, 0) << untuned;
  EXPECT_NE(untuned.find("(the default (--untuned))"), std::string::npos) << untuned;
  // A schedule the kernel refuses now: skipped with its reason, the default used.
  e.schedule = "BM=48";
  db.save(e);
  auto [stale, status3] = kitten(bench);
  EXPECT_EQ(status3, 0) << stale;
  EXPECT_NE(stale.find("('BM=48') no longer applies"), std::string::npos) << stale;
  EXPECT_NE(stale.find("the default: no tuned entry"), std::string::npos) << stale;
  EXPECT_NE(stale.find("check: passed"), std::string::npos) << stale;
  // --tune: a kernel found nowhere is searched, and its winner saved and used.
  std::string fresh = dir.file("fresh.yaml");
  auto [tuned, status4] =
      kitten("bench gemm --device emu --shape 48,40,32 --out bfloat16 --tune 1 --db " + fresh);
  EXPECT_EQ(status4, 0) << tuned;
  EXPECT_NE(tuned.find("tuned now by a BEAM search"), std::string::npos) << tuned;
  EXPECT_NE(tuned.find("check: passed"), std::string::npos) << tuned;
  TuneDatabase saved = TuneDatabase::load(fresh, DeviceId::of(*emu));
  ASSERT_EQ(saved.entries().size(), 1u);
  EXPECT_EQ(saved.entries()[0].id, e.id);
}

TEST(Database, TheShippedFilesAreWellFormed) {
  // Every built-in file is the one in autotune/tuned/, parses for the device it names, and
  // its entries' schedules parse.
  int files = 0;
  for (const auto& entry :
       fs::directory_iterator(std::string(KITTEN_SOURCE_DIR) + "/autotune/tuned"))
    if (entry.path().extension() == ".yaml") ++files;
  std::vector<std::pair<std::string, std::string>> shipped = shipped_tuning_files();
  EXPECT_EQ(shipped.size(), size_t(files));
  for (const auto& [name, text] : shipped) {
    EXPECT_EQ(text, read(std::string(KITTEN_SOURCE_DIR) + "/autotune/tuned/" + name)) << name;
    std::string path = std::string(KITTEN_SOURCE_DIR) + "/autotune/tuned/" + name;
    TuneDatabase db = TuneDatabase::load_any(path);
    EXPECT_FALSE(db.entries().empty()) << name;
    for (const TuneEntry& e : db.entries())
      EXPECT_NO_THROW(Schedule::parse(e.schedule)) << name << ": " << e.id.to_string();
    EXPECT_EQ(shipped_database(db.device()).entries().size(), db.entries().size()) << name;
  }
}

}  // namespace
}  // namespace kitten::autotune
