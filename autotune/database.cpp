#include "autotune/database.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "backends/compile_cache.h"

namespace kitten::autotune {

namespace {

constexpr int kFileFormat = 1;

[[noreturn]] void fail(const std::string& origin, const std::string& what) {
  throw DatabaseError("tuning database " + origin + ": " + what);
}

std::string where(const YAML::Node& n) {
  YAML::Mark m = n.Mark();
  return m.is_null() ? "" : "line " + std::to_string(m.line + 1) + ": ";
}

StableKey parse_key(const std::string& hex, const std::string& origin, const YAML::Node& n) {
  auto bad = [&] { fail(origin, where(n) + "structure '" + hex + "' is not 32 hex digits"); };
  if (hex.size() != 32 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) bad();
  return {std::stoull(hex.substr(16), nullptr, 16), std::stoull(hex.substr(0, 16), nullptr, 16)};
}

// A required field of an entry, converted; a missing field or one of the wrong type makes
// the file corrupt.
template <class T>
T field(const YAML::Node& entry, const char* name, const std::string& origin) {
  YAML::Node n = entry[name];
  if (!n) fail(origin, where(entry) + "an entry has no '" + name + "'");
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    fail(origin, where(n) + "'" + name + "' has the wrong type");
  }
}

TuneEntry parse_entry(const YAML::Node& e, const std::string& origin) {
  if (!e.IsMap()) fail(origin, where(e) + "an entry is not a map");
  TuneEntry t;
  t.id.kernel = field<std::string>(e, "kernel", origin);
  t.id.structure = parse_key(field<std::string>(e, "structure", origin), origin, e);
  t.id.shape = field<std::vector<int64_t>>(e, "shape", origin);
  t.id.dtypes = field<std::vector<std::string>>(e, "dtypes", origin);
  t.schedule_format = field<int>(e, "schedule_format", origin);
  t.schedule = field<std::string>(e, "schedule", origin);
  t.cost = field<double>(e, "cost", origin);
  t.start_cost = field<double>(e, "start_cost", origin);
  t.noise = field<double>(e, "noise", origin);
  t.timed = field<bool>(e, "timed", origin);
  t.driver = field<std::string>(e, "driver", origin);
  t.compiler = field<std::string>(e, "compiler", origin);
  t.date = field<std::string>(e, "date", origin);
  t.search_s = field<double>(e, "search_s", origin);
  t.report = field<std::string>(e, "report", origin);
  return t;
}

bool same_slot(const TuneEntry& a, const TuneEntry& b) {
  return a.id == b.id && a.schedule_format == b.schedule_format;
}

// Holds an exclusive lock on `path`.lock while alive (the lock file stays: removing it
// would race with a process about to lock it).
class FileLock {
 public:
  explicit FileLock(const std::string& path) {
    std::string lock = path + ".lock";
    fd_ = open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(path, "cannot open the lock file " + lock + ": " + std::strerror(errno));
    while (flock(fd_, LOCK_EX) != 0)
      if (errno != EINTR) {
        int e = errno;
        close(fd_);
        fail(path, "cannot lock " + lock + ": " + std::strerror(e));
      }
  }
  ~FileLock() { close(fd_); }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// The file's bytes; nullopt where it does not exist. A file that exists but cannot be read
// is an error: taking it for missing would let a save replace it.
std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec) && !ec) return std::nullopt;
    fail(path, "cannot read it: " + std::string(std::strerror(errno ? errno : EACCES)));
  }
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) fail(path, "cannot read it");
  return s.str();
}

// Writes `text` to `path` atomically: a temporary file beside it, synced, renamed over it,
// and the directory synced.
void write_atomically(const std::string& path, const std::string& text) {
  std::filesystem::path p(path);
  std::string dir = p.parent_path().empty() ? "." : p.parent_path().string();
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create " + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : ENOSPC;
      close(fd);
      unlink(tmp.c_str());
      fail(path, "cannot write " + tmp + ": " + std::strerror(e));
    }
    done += size_t(n);
  }
  int synced = fsync(fd), sync_errno = errno;
  if (close(fd) != 0 && synced == 0) synced = -1, sync_errno = errno;
  if (synced != 0) {
    unlink(tmp.c_str());
    fail(path, "cannot sync " + tmp + ": " + std::strerror(sync_errno));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    fail(path, "cannot rename " + tmp + " over it: " + std::strerror(e));
  }
  if (int d = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
    fsync(d);
    close(d);
  }
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// "NVIDIA H100 80GB HBM3", "sm_90a" -> "nvidia-h100-80gb-hbm3-sm_90a".
std::string file_name(const DeviceId& d) {
  std::string out;
  for (char c : d.model + " " + d.arch) {
    bool keep = std::isalnum(static_cast<unsigned char>(c)) || c == '_';
    char w = keep ? char(std::tolower(static_cast<unsigned char>(c))) : '-';
    if (w != '-' || (!out.empty() && out.back() != '-')) out += w;
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out + ".yaml";
}

}  // namespace

std::string KernelId::to_string() const {
  std::string s = kernel + " ";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  for (size_t i = 0; i < dtypes.size(); ++i) s += (i ? "," : " ") + dtypes[i];
  return s;
}

StableKey text_key(std::string_view text) {
  // Two FNV-1a 64-bit hashes with different offsets.
  uint64_t a = 0xcbf29ce484222325ull, b = 0x84222325cbf29ce4ull;
  for (unsigned char c : text) {
    a = (a ^ c) * 0x100000001b3ull;
    b = (b ^ c ^ 0x5a) * 0x100000001b3ull;
  }
  return {a, b};
}

DeviceId DeviceId::of(Device& dev) {
  const DeviceProps& p = dev.props();
  return {p.model.empty() ? p.name : p.model, p.target.arch, p.driver, dev.compiler().version()};
}

TuneDatabase::TuneDatabase(std::string path, DeviceId device)
    : path_(std::move(path)), device_(std::move(device)) {}

TuneDatabase TuneDatabase::parse(const std::string& text, const std::string& origin,
                                 const DeviceId& device) {
  return parse_for(text, origin, &device);
}

TuneDatabase TuneDatabase::parse_for(const std::string& text, const std::string& origin,
                                     const DeviceId* for_device) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(origin, "not YAML: line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (!root.IsMap()) fail(origin, "not a tuning database (no map at the top)");
  if (!root["format"] || root["format"].as<std::string>("") != std::to_string(kFileFormat))
    fail(origin, "not a tuning database of format " + std::to_string(kFileFormat) +
                     " (its 'format' is '" +
                     (root["format"] ? root["format"].as<std::string>("?") : "missing") + "')");
  std::string model = root["model"].as<std::string>(""), arch = root["arch"].as<std::string>("");
  DeviceId device = for_device ? *for_device : DeviceId{model, arch, "", ""};
  if (model != device.model || arch != device.arch)
    fail(origin, "made for '" + model + "' (" + arch + "), not for this device '" + device.model +
                     "' (" + device.arch + ")");
  YAML::Node entries = root["entries"], count = root["count"];
  if (!entries || !(entries.IsSequence() || entries.IsNull())) fail(origin, "no 'entries' list");
  // 'count' is the file's last key: a file cut short at an entry's end lacks it.
  if (!count) fail(origin, "truncated: no 'count' after the entries");
  size_t n = entries.IsSequence() ? entries.size() : 0;
  if (count.as<int64_t>(-1) != int64_t(n))
    fail(origin, "truncated or edited: 'count' says " + count.as<std::string>("?") + " entries, " +
                     std::to_string(n) + " found");
  TuneDatabase db("", device);
  for (size_t i = 0; i < n; ++i) db.entries_.push_back(parse_entry(entries[i], origin));
  db.reindex();
  return db;
}

TuneDatabase TuneDatabase::load(const std::string& path, const DeviceId& device) {
  std::optional<std::string> text = read_file(path);
  TuneDatabase db = text ? parse(*text, path, device) : TuneDatabase("", device);
  db.path_ = path;
  return db;
}

TuneDatabase TuneDatabase::load_any(const std::string& path) {
  std::optional<std::string> text = read_file(path);
  if (!text) fail(path, std::string("cannot read it: ") + std::strerror(errno));
  TuneDatabase db = parse_for(*text, path, nullptr);
  db.path_ = path;
  return db;
}

const TuneEntry* TuneDatabase::find(const KernelId& id) const {
  auto [lo, hi] = index_.equal_range(id.structure.lo);
  for (auto it = lo; it != hi; ++it)
    if (const TuneEntry& e = entries_[it->second];
        e.id == id && e.schedule_format == kScheduleFormat)
      return &e;
  return nullptr;
}

void TuneDatabase::reindex() {
  index_.clear();
  for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].id.structure.lo, i);
}

std::string TuneDatabase::to_yaml() const {
  YAML::Emitter y;
  y << YAML::Comment("kitten tuning database: schedules found by `kitten tune` (docs/autotune.md)")
    << YAML::Newline;
  y << YAML::BeginMap;
  y << YAML::Key << "format" << YAML::Value << kFileFormat;
  y << YAML::Key << "model" << YAML::Value << device_.model;
  y << YAML::Key << "arch" << YAML::Value << device_.arch;
  y << YAML::Key << "entries" << YAML::Value << YAML::BeginSeq;
  for (const TuneEntry& e : entries_) {
    y << YAML::BeginMap;
    y << YAML::Key << "kernel" << YAML::Value << e.id.kernel;
    y << YAML::Key << "structure" << YAML::Value << e.id.structure.hex();
    y << YAML::Key << "shape" << YAML::Value << YAML::Flow << e.id.shape;
    y << YAML::Key << "dtypes" << YAML::Value << YAML::Flow << e.id.dtypes;
    y << YAML::Key << "schedule_format" << YAML::Value << e.schedule_format;
    y << YAML::Key << "schedule" << YAML::Value << YAML::DoubleQuoted << e.schedule;
    y << YAML::Key << "cost" << YAML::Value << e.cost;
    y << YAML::Key << "start_cost" << YAML::Value << e.start_cost;
    y << YAML::Key << "noise" << YAML::Value << e.noise;
    y << YAML::Key << "timed" << YAML::Value << e.timed;
    y << YAML::Key << "driver" << YAML::Value << YAML::DoubleQuoted << e.driver;
    y << YAML::Key << "compiler" << YAML::Value << YAML::DoubleQuoted << e.compiler;
    y << YAML::Key << "date" << YAML::Value << e.date;
    y << YAML::Key << "search_s" << YAML::Value << e.search_s;
    y << YAML::Key << "report" << YAML::Value << YAML::Literal << e.report;
    y << YAML::EndMap;
  }
  y << YAML::EndSeq;
  y << YAML::Key << "count" << YAML::Value << entries_.size();
  y << YAML::EndMap;
  return std::string(y.c_str()) + "\n";
}

void TuneDatabase::save(const TuneEntry& entry) {
  if (path_.empty()) fail("(none)", "no file to save into");
  TuneEntry e = entry;
  if (e.date.empty()) e.date = utc_now();
  std::filesystem::path dir = std::filesystem::path(path_).parent_path();
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::create_directories(dir, ec) && ec)
    fail(path_, "cannot create its directory " + dir.string() + ": " + ec.message());
  // A link is followed: the file it names is the one replaced.
  std::string real = std::filesystem::weakly_canonical(path_, ec).string();
  if (ec || real.empty()) real = path_;
  FileLock lock(real);
  TuneDatabase now = load(real, device_);  // what other processes saved meanwhile
  auto it = std::find_if(now.entries_.begin(), now.entries_.end(),
                         [&](const TuneEntry& o) { return same_slot(o, e); });
  if (it != now.entries_.end())
    *it = e;
  else
    now.entries_.push_back(e);
  write_atomically(real, now.to_yaml());
  entries_ = std::move(now.entries_);
  reindex();
}

std::string default_database_path(const DeviceId& device) {
  if (const char* p = std::getenv("KITTEN_TUNE_DB"); p && *p)
    return std::string(p) == "off" ? "" : p;
  std::string cache = CompileCache::from_environment().dir();
  return cache.empty() ? "" : cache + "/tune/" + file_name(device);
}

TuneDatabase shipped_database(const DeviceId& device) {
  TuneDatabase all("", device);
  for (const auto& [name, text] : shipped_tuning_files()) {
    if (text.find(device.model) == std::string::npos) continue;  // not parsed for nothing
    // A test keeps the shipped files well-formed: a broken one is refused by name.
    TuneDatabase one = TuneDatabase::parse_for(text, "shipped " + name, nullptr);
    if (one.device_.model != device.model || one.device_.arch != device.arch) continue;
    for (const TuneEntry& e : one.entries()) all.entries_.push_back(e);
    all.reindex();
  }
  return all;
}

Tuned::Tuned(Device& dev, std::string path) : shipped_("", DeviceId::of(dev)) {
  DeviceId id = DeviceId::of(dev);
  if (path.empty()) path = default_database_path(id);
  if (!path.empty()) try {
      user_ = TuneDatabase::load(path, id);
    } catch (const DatabaseError& e) {
      messages.push_back(std::string(e.what()) + " (not used)");
    }
  try {
    shipped_ = shipped_database(id);
  } catch (const DatabaseError& e) {
    messages.push_back(e.what());
  }
}

const TuneEntry* Tuned::find(const KernelId& id) const {
  const TuneEntry* e = user_ ? user_->find(id) : nullptr;
  return e ? e : shipped_.find(id);
}

TunedSchedule Tuned::lookup(const KernelId& id,
                            const std::function<std::string(const Schedule&)>& applies) {
  auto from = [&](const TuneDatabase& db,
                  const std::string& source) -> std::optional<TunedSchedule> {
    const TuneEntry* e = db.find(id);
    if (!e) return std::nullopt;
    std::string why = stored_schedule_applies(e->schedule, applies);
    if (why.empty()) return TunedSchedule{Schedule::parse(e->schedule), source, e};
    messages.push_back(source + ": the entry for " + id.to_string() + " ('" + e->schedule +
                       "') no longer applies: " + why + " (skipped)");
    return std::nullopt;
  };
  if (user_)
    if (auto t = from(*user_, user_->path())) return *t;
  if (auto t = from(shipped_, "shipped")) return *t;
  return {};
}

std::vector<TuneRequest> parse_tune_list(const std::string& text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw DatabaseError("tuning list " + origin + ": not YAML: line " +
                        std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  auto bad = [&](const YAML::Node& n, const std::string& what) {
    throw DatabaseError("tuning list " + origin + ": " + where(n) + what);
  };
  if (!root.IsMap() || !root["kernels"] || !root["kernels"].IsSequence())
    bad(root, "expected a map with a 'kernels' list");
  std::vector<TuneRequest> out;
  for (const YAML::Node& k : root["kernels"]) {
    if (!k.IsMap()) bad(k, "a kernel is not a map (kernel, shape, dtype)");
    for (const auto& kv : k)
      if (std::string f = kv.first.as<std::string>("");
          f != "kernel" && f != "shape" && f != "dtype")
        bad(k, "unknown field '" + f + "' (kernel, shape, dtype)");
    TuneRequest r;
    r.line = k.Mark().line + 1;
    try {
      if (!k["kernel"]) bad(k, "a kernel has no 'kernel'");
      r.kernel = k["kernel"].as<std::string>();
      if (k["shape"]) r.shape = k["shape"].as<std::vector<int64_t>>();
      if (k["dtype"]) r.dtype = k["dtype"].as<std::string>();
    } catch (const YAML::Exception&) {
      bad(k, "'kernel' and 'dtype' are names, 'shape' a list of numbers");
    }
    for (int64_t v : r.shape)
      if (v < 1 || v > (int64_t(1) << 20)) bad(k, "a shape's numbers are 1 to 2^20");
    out.push_back(std::move(r));
  }
  return out;
}

std::string stored_schedule_applies(const std::string& text,
                                    const std::function<std::string(const Schedule&)>& applies) {
  try {
    Schedule s = Schedule::parse(text);
    return applies ? applies(s) : "";
  } catch (const ScheduleError& e) {
    return e.what();
  }
}

std::string schedule_applies(const SearchSpace& space, const Target& target, const Schedule& s) {
  try {
    if (space.lower)
      space.lower(s);
    else
      lower_kernels(space.build(s), target, s);
    return "";
  } catch (const ScheduleError& e) {
    return e.what();
  } catch (const IrError& e) {
    return e.what();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
}

TuneResult tune_kernel(const SearchSpace& space, const Target& target, Measure& measure,
                       TuneDatabase& db, const SearchOptions& options, bool force) {
  TuneResult out;
  if (const TuneEntry* e = db.find(space.id); e && !force) {
    std::string why = stored_schedule_applies(
        e->schedule, [&](const Schedule& s) { return schedule_applies(space, target, s); });
    if (why.empty()) {
      out.hit = true;
      out.entry = *e;
      return out;
    }
    out.skipped = "the stored '" + e->schedule + "' no longer applies: " + why;
  }
  SearchResult r = beam_search(space, target, measure, options);
  if (!std::isfinite(r.cost) || r.report.validation.rfind("no winner agreed", 0) == 0)
    throw std::runtime_error("no schedule to keep: " + r.report.validation);
  TuneEntry& e = out.entry;
  e.id = space.id;
  e.schedule = r.best.to_string();
  e.cost = r.cost;
  e.start_cost = r.start_cost;
  e.noise = r.noise;
  e.timed = r.report.timed;
  e.driver = db.device().driver;
  e.compiler = db.device().compiler;
  e.search_s = r.report.search_s;
  e.report = r.report.to_string();
  db.save(e);
  if (const TuneEntry* saved = db.find(space.id)) e.date = saved->date;
  return out;
}

}  // namespace kitten::autotune
