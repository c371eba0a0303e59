// The tuning database: the schedules searches found, one YAML file per device model, so
// that later runs use them without searching (docs/autotune.md, "The tuning database").
// A run looks a kernel up in the user's file (KITTEN_TUNE_DB, or under the cache
// directory), then in the library shipped with kitten, then falls back to the heuristic.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "autotune/search.h"
#include "backends/hcq.h"
#include "dsl/schedule.h"
#include "dsl/uop.h"

namespace kitten::autotune {

// The meaning of a stored schedule's entries: raised when an action or knob changes what
// it does, so that old entries stop being used (a new kitten commit does not change it).
// 2: attention at D128 on Hopper defaults to PV=1, so an entry without PV means PV=1.
inline constexpr int kScheduleFormat = 2;

// The 128-bit stable key of a text (a DSL kernel's problem).
StableKey text_key(std::string_view text);

// The device a file is for, and the versions an entry is made under.
struct DeviceId {
  std::string model, arch;       // "NVIDIA H100 80GB HBM3", "sm_90a"
  std::string driver, compiler;  // versions, recorded per entry
  static DeviceId of(Device& dev);
};

struct TuneEntry {
  KernelId id;
  int schedule_format = kScheduleFormat;
  std::string schedule;   // Schedule::to_string (kept as text: an entry of another
                          // format may not parse, and is kept as it was)
  double cost = 0;        // seconds, or the emulator's deterministic cost (timed false)
  double start_cost = 0;  // the heuristic's (the search's start) cost
  double noise = 0;       // the measurement's relative spread
  bool timed = true;      // cost is seconds on the device
  std::string driver, compiler, date;  // made under; UTC, ISO 8601
  double search_s = 0;                 // the search's wall time
  std::string report;                  // the search's report
};

// A corrupt or truncated file, or one made for another device: what and where. Such a file
// is never rewritten.
struct DatabaseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class TuneDatabase {
 public:
  // An empty database for `device` that saves into `path` ("" saves nowhere).
  TuneDatabase(std::string path, DeviceId device);
  // Loads `path` (a missing file is an empty database). Throws DatabaseError.
  static TuneDatabase load(const std::string& path, const DeviceId& device);
  // Loads `path` for the device its header names (to list it anywhere); a missing file is
  // an error too.
  static TuneDatabase load_any(const std::string& path);
  // Parses `text` (from `origin`, for messages) as a file for `device`; throws DatabaseError.
  static TuneDatabase parse(const std::string& text, const std::string& origin,
                            const DeviceId& device);

  const std::string& path() const { return path_; }
  const DeviceId& device() const { return device_; }
  const std::vector<TuneEntry>& entries() const { return entries_; }
  // The entry for `id` of this schedule format, if any.
  const TuneEntry* find(const KernelId& id) const;
  // Adds the entry (replacing one with the same id and format) and writes the file:
  // under an exclusive lock, the file is read again (entries other processes saved are
  // kept), then written to a temporary file, synced and renamed over the old one. Throws
  // DatabaseError where the file on disk is corrupt or foreign (it is left as it is).
  void save(const TuneEntry& entry);
  // The file's text for these entries.
  std::string to_yaml() const;

 private:
  friend TuneDatabase shipped_database(const DeviceId& device);
  // parse, for `for_device`, or (null) for the device the file's header names.
  static TuneDatabase parse_for(const std::string& text, const std::string& origin,
                                const DeviceId* for_device);
  void reindex();
  std::string path_;
  DeviceId device_;
  std::vector<TuneEntry> entries_;
  std::unordered_multimap<uint64_t, size_t> index_;  // structure.lo -> entries_ index
};

// The database file a device uses: KITTEN_TUNE_DB where set ("off": none), else
// <cache dir>/tune/<model>-<arch>.yaml, "" where there is no cache directory.
std::string default_database_path(const DeviceId& device);

// The tuned schedules shipped with kitten (autotune/tuned/*.yaml, built in) for `device`:
// the files made for its model and arch (an empty database where there is none).
TuneDatabase shipped_database(const DeviceId& device);

// The shipped files' names and texts, as built in.
std::vector<std::pair<std::string, std::string>> shipped_tuning_files();

// Where a run finds a kernel's schedule: the user's database, then the shipped one. An
// entry whose schedule no longer parses or applies (`applies` returns why not, "" where it
// does) is skipped, with the reason in `skipped`.
struct TunedSchedule {
  Schedule schedule;
  std::string source;  // the file it came from, "shipped", or "" (none: the heuristic)
  const TuneEntry* entry = nullptr;
};
class Tuned {
 public:
  // Opens the user's database at `path` (default_database_path where empty); a corrupt or
  // foreign user file is reported in `messages` and not used.
  explicit Tuned(Device& dev, std::string path = "");
  TunedSchedule lookup(const KernelId& id,
                       const std::function<std::string(const Schedule&)>& applies);
  // The stored entry alone (the user's, else the shipped one), unchecked.
  const TuneEntry* find(const KernelId& id) const;
  std::vector<std::string> messages;  // entries skipped and files refused, and why

 private:
  std::optional<TuneDatabase> user_;
  TuneDatabase shipped_;
};

// One kernel a tuning list (`kitten tune LIST.yaml`) asks for: its name, shape and dtype
// ("" for the kernel's default), and its line in the list.
struct TuneRequest {
  std::string kernel;
  std::vector<int64_t> shape;
  std::string dtype;
  int line = 0;
};
// The list's kernels: a YAML map with `kernels`, a list of maps with `kernel`, `shape` and
// optionally `dtype`. Throws DatabaseError naming the line of what is wrong.
std::vector<TuneRequest> parse_tune_list(const std::string& text, const std::string& origin);

// Whether a stored schedule's text still parses and `applies` takes it: "" where it does,
// else why not.
std::string stored_schedule_applies(const std::string& text,
                                    const std::function<std::string(const Schedule&)>& applies);

// Whether `s` still lowers in `space`: "" where it does, else why not.
std::string schedule_applies(const SearchSpace& space, const Target& target, const Schedule& s);

struct TuneResult {
  bool hit = false;     // the database had a valid entry: no search ran
  TuneEntry entry;      // the stored entry, or the one the search saved
  std::string skipped;  // why a stored entry was not used ("" where none was skipped)
};
// Tunes one kernel into `db`: a stored entry of `space.id` whose schedule still applies is
// the result without a search (unless `force`); else a BEAM search runs and its winner is
// saved at once (so a later kernel's failure or a kill loses nothing finished). Throws
// std::runtime_error, saving nothing, where no measured winner agreed with the reference.
TuneResult tune_kernel(const SearchSpace& space, const Target& target, Measure& measure,
                       TuneDatabase& db, const SearchOptions& options, bool force = false);

}  // namespace kitten::autotune
