#include "dsl/schedule.h"

#include <cctype>
#include <charconv>
#include <set>

#include "dsl/printer.h"

namespace kitten {

namespace {

[[noreturn]] void fail(size_t column, const std::string& what) {
  throw ScheduleError(
      "schedule: column " + std::to_string(column + 1) + ": " + what +
      " (entries are ACTION:AXIS:AMOUNT or KNOB=VALUE, either with @PART or not, separated "
      "by spaces)");
}

bool is_name(std::string_view s) {
  if (s.empty() || !(std::isupper(uint8_t(s[0])) || s[0] == '_')) return false;
  for (char c : s)
    if (!(std::isupper(uint8_t(c)) || std::isdigit(uint8_t(c)) || c == '_')) return false;
  return true;
}

int64_t number(std::string_view text, size_t column, const char* what) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size())
    fail(column, std::string("expected ") + what + ", got '" + std::string(text) + "'");
  return v;
}

ScheduleEntry parse_entry(std::string_view e, size_t column) {
  if (size_t at = e.find('@'); at != std::string_view::npos) {
    ScheduleEntry x = parse_entry(e.substr(0, at), column);
    int64_t part = number(e.substr(at + 1), column + at + 1, "a part number");
    if (part < 0) fail(column + at + 1, "a part number is not negative");
    x.part = part;
    return x;
  }
  if (size_t eq = e.find('='); eq != std::string_view::npos) {
    std::string_view name = e.substr(0, eq);
    if (!is_name(name)) fail(column, "'" + std::string(name) + "' is not an upper-case name");
    return {std::string(name), std::nullopt, number(e.substr(eq + 1), column + eq + 1, "a value")};
  }
  size_t a = e.find(':'), b = a == std::string_view::npos ? a : e.find(':', a + 1);
  if (b == std::string_view::npos) fail(column, "'" + std::string(e) + "' is not an entry");
  std::string_view name = e.substr(0, a);
  if (!is_name(name)) fail(column, "'" + std::string(name) + "' is not an upper-case name");
  int64_t axis = number(e.substr(a + 1, b - a - 1), column + a + 1, "an axis id");
  if (axis < 0) fail(column + a + 1, "an axis id is not negative");
  return {std::string(name), axis, number(e.substr(b + 1), column + b + 1, "an amount")};
}

}  // namespace

Schedule& Schedule::action(std::string name, int64_t axis, int64_t amount) {
  entries_.push_back({std::move(name), axis, amount});
  return *this;
}

Schedule& Schedule::knob(std::string name, int64_t value) {
  entries_.push_back({std::move(name), std::nullopt, value});
  return *this;
}

int64_t Schedule::knob_or(std::string_view name, int64_t fallback) const {
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)  // the last setting wins
    if (!it->axis && !it->part && it->name == name) return it->amount;
  return fallback;
}

std::string Schedule::to_string() const {
  std::string out;
  for (const ScheduleEntry& e : entries_) {
    if (!out.empty()) out += ' ';
    out += e.name;
    out += e.axis ? ":" + std::to_string(*e.axis) + ":" : "=";
    out += std::to_string(e.amount);
    if (e.part) out += "@" + std::to_string(*e.part);
  }
  return out;
}

void Schedule::check_axes(const UOp& kernel) const {
  std::set<int64_t> axes;
  for (const UOp& u : toposort(kernel))
    if (u.op() == Op::RANGE) axes.insert(u.axis().id);
  for (const ScheduleEntry& e : entries_) {
    if (!e.axis || axes.count(*e.axis)) continue;
    std::string have;
    for (int64_t a : axes) have += (have.empty() ? "" : ", ") + std::to_string(a);
    throw ScheduleError("schedule: " + Schedule({e}).to_string() + " names axis " +
                        std::to_string(*e.axis) + ", which kernel '" + kernel.name_arg() +
                        "' does not have (its axes: " + (have.empty() ? "none" : have) + ")");
  }
}

Schedule Schedule::parse(std::string_view text) {
  Schedule s;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == ' ') {
      ++i;
      continue;
    }
    size_t end = text.find(' ', i);
    if (end == std::string_view::npos) end = text.size();
    s.entries_.push_back(parse_entry(text.substr(i, end - i), i));
    i = end;
  }
  return s;
}

}  // namespace kitten
