#include "backends/emu/emu_device.h"

#include "backends/emu/emulator.h"
#include "backends/emu/program.h"
#include "backends/host.h"

namespace kitten {

namespace {

// The emulator has nothing to compile: the binary is the printed program, never cached.
class EmuCompiler : public Compiler {
 public:
  EmuCompiler() : Compiler(CompileCache("")) {}
  std::string target() const override { return "emu"; }
  std::string version() const override { return "kitten emu 1"; }

 protected:
  std::string compile_uncached(const std::string& source) override { return source; }
};

class EmuProgram : public Program {
 public:
  explicit EmuProgram(std::shared_ptr<const EmuKernel> k) : k_(std::move(k)) {}
  void launch(LaunchDims global, LaunchDims local, std::span<const KernelArg> args,
              size_t shared) override {
    if (shared != 0)
      throw BackendError("emu: dynamic shared memory is not supported; use DEFINE_LOCAL");
    emu_run(*k_, global, local, args);
  }

 private:
  std::shared_ptr<const EmuKernel> k_;
};

class EmuDevice : public HostDevice {
 public:
  explicit EmuDevice(Target target) {
    props_.name = "emu";
    props_.model = "emulator";
    props_.target = target;
    props_.compiler = "none: the emulator interprets the linear program with the " + target.arch +
                      " profile's limits";
  }
  const DeviceProps& props() const override { return props_; }
  Compiler& compiler() override { return compiler_; }
  RenderedKernel render(const LinearProgram& p) override {
    RenderedKernel r;
    auto k = emu_compile(p, props_.target);
    r.info.name = p.name;
    r.info.linear = std::make_shared<LinearProgram>(p);
    emu_launch_dims(*k, r.info.global, r.info.local);
    r.info.global_extent = k->grid_extent;
    r.info.vars = k->vars;
    r.info.num_params = k->num_params;
    r.info.buffer_params = k->info.buffer_params;
    r.info.unused_params = k->info.unused_params;
    r.info.tensor_maps = k->info.tensor_maps;
    r.source = print_program(p);
    return r;
  }
  std::unique_ptr<Program> load(const std::string&, const KernelInfo& info) override {
    if (!info.linear)
      throw BackendError("emu: kernel '" + info.name + "' was not rendered for the emulator");
    return std::make_unique<EmuProgram>(emu_compile(*info.linear, props_.target));
  }

 private:
  DeviceProps props_;
  EmuCompiler compiler_;
};

}  // namespace

std::unique_ptr<Device> make_emu_device(Target target) {
  return std::make_unique<EmuDevice>(std::move(target));
}

}  // namespace kitten
