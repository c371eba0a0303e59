// The in-process compiler: Clang turns the C source into an optimised LLVM module, LLVM
// emits an object file for the host CPU, and ORC links it into a JITDylib of its own.
// Errors from LLVM come back as llvm::Error values and become BackendErrors in our own
// frames: no exception crosses LLVM or Clang.
#include <clang/Basic/Diagnostic.h>
#include <clang/Basic/DiagnosticOptions.h>
#include <clang/Basic/Version.h>
#include <clang/CodeGen/CodeGenAction.h>
#include <clang/Frontend/CompilerInstance.h>
#include <clang/Frontend/CompilerInvocation.h>
#include <clang/Frontend/TextDiagnosticPrinter.h>
#include <clang/Lex/PreprocessorOptions.h>
#include <llvm/ADT/StringMap.h>
#include <llvm/Config/llvm-config.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/LegacyPassManager.h>
#include <llvm/IR/Module.h>
#include <llvm/MC/TargetRegistry.h>
#include <llvm/Support/ErrorHandling.h>
#include <llvm/Support/Host.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/Target/TargetOptions.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "backends/cpu/clang_jit.h"

namespace kitten {

namespace {

void on_llvm_fatal_error(void*, const char* reason, bool) {
  std::fprintf(stderr, "kitten: LLVM fatal error while compiling a cpu kernel: %s\n", reason);
  std::abort();
}

void init_llvm_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    llvm::InitializeNativeTargetAsmParser();
    llvm::install_fatal_error_handler(on_llvm_fatal_error, nullptr);
  });
}

std::string error_text(llvm::Error e) { return llvm::toString(std::move(e)); }

std::string host_features() {
  llvm::StringMap<bool> map;
  std::string out;
  if (llvm::sys::getHostCPUFeatures(map))
    for (const auto& f : map)
      out += (out.empty() ? "" : ",") + std::string(f.second ? "+" : "-") + f.first().str();
  return out;
}

using KernelFn = void (*)(void* const*, long long, long long);

class JitProgram : public Program {
 public:
  JitProgram(llvm::orc::LLJIT& jit, llvm::orc::JITDylib& jd, KernelFn fn, KernelInfo info,
             ThreadPool& pool, std::mutex& mu)
      : jit_(jit), jd_(jd), fn_(fn), info_(std::move(info)), pool_(pool), mu_(mu) {}
  ~JitProgram() override {
    std::lock_guard lock(mu_);
    if (llvm::Error e = jit_.getExecutionSession().removeJITDylib(jd_))
      std::fprintf(stderr, "kitten: freeing cpu kernel '%s': %s\n", info_.name.c_str(),
                   error_text(std::move(e)).c_str());
  }
  void launch(LaunchDims global, LaunchDims local, std::span<const KernelArg> args,
              size_t shared) override {
    run_cpu_kernel(fn_, info_, pool_, global, local, args, shared);
  }

 private:
  llvm::orc::LLJIT& jit_;
  llvm::orc::JITDylib& jd_;
  KernelFn fn_;
  KernelInfo info_;
  ThreadPool& pool_;
  std::mutex& mu_;
};

class ClangJitImpl : public ClangJit {
 public:
  explicit ClangJitImpl(CompileCache cache) : ClangJit(std::move(cache)) {
    init_llvm_once();
    triple_ = llvm::sys::getProcessTriple();
    cpu_ = llvm::sys::getHostCPUName().str();
    features_ = host_features();
    auto jit = llvm::orc::LLJITBuilder().create();
    if (!jit)
      throw BackendError("cpu: cannot start the LLVM ORC JIT: " + error_text(jit.takeError()));
    jit_ = std::move(*jit);
  }

  std::string target() const override { return triple_ + " " + cpu_ + " " + features_; }
  std::string version() const override {
    // The flags are part of what a cached object depends on.
    return "clang " CLANG_VERSION_STRING ", LLVM " LLVM_VERSION_STRING ", -O2 vectorized";
  }

  std::unique_ptr<Program> load(const std::string& object, const KernelInfo& info,
                                ThreadPool& pool) override {
    std::lock_guard lock(mu_);
    auto jd = jit_->createJITDylib("kernel" + std::to_string(counter_++));
    if (!jd) throw BackendError("cpu: " + error_text(jd.takeError()));
    auto gen = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
        jit_->getDataLayout().getGlobalPrefix());
    if (!gen) throw BackendError("cpu: " + error_text(gen.takeError()));
    jd->addGenerator(std::move(*gen));
    if (llvm::Error e =
            jit_->addObjectFile(*jd, llvm::MemoryBuffer::getMemBufferCopy(object, info.name)))
      throw BackendError("cpu: cannot link kernel '" + info.name +
                         "': " + error_text(std::move(e)));
    auto sym = jit_->lookup(*jd, info.symbol);
    if (!sym) {
      std::string why = error_text(sym.takeError());
      llvm::consumeError(jit_->getExecutionSession().removeJITDylib(*jd));
      throw BackendError("cpu: kernel '" + info.name + "' does not link: " + why);
    }
    return std::make_unique<JitProgram>(*jit_, *jd, reinterpret_cast<KernelFn>(sym->getAddress()),
                                        info, pool, mu_);
  }

 protected:
  std::string compile_uncached(const std::string& source) override {
    std::lock_guard lock(mu_);  // one LLVMContext per compile; the diagnostics stream too
    std::string diagnostics;
    llvm::raw_string_ostream diag_os(diagnostics);
    llvm::IntrusiveRefCntPtr<clang::DiagnosticOptions> diag_opts = new clang::DiagnosticOptions();
    clang::CompilerInstance ci;
    ci.createDiagnostics(new clang::TextDiagnosticPrinter(diag_os, diag_opts.get()), true);
    // cc1 arguments: the driver's -O2 also turns on the loop and SLP vectorizers and
    // contracts a * b + c written as one expression; cc1 needs them said.
    std::vector<const char*> args = {
        "-triple",          triple_.c_str(),  "-target-cpu",      cpu_.c_str(), "-O2",
        "-vectorize-loops", "-vectorize-slp", "-ffp-contract=on", "-x",         "c",
        "-std=c11",         "kernel.c"};
    if (!clang::CompilerInvocation::CreateFromArgs(ci.getInvocation(), args, ci.getDiagnostics()))
      throw BackendError("cpu: bad Clang invocation: " + diag_os.str());
    ci.getInvocation().getPreprocessorOpts().addRemappedFile(
        "kernel.c", llvm::MemoryBuffer::getMemBufferCopy(source, "kernel.c").release());
    for (const std::string& f : split(features_)) ci.getTargetOpts().FeaturesAsWritten.push_back(f);
    llvm::LLVMContext ctx;
    clang::EmitLLVMOnlyAction action(&ctx);
    if (!ci.ExecuteAction(action))
      throw BackendError(compile_error_message("cpu: clang (in-process)", diag_os.str(), source));
    std::unique_ptr<llvm::Module> mod = action.takeModule();
    if (!mod) throw BackendError("cpu: Clang produced no module:\n" + diag_os.str());
    return emit_object(*mod);
  }

 private:
  static std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start < s.size()) {
      size_t comma = s.find(',', start);
      if (comma == std::string::npos) comma = s.size();
      out.push_back(s.substr(start, comma - start));
      start = comma + 1;
    }
    return out;
  }

  std::string emit_object(llvm::Module& mod) {
    std::string err;
    const llvm::Target* target = llvm::TargetRegistry::lookupTarget(triple_, err);
    if (!target) throw BackendError("cpu: no LLVM target for " + triple_ + ": " + err);
    std::unique_ptr<llvm::TargetMachine> tm(
        target->createTargetMachine(triple_, cpu_, features_, llvm::TargetOptions(),
                                    llvm::Reloc::PIC_, llvm::None, llvm::CodeGenOpt::Aggressive));
    mod.setDataLayout(tm->createDataLayout());
    llvm::SmallVector<char, 0> obj;
    llvm::raw_svector_ostream os(obj);
    llvm::legacy::PassManager pm;
    if (tm->addPassesToEmitFile(pm, os, nullptr, llvm::CGFT_ObjectFile))
      throw BackendError("cpu: LLVM cannot emit an object file for " + triple_);
    pm.run(mod);
    return std::string(obj.data(), obj.size());
  }

  std::string triple_, cpu_, features_;
  std::unique_ptr<llvm::orc::LLJIT> jit_;
  std::mutex mu_;
  std::atomic<uint64_t> counter_{0};
};

}  // namespace

bool cpu_has_jit() { return true; }

std::unique_ptr<ClangJit> make_clang_jit(CompileCache cache) {
  return std::make_unique<ClangJitImpl>(std::move(cache));
}

}  // namespace kitten
