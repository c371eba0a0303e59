// What every `kitten` command shares: its exit statuses and messages, and opening a device
// by name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/hcq.h"

namespace kitten {

// A message with its control bytes shown as escapes (\n, \t, \x1b), so that a kernel name,
// an option or a setting cannot move the cursor or rewrite the terminal. Multi-line
// messages (a compiler's log) keep their line breaks and tabs.
std::string escape_controls(const std::string& msg, bool keep_lines);
// Prints the message and returns 2 (bad usage).
int usage_error(const std::string& msg);
// Prints "kitten <cmd>: msg" and returns 1 (the work failed).
int work_failed(const std::string& cmd, const std::string& msg);
// Opens a device by name for `cmd`: -1 when all is well, else the exit status. A device
// kitten knows but cannot open here is a failure of the work, not of usage.
int open_named_device(const std::string& cmd, const std::string& name,
                      std::unique_ptr<Device>& dev);

// A shape option's numbers: "64,128" -> {64, 128}; empty on a malformed list (or a
// number outside 1..2^20).
std::vector<int64_t> parse_shape(const std::string& s);
// The path of this executable (for worker processes).
std::string self_path();

// `kitten bench <kernel> ...` (tools/bench.cpp).
int cmd_bench(const std::vector<std::string>& args);
// `kitten search <kernel> ...`, `kitten compile-worker --device D` and `kitten
// measure-worker <kernel> ...` (tools/search.cpp).
int cmd_search(const std::vector<std::string>& args);
int cmd_compile_worker(const std::vector<std::string>& args);
int cmd_measure_worker(const std::vector<std::string>& args);
// `kitten tune ...` (tools/tune.cpp).
int cmd_tune(const std::vector<std::string>& args);
// `kitten run minilm ...` and `kitten bench minilm ...` (tools/run.cpp).
int cmd_run(const std::vector<std::string>& args);
int bench_minilm(const std::vector<std::string>& args);
int bench_train_step(const std::vector<std::string>& args);

}  // namespace kitten
