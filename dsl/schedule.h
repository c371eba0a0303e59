// A kernel's schedule: an ordered list of named entries, the one type the autotuner
// searches and stores and the DSL declares its knobs in. An action names an axis of the
// unlowered kernel by its stable id (UPCAST of axis 1 by 4: `UPCAST:1:4`); a knob names a
// value (`BM=128`). An entry may name the one part of a CUT or SPLIT it applies to
// (`UPCAST:1:4@2`). It prints and parses as one line of text, entries separated by spaces,
// so a tuning database and a command line carry it unchanged.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dsl/uop.h"

namespace kitten {

struct ScheduleEntry {
  ScheduleEntry(std::string name = {}, std::optional<int64_t> axis = {}, int64_t amount = 0,
                std::optional<int64_t> part = {})
      : name(std::move(name)), axis(axis), amount(amount), part(part) {}
  std::string name;             // an upper-case action (UPCAST) or a knob (BM)
  std::optional<int64_t> axis;  // actions: the axis id; knobs: none
  int64_t amount = 0;           // the action's amount or the knob's value
  // The part of a CUT or SPLIT the entry applies to (`UPCAST:1:4@2`: part 2 only; parts
  // numbered as split_kernels makes them), or none: the whole schedule's rules.
  std::optional<int64_t> part;
  friend bool operator==(const ScheduleEntry&, const ScheduleEntry&) = default;
};

// A malformed schedule text: the message names the column (1-based) and what was expected.
struct ScheduleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Schedule {
 public:
  Schedule() = default;
  explicit Schedule(std::vector<ScheduleEntry> entries) : entries_(std::move(entries)) {}

  const std::vector<ScheduleEntry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }
  Schedule& action(std::string name, int64_t axis, int64_t amount);
  Schedule& knob(std::string name, int64_t value);
  // A knob's value, or `fallback` where the schedule does not set it (for the whole
  // kernel: a knob of one part is that part's).
  int64_t knob_or(std::string_view name, int64_t fallback) const;

  std::string to_string() const;                 // "" for an empty schedule
  static Schedule parse(std::string_view text);  // throws ScheduleError
  friend bool operator==(const Schedule&, const Schedule&) = default;

  // Every action's axis is a RANGE of `kernel` (the unlowered graph): throws ScheduleError
  // naming the entry and the axes the kernel has, before anything is compiled.
  void check_axes(const UOp& kernel) const;

 private:
  std::vector<ScheduleEntry> entries_;
};

}  // namespace kitten
