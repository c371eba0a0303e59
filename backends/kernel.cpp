#include "backends/hcq.h"

namespace kitten {

std::string Compiler::compile(const std::string& source) {
  std::string key = CompileCache::key(source, target(), version());
  if (auto hit = cache_.get(key)) return *hit;
  std::string binary = compile_uncached(source);
  cache_.put(key, binary);
  return binary;
}

CompiledKernel compile_kernel(Device& d, const UOp& sink) {
  CompiledKernel k;
  k.linear = linearize(sink);
  k.rendered = d.render(k.linear);
  k.program = d.load(d.compiler().compile(k.rendered.source), k.rendered.info);
  return k;
}

void CompiledKernel::run(std::span<const KernelArg> args) {
  program->launch(rendered.info.global, rendered.info.local, args);
}

}  // namespace kitten
