#include "backends/hcq.h"

#include <regex>
#include <sstream>

#include "dsl/lower.h"

namespace kitten {

std::string Compiler::compile(const std::string& source) {
  std::string key = CompileCache::key(source, target(), version());
  if (auto hit = cache_.get(key)) return *hit;
  std::string binary = compile_uncached(source);
  cache_.put(key, binary);
  return binary;
}

CompiledKernel compile_kernel(Device& d, const UOp& sink, const Schedule& schedule) {
  CompiledKernel k;
  k.linear = linearize(lower(sink, d.props().target, schedule));
  k.rendered = d.render(k.linear);
  k.program = d.load(d.compiler().compile(k.rendered.source), k.rendered.info);
  return k;
}

void CompiledKernel::run(std::span<const KernelArg> args) {
  program->launch(rendered.info.global, rendered.info.local, args);
}

std::string compile_error_message(const std::string& compiler, const std::string& log,
                                  const std::string& source) {
  std::string msg = compiler + " could not compile the kernel:\n" + log;
  std::smatch m;
  if (std::regex_search(log, m,
                        std::regex(R"((?::(\d+):\d+: (?:fatal )?error)|(?:\((\d+)\): error))"))) {
    int line = std::stoi(m[1].matched ? m[1].str() : m[2].str());
    std::istringstream in(source);
    std::string text;
    msg += "source around line " + std::to_string(line) + ":\n";
    for (int n = 1; std::getline(in, text); ++n)
      if (n >= line - 3 && n <= line + 3)
        msg += (n == line ? "> " : "  ") + std::to_string(n) + " | " + text + "\n";
  }
  return msg;
}

}  // namespace kitten
