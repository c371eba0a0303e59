// The hardware-command-queue (HCQ) interface every backend implements: a Device with its
// properties, an Allocator, a Compiler (source -> binary, cached on disk), Programs that
// launch, Queues of commands (exec, copy, signal, wait, timestamp) submitted in batches,
// Signals (timeline values the host and the device wait on), and Graphs (a recorded
// sequence of launches replayed with one submission, with buffers rebound).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "backends/compile_cache.h"
#include "dsl/linearize.h"
#include "dsl/lower.h"
#include "dsl/schedule.h"
#include "dsl/target.h"

namespace kitten {

// A backend failure: the message says what, where (kernel, source line) and what to do.
struct BackendError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct DeviceProps {
  std::string name;      // "cpu"
  std::string compiler;  // how kernels are compiled here, for `kitten devices`
  // The hardware ("NVIDIA H100 80GB HBM3", the cpu's model name, "emulator") and its
  // driver's version where it has one ("CUDA driver 12080"): the tuning database's files
  // are per model.
  std::string model, driver;
  Target target;  // what the device offers kernels (dsl/target.h)
};

struct Buffer {
  void* ptr = nullptr;  // device address (on cpu, host memory)
  size_t bytes = 0;
  friend bool operator==(const Buffer&, const Buffer&) = default;
};

// A TMA tensor map: a tensor of `dtype` in `buffer` with up to 5 dimensions (innermost
// first), the byte strides of dimensions 1 and up, the box one TMA copy moves and the
// swizzle of the shared tiles it fills. Made by make_tensor_map, which checks what the
// hardware needs; cuda encodes it (cuTensorMapEncodeTiled) when a launch passes it.
struct TensorMap {
  Buffer buffer;
  DType dtype;
  std::vector<int64_t> dims, strides, box;
  Swizzle swizzle = Swizzle::None;
  friend bool operator==(const TensorMap&, const TensorMap&) = default;
};
// Throws BackendError saying what the hardware refuses: a rank outside 1..5, strides that
// are not multiples of 16 bytes (a row of 4095 bfloat16 is 8190 bytes: such a tensor
// takes another path), a start not 16-byte aligned, a box entry outside 1..256 or whose
// inner extent is not a multiple of 16 bytes or (swizzled) not the swizzle's width, a tensor
// larger than its buffer.
TensorMap make_tensor_map(Buffer buffer, DType dtype, std::vector<int64_t> dims,
                          std::vector<int64_t> strides, std::vector<int64_t> box,
                          Swizzle swizzle = Swizzle::None);

// A kernel argument, in parameter-slot order then variables by name: a buffer, an integer
// or a tensor map.
using KernelArg = std::variant<Buffer, int64_t, TensorMap>;
// Replaces a buffer of `rebind` (old, new) in an argument (a tensor map's too).
void rebind_arg(KernelArg& a, std::span<const std::pair<Buffer, Buffer>> rebind);

struct LaunchDims {
  int64_t x = 1, y = 1, z = 1;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual Buffer alloc(size_t bytes) = 0;
  virtual void free(Buffer b) = 0;
  virtual void copy_in(Buffer dst, const void* src, size_t bytes) = 0;
  virtual void copy_out(void* dst, Buffer src, size_t bytes) = 0;
};

class Compiler {
 public:
  explicit Compiler(CompileCache cache) : cache_(std::move(cache)) {}
  virtual ~Compiler() = default;
  virtual std::string target() const = 0;
  virtual std::string version() const = 0;
  // The binary for `source`, from the cache when an intact entry exists.
  std::string compile(const std::string& source);
  const CompileCache& cache() const { return cache_; }

 protected:
  virtual std::string compile_uncached(const std::string& source) = 0;

 private:
  CompileCache cache_;
};

class Program {
 public:
  virtual ~Program() = default;
  virtual void launch(LaunchDims global, LaunchDims local, std::span<const KernelArg> args,
                      size_t shared_bytes = 0) = 0;
  // What the compiled code uses, where the device reports it ("" elsewhere): on cuda the
  // registers per thread and the local memory (spills) per thread.
  virtual std::string resources() const { return ""; }
};

class Signal {
 public:
  virtual ~Signal() = default;
  virtual uint64_t value() const = 0;
  virtual void set(uint64_t v) = 0;   // from the host
  virtual void wait(uint64_t v) = 0;  // on the host, until value() >= v
};

// Where a timestamp command writes the time it ran, in nanoseconds.
struct Timestamp {
  uint64_t ns = 0;
};

class Queue {
 public:
  virtual ~Queue() = default;
  // The arguments are read before exec returns (the caller may reuse them).
  virtual void exec(Program& p, LaunchDims global, LaunchDims local,
                    std::span<const KernelArg> args, size_t shared_bytes = 0) = 0;
  void exec(Program& p, LaunchDims global, LaunchDims local, std::initializer_list<KernelArg> args,
            size_t shared_bytes = 0) {
    exec(p, global, local, std::span<const KernelArg>(args.begin(), args.size()), shared_bytes);
  }
  virtual void copy(Buffer dst, Buffer src, size_t bytes) = 0;
  virtual void signal(Signal& s, uint64_t v) = 0;  // set s to v when the queue gets here
  virtual void wait(Signal& s, uint64_t v) = 0;    // go on only once s >= v
  virtual void timestamp(Timestamp& t) = 0;
  virtual void submit() = 0;  // hands the commands since the last submit to the device
  // Throws (once) the failure of a command that has run, where the device records one
  // rather than raising it at submit (host queues run commands on a worker thread).
  virtual void raise_failure() {}
};

// A recorded sequence of launches; replay() queues all of them as one command, with
// each buffer of `rebind` (old, new) replaced.
class Graph {
 public:
  virtual ~Graph() = default;
  virtual void record(Program& p, LaunchDims global, LaunchDims local,
                      std::vector<KernelArg> args) = 0;
  // Replaces the grid and arguments launch i (in record order) was recorded with, for the
  // replays that follow (a variable's new value).
  virtual void update(size_t launch, LaunchDims global, std::vector<KernelArg> args) = 0;
  virtual void replay(Queue& q, std::span<const std::pair<Buffer, Buffer>> rebind = {}) = 0;
};

// What the renderer knows about a kernel that a launch needs.
struct KernelInfo {
  std::string name;                 // for messages
  std::string symbol;               // the function's name in the binary
  int num_params = 0;               // buffer and integer parameters, by slot
  std::vector<bool> buffer_params;  // per slot: a buffer (else an integer)
  std::vector<bool> unused_params;  // per slot: no PARAM reads it (either kind is taken)
  std::vector<std::string> vars;    // DEFINE_VARs, by name, passed after the parameters
  // The slots that take a tensor map (TENSOR_MAP), with the element, box and swizzle the
  // kernel was built for: a launch's map must agree (check_tensor_map).
  struct MapSlot {
    DType dtype;
    std::vector<int64_t> box;
    Swizzle swizzle = Swizzle::None;
    bool stored = false;  // a TMA_STORE writes through it
  };
  std::map<int, MapSlot> tensor_maps;
  LaunchDims global, local;
  // Grid extents that depend on variables (a block per 64 query rows of a run-time Nq),
  // null where the extent is the constant in `global`: see launch_grid.
  std::array<UOp, 3> global_extent;
  size_t dynamic_shared = 0;  // bytes of dynamic shared memory per block
  // For devices that interpret rather than compile (emu): the program itself.
  std::shared_ptr<const LinearProgram> linear;
};

struct RenderedKernel {
  KernelInfo info;
  std::string source;
};

// The argument at `slot` for a buffer that holds a tensor of `dims` (innermost first) with
// the byte strides of its outer dimensions: a tensor map with the box and swizzle the kernel
// names where it takes one at that slot (KernelInfo::tensor_maps), else the buffer.
KernelArg tensor_arg(const KernelInfo& info, int slot, Buffer buffer, std::vector<int64_t> dims,
                     std::vector<int64_t> strides);

class Device {
 public:
  virtual ~Device() = default;
  virtual const DeviceProps& props() const = 0;
  virtual Allocator& allocator() = 0;
  virtual Compiler& compiler() = 0;
  virtual RenderedKernel render(const LinearProgram& p) = 0;
  virtual std::unique_ptr<Program> load(const std::string& binary, const KernelInfo& info) = 0;
  virtual std::unique_ptr<Queue> new_queue() = 0;
  virtual std::unique_ptr<Signal> new_signal(uint64_t initial = 0) = 0;
  virtual std::unique_ptr<Graph> new_graph() = 0;
};

// The grid a launch with these arguments needs: `fixed` where `extent` is null, else the
// extent evaluated with the arguments' variables (passed after the num_params parameters,
// in the order of `vars`). Throws BackendError when an extent reads something else or
// evaluates below 1.
LaunchDims resolve_grid(LaunchDims fixed, const std::array<UOp, 3>& extent,
                        const std::vector<std::string>& vars, int num_params,
                        std::span<const KernelArg> args);
inline LaunchDims launch_grid(const KernelInfo& k, std::span<const KernelArg> args) {
  return resolve_grid(k.global, k.global_extent, k.vars, k.num_params, args);
}
// Records a SPECIAL's extent in the launch shape a renderer builds: a constant into grid or
// block, a block index's expression of variables into grid_extent (grid 0 there). False for
// a thread index whose extent is not a constant (a block's shape is fixed at compile time).
bool place_special(const UOp& special, LaunchDims& grid, LaunchDims& block,
                   std::array<UOp, 3>& grid_extent);

// Checks argument `slot` of a launch against what the kernel takes there (a buffer, an
// integer, or a tensor map of its element, box and swizzle); throws BackendError naming the
// kernel, the argument and both.
void check_arg(const KernelInfo& k, size_t slot, const KernelArg& a, const std::string& device);

// A launch's arguments: the parameters by slot, then the value of each of the kernel's
// variables by name (BackendError naming a variable that `vars` lacks).
std::vector<KernelArg> bind_args(const KernelInfo& k, std::vector<KernelArg> params,
                                 const std::map<std::string, int64_t>& vars);

// One launch of a lowered kernel: linearized, rendered, compiled and loaded.
struct KernelLaunch {
  LinearProgram linear;
  RenderedKernel rendered;
  std::unique_ptr<Program> program;
  void enqueue(Queue& q, std::span<const KernelArg> args) const;
  void record(Graph& g, std::span<const KernelArg> args) const;
};

// A kernel graph compiled for a device: its first launch, and the launches that follow it
// where the schedule cut or split the kernel into several. Each takes the caller's
// arguments followed by the temporary buffers, which the kernel allocates once and frees
// with itself (so one CompiledKernel with temporaries runs one launch sequence at a time).
struct CompiledKernel : KernelLaunch {
  CompiledKernel() = default;
  CompiledKernel(CompiledKernel&& o) noexcept;
  CompiledKernel& operator=(CompiledKernel&& o) noexcept;
  ~CompiledKernel();
  std::vector<KernelLaunch> then;
  std::vector<Buffer> temps;           // parameter slots temps_at, temps_at + 1, ...
  std::vector<TempBuffer> temp_specs;  // what each holds (a tensor, for parts taking maps)
  std::vector<MapParam> maps;          // the caller's buffers some part takes as maps
  size_t temps_at = 0;
  // Whether the one kernel is launched with the caller's arguments as they are.
  bool direct() const { return temps.empty() && then.empty() && maps.empty(); }
  Allocator* temps_from = nullptr;
  // Launches every part in order with its own dims on the device's own stream of
  // execution (the call returns when the kernel has run).
  void run(std::span<const KernelArg> args);
  // Every part in order on a queue, or into a graph.
  void enqueue(Queue& q, std::span<const KernelArg> args) const;
  void record(Graph& g, std::span<const KernelArg> args) const;
  // What `part` (this kernel, or one of `then`) is launched with: the caller's arguments
  // with the temporaries inserted, each a tensor map where the part takes one there, a
  // caller's tensor map given as its buffer where the part takes a buffer there, and a
  // caller's buffer given as the map of `maps` where the part takes a map there.
  std::vector<KernelArg> part_args(const KernelLaunch& part, std::span<const KernelArg> args) const;
};
// The argument at `slot` for every part of a compiled kernel: a tensor map where one of
// its parts takes a map there (with that part's box and swizzle), else the buffer.
KernelArg tensor_arg(const CompiledKernel& k, int slot, Buffer buffer, std::vector<int64_t> dims,
                     std::vector<int64_t> strides);
// Kernels already lowered (lower_kernels), linearized, rendered, compiled and loaded.
CompiledKernel compile_lowered(Device& d, const LoweredKernels& parts);
// Lowered for the device's target with `schedule` (ScheduleError before anything compiles
// when it names an axis the kernel lacks), linearized, rendered, compiled, loaded.
CompiledKernel compile_kernel(Device& d, const UOp& sink, const Schedule& schedule = {});

// A compile failure for the user: the compiler's log, then the source lines around the
// first error it names ("file:LINE:COL: error" or "file(LINE): error").
std::string compile_error_message(const std::string& compiler, const std::string& log,
                                  const std::string& source);

}  // namespace kitten
