// The kitten command line.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "dsl/builtin_kernels.h"
#include "dsl/ops.h"
#include "dsl/printer.h"
#include "dsl/verify.h"

namespace kitten {
namespace {

constexpr const char* kHelp = R"(kitten: a kernel-authoring DSL, autotuner and tensor runtime

usage: kitten <command> [options]

commands:
  uops              list the registered ops, one per line: name and meaning
  uops --doc        print the op reference (docs/uops.md) generated from the registry
  graph <kernel>    build a built-in kernel graph, verify it and print it with its key
  graph --list      list the built-in kernels
  --help, -h        this text

exit status: 0 success, 1 the work failed (e.g. a graph failed verification),
2 bad usage (unknown command, kernel or option).
)";

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "kitten: %s\nrun `kitten --help` for usage\n", msg.c_str());
  return 2;
}

int cmd_uops(const std::vector<std::string>& args) {
  if (args.size() == 1 && args[0] == "--doc") {
    std::fputs(ops_doc().c_str(), stdout);
    return 0;
  }
  if (!args.empty()) return usage_error("uops: unknown option '" + args[0] + "'");
  for (int i = 0; i < num_ops(); ++i) {
    const OpSpec* s = find_op_spec(Op(i));
    std::printf("%-12s %s\n", s->name.c_str(), s->meaning.c_str());
  }
  return 0;
}

int cmd_graph(const std::vector<std::string>& args) {
  if (args.size() != 1) return usage_error("graph: expected one kernel name or --list");
  if (args[0] == "--list") {
    for (const std::string& n : builtin_kernel_names()) std::printf("%s\n", n.c_str());
    return 0;
  }
  UOp k;
  try {
    k = builtin_kernel(args[0]);
  } catch (const std::invalid_argument& e) {
    return usage_error(std::string("graph: ") + e.what());
  }
  verify(k);
  std::printf("kernel %s: %zu nodes, verified, key %s\n%s", args[0].c_str(), toposort(k).size(),
              k.key().hex().c_str(), print_graph(k).c_str());
  return 0;
}

}  // namespace
}  // namespace kitten

int main(int argc, char** argv) {
  using namespace kitten;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kHelp, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "uops") return cmd_uops(args);
    if (cmd == "graph") return cmd_graph(args);
    return usage_error("unknown command '" + cmd + "'");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kitten %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
