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

namespace {
void build(Device& d, const UOp& lowered, KernelLaunch& k) {
  k.linear = linearize(lowered);
  k.rendered = d.render(k.linear);
  k.program = d.load(d.compiler().compile(k.rendered.source), k.rendered.info);
}
}  // namespace

CompiledKernel compile_kernel(Device& d, const UOp& sink, const Schedule& schedule) {
  std::vector<UOp> parts = lower_kernels(sink, d.props().target, schedule);
  CompiledKernel k;
  build(d, parts[0], k);
  k.then.resize(parts.size() - 1);
  for (size_t i = 1; i < parts.size(); ++i) build(d, parts[i], k.then[i - 1]);
  return k;
}

void KernelLaunch::enqueue(Queue& q, std::span<const KernelArg> args) const {
  q.exec(*program, rendered.info.global, rendered.info.local, args);
}

void KernelLaunch::record(Graph& g, std::span<const KernelArg> args) const {
  g.record(*program, rendered.info.global, rendered.info.local,
           std::vector<KernelArg>(args.begin(), args.end()));
}

void CompiledKernel::run(std::span<const KernelArg> args) {
  program->launch(rendered.info.global, rendered.info.local, args);
  for (const KernelLaunch& k : then)
    k.program->launch(k.rendered.info.global, k.rendered.info.local, args);
}

void CompiledKernel::enqueue(Queue& q, std::span<const KernelArg> args) const {
  KernelLaunch::enqueue(q, args);
  for (const KernelLaunch& k : then) k.enqueue(q, args);
}

void CompiledKernel::record(Graph& g, std::span<const KernelArg> args) const {
  KernelLaunch::record(g, args);
  for (const KernelLaunch& k : then) k.record(g, args);
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
