// The tile layer: tile dtypes and tile ops, registered into dsl/'s open dtype set and op
// registry, and the C++ surface a kernel author writes them with (docs/dsl.md).
//
// A kernel is written for one thread block. A register tile belongs to the block and is
// split over its warps, which the kernel arranges as a grid (2x4 warps); the tile's dtype
// records the grid and whether its rows and its columns are divided over it or repeated
// in every warp of a grid row or column, so each lowering step knows which warp holds
// which rows. Shared tiles are row- or column-major, swizzled by one of dsl/swizzle.h's
// modes, and may be a ring of stages for a pipeline. Global views are strided 2-D windows
// of a buffer with run-time extents and strides and a known base alignment.
//
// Every builder checks shapes and dtypes when the node is made and throws TileError
// naming the op and both shapes; the ops' specs check the same again in the verifier.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dsl/swizzle.h"
#include "dsl/target.h"
#include "dsl/uop.h"

namespace kitten::tiles {

struct TileError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

enum class Memory : uint8_t { Register, Shared };
enum class Layout : uint8_t { Row, Col };
// The unit a block's warps are grouped in for one register tile: a warp (mma.sync), or a
// warpgroup of four consecutive warps (wgmma; the Hopper issue lowers it).
enum class Unit : uint8_t { Warp, Warpgroup };

// Which grid dimension divides a tile dimension: the grid's rows, its columns, or none
// (every unit along the grid holds the whole dimension).
enum class Split : uint8_t { None, GridRows, GridCols };

// Which threads hold a register tile: the block's units as a grid of rows x cols; the
// tile's rows are divided over one grid dimension (or none), and its columns likewise
// (a B operand stored N x K has its rows divided over the grid's columns).
struct Owner {
  Unit unit = Unit::Warp;
  int rows = 1, cols = 1;
  Split row_split = Split::GridRows, col_split = Split::GridCols;
  int parts(Split s) const { return s == Split::GridRows ? rows : s == Split::GridCols ? cols : 1; }
  friend bool operator==(const Owner&, const Owner&) = default;
};

// A register vector of a tile: one value per row (a row reduction's result, what a row
// broadcast takes) or one per column.
enum class Vector : uint8_t { None, PerRow, PerCol };

// The payload of a tile dtype (register or shared) and of a global view's dtype.
struct TileType : DTypeExtension {
  Memory memory = Memory::Register;
  Vector vector = Vector::None;  // register vectors: rows x 1 (PerRow) or 1 x cols (PerCol)
  DType elem;
  int rows = 0, cols = 0;
  Layout layout = Layout::Row;
  Owner owner;                      // register tiles
  Swizzle swizzle = Swizzle::None;  // shared tiles
  int stages = 1;                   // shared tiles: a ring of this many

  // Register tiles: the part one unit holds, and how many 16x16 base tiles it has.
  int unit_rows() const { return rows / owner.parts(owner.row_split); }
  int unit_cols() const { return cols / owner.parts(owner.col_split); }
  // The rows one warp holds of its unit's part: all of them, or in a warpgroup (whose part
  // is one 64-row strip, the M of wgmma) the 16 of warp w%4 starting at row 16*(w%4).
  int warp_rows() const { return owner.unit == Unit::Warpgroup ? unit_rows() / 4 : unit_rows(); }
  // Elements per lane: a base tile's 8; a vector's 2 rows per 16 (rows g and g+8 of the
  // fragment) or 4 columns per 16.
  int per_thread() const {
    if (vector == Vector::PerRow) return warp_rows() / 16 * 2;
    if (vector == Vector::PerCol) return unit_cols() / 16 * 4;
    return warp_rows() * unit_cols() / 32;
  }
  std::string shape() const;  // "128x32"
};

struct ViewType : DTypeExtension {
  DType elem;
};

// The tile dtypes, interned by canonical name: rt<float32,128,128,row,w2x4>,
// rt<bfloat16,128,32,row,w2x4:r-> (rows divided over the grid's rows, columns whole, so
// repeated across the grid's columns; "c" names the grid's columns),
// st<bfloat16,128,32,row,128B,x3> (a ring of three), gv<bfloat16>. Throws TileError on a
// shape the lowering cannot hold (a warp's part not whole 16x16 tiles, a swizzled row
// that is not a whole number of the mode's lines).
DType register_tile(DType elem, int rows, int cols, Layout layout, Owner owner);
DType shared_tile(DType elem, int rows, int cols, Layout layout, Swizzle swizzle, int stages = 1);
// The vector of a row-layout register tile's rows (rv<float32,128,w2x2:r->) or columns
// (cv<...>): held by every warp that holds those rows (columns), every lane of the quad
// (column group) that holds them.
DType row_vector(DType elem, int rows, Owner owner);
DType col_vector(DType elem, int cols, Owner owner);
// The vector type a row or column reduction of `tile` gives (TileError where the rows or
// columns are split over warps: a reduction stays inside a warp).
DType row_vector_of(DType tile);
DType col_vector_of(DType tile);
DType view_dtype(DType elem);
const TileType* tile_type(DType d);  // nullptr for other dtypes
// The TENSOR_MAP arg (slot, swizzle, box innermost first) of a map filling shared tile t:
// one panel, the swizzle's width (or the whole line) by the tile's lines, and one element of
// each of `outer` outer dimensions (a head, a batch).
std::vector<int64_t> tma_box_arg(int64_t slot, const TileType& t, int outer = 0);
const ViewType* view_type(DType d);

// The tile ops' ids (registered on first use).
struct TileOps {
  Op view, alloc, slot, fill, copy, load, store, mma, map, reduce, bcast, mask, tma, tma_store,
      start, await;
};
const TileOps& tile_ops();

// Whether a target runs the Hopper verbs and wgmma products: wgmma, TMA, mbarriers and
// setmaxnreg.
bool hopper_target(const Target& t);

// ---- the author's surface ------------------------------------------------------------

// A tile-valued node with its type at hand.
struct Tile {
  UOp node;
  const TileType& type() const { return *tile_type(node.dtype()); }
};

// A strided 2-D view of a global buffer: element (r, c) at offset + r*row_stride +
// c*col_stride.
struct View {
  UOp node;
  UOp rows() const { return node.src(1); }
  UOp cols() const { return node.src(2); }
};

Tile fill(DType tile, double value);
Tile load(const Tile& shared, DType reg_tile);  // shared -> registers
Tile cast(const Tile& t, DType elem);
Tile map(Op op, const Tile& a);                     // unary ALU op per element
Tile map(Op op, const Tile& a, const Tile& b);      // binary, same shape and owner
Tile map(Op op, const Tile& a, const UOp& scalar);  // binary with a scalar of a's element
// Comparisons (CMPLT, CMPEQ, CMPNE) give bool tiles; where picks a[i] where cond[i], else b.
Tile where(const Tile& cond, const Tile& a, const UOp& b);
Tile exp2(const Tile& a);  // float32: EXP2_FTZ (subnormals are 0), one MUFU.EX2 on a GPU
Tile exp(const Tile& a);   // exp2(a * log2(e))
Tile log2(const Tile& a);
Tile log(const Tile& a);  // log2(a) * ln(2)
// Row and column reductions (float32 tiles; the rows, or columns, whole in each warp):
// within a lane, then across the lanes that share the row by shuffles.
Tile row_max(const Tile& t);
Tile row_sum(const Tile& t);
Tile col_max(const Tile& t);
Tile col_sum(const Tile& t);
// t[r][c] op v[r] (row broadcasts) and t[r][c] op v[c] (column broadcasts); op is ADD,
// SUB, MUL, FDIV, MAX or MIN.
Tile row_broadcast(Op op, const Tile& t, const Tile& v);
Tile col_broadcast(Op op, const Tile& t, const Tile& v);
inline Tile sub_row(const Tile& t, const Tile& v) { return row_broadcast(Op::SUB, t, v); }
inline Tile mul_row(const Tile& t, const Tile& v) { return row_broadcast(Op::MUL, t, v); }
inline Tile div_row(const Tile& t, const Tile& v) { return row_broadcast(Op::FDIV, t, v); }
inline Tile add_row(const Tile& t, const Tile& v) { return row_broadcast(Op::ADD, t, v); }
// Keeps t[r][c] where keep(r, c) is true, else `fill`: keep is any bool expression of the
// tile's row and column (0-based) and of run-time values (causal masks, key lengths).
Tile mask(const Tile& t, const std::function<UOp(const UOp& row, const UOp& col)>& keep,
          double fill);
// An f32 accumulator as the A operand of a following product, in registers (P in P@V):
// its elements are already where the A fragment wants them; its columns must be whole in
// each warp.
Tile to_operand(const Tile& acc, DType elem);
// The variables a mask's keep expression is written in (what `mask` passes its lambda).
UOp tile_row_var();
UOp tile_col_var();
// Matrix products accumulated into an f32 register tile: acc + a*b, a*b^T, a^T*b. a and b
// are bf16 or f16; for AB a is row-layout MxK, b col-layout KxN; for ABt b is row-layout
// NxK; for AtB a is col-layout KxM. Rows of a are split like acc's rows, columns of b like
// acc's columns, K is whole in every warp.
Tile mma_AB(const Tile& acc, const Tile& a, const Tile& b);
Tile mma_ABt(const Tile& acc, const Tile& a, const Tile& b);
Tile mma_AtB(const Tile& acc, const Tile& a, const Tile& b);
// The register tile type an operand of acc's product needs, for loading it from shared.
DType operand_tile(const Tile& acc, const Tile& shared, char which, const char* product);

class Kernel;

// A ring of mbarriers in shared memory, one per stage: the semaphores of a producer/consumer
// pipeline (Kernel::semaphores makes them; wait, arrive and tma_load use them).
struct Semaphores {
  UOp buf;    // the DEFINE_LOCAL of int64
  UOp ready;  // the barrier after their initialisation
  int stages = 0;
};

// A TMA tensor map parameter that fills shared tiles of one type (Kernel::tensor_map): the
// caller passes a map of the global matrix with the box and swizzle the kernel's info names.
struct TmaMap {
  UOp node;  // the TENSOR_MAP
  DType tile;
};

// How the caller describes a tensor that a TmaMap reads, to make the launch's tensor map:
// extents innermost first and the byte strides of the outer dimensions.
struct TensorLayout {
  std::vector<int64_t> dims, strides;
};

// A register tile carried across the iterations of kernel loops (an accumulator): its
// reads give the current value, and assigning records the update (STORE, END, AFTER).
class Carried {
 public:
  operator Tile() const { return get(); }
  Tile get() const;
  Carried& operator=(const Tile& v);
  const TileType& type() const { return *tile_type(state_->alloc.dtype()); }

 private:
  friend class Kernel;
  struct State {
    Kernel* kernel;
    UOp alloc, init;  // the TILE_ALLOC and the store of its initial value
    UOp value;        // what a read gives in the frame `frame`
    UOp outer;        // what it gave in the enclosing frame
    size_t frame = 0;
    bool assigned = false;  // assigned in `frame`
    UOp stored;             // the store of the last assignment
  };
  std::shared_ptr<State> state_;
};

// A ring of shared tiles for a pipeline: ring[s] is stage s's tile.
class Ring {
 public:
  Tile operator[](const UOp& stage) const;
  const TileType& type() const { return *tile_type(state_->alloc.dtype()); }

 private:
  friend class Kernel;
  struct State {
    UOp alloc, place;  // place: the allocation as the current code may use it
  };
  std::shared_ptr<State> state_;
};

// Builds one kernel for one thread block of warp_rows x warp_cols warps, or (Hopper) of
// rows x cols consumer warpgroups that own the register tiles and `producers` (0 or 1)
// producer warpgroups after them.
class Kernel {
 public:
  Kernel(std::string name, int warp_rows, int warp_cols);
  Kernel(std::string name, Unit unit, int rows, int cols, int producers = 0);

  Owner owner() const { return {unit_, warp_rows_, warp_cols_}; }
  int threads() const {
    return unit_ == Unit::Warpgroup ? (warp_rows_ * warp_cols_ + producers_) * 128
                                    : warp_rows_ * warp_cols_ * 32;
  }
  UOp thread_index() const;                     // threadIdx.x over threads()
  UOp block_index(int dim, const UOp& extent);  // blockIdx along x (0), y (1) or z (2)
  // Parameter `slot` seen as rows x cols elements, (r, c) at offset + r*row_stride +
  // c*col_stride (offset 0 when null); the buffer's start is base_align-byte aligned.
  View view(int64_t slot, DType elem, UOp rows, UOp cols, UOp row_stride, UOp col_stride,
            UOp offset = {}, int64_t base_align = 16);
  DType reg(DType elem, int rows, int cols, Layout layout = Layout::Row) const;
  Carried carried(const Tile& init);
  Ring ring(DType elem, int rows, int cols, Swizzle swizzle, int stages,
            Layout layout = Layout::Row);
  Tile shared(DType elem, int rows, int cols, Swizzle swizzle = Swizzle::None,
              Layout layout = Layout::Row);
  // The shared tile once the given copies have landed and a barrier has published them.
  Tile landed(const Tile& shared, const std::vector<UOp>& copies);

  // A kernel-time loop of n iterations; body runs once at build time with the index.
  void loop(const UOp& n, const std::function<void(const UOp& i)>& body);
  // A software pipeline over n iterations with `stages` slots in every ring: `load`
  // issues the copies of iteration i into slot s and returns their tokens; `body` computes
  // iteration i from slot s. The copies of iteration i+stages-1 fly while i computes.
  using Load = std::function<std::vector<UOp>(const UOp& i, const UOp& slot)>;
  using Body = std::function<void(const UOp& i, const UOp& slot)>;
  void pipeline(const UOp& n, int stages, const Load& load, const Body& body);
  // One pipeline whose iterations run as consecutive loops of n iterations each, each with
  // its own body (an interior without masks, then the masked edge): i counts on across
  // them and the copies run ahead from one into the next.
  struct Part {
    UOp n;
    Body body;
  };
  void pipeline(const std::vector<Part>& parts, int stages, const Load& load);

  UOp copy(const Tile& dst, const View& src, const UOp& row0, const UOp& col0);  // async
  // Makes an effect or a copy's token part of the current loop's body (what `pipeline`
  // does for its copies and waits; a hand-written loop says it itself).
  void issue(const UOp& effect_or_token) { record(effect_or_token); }
  void store(const View& dst, const UOp& row0, const UOp& col0, const Tile& value);

  // ---- Hopper: semaphores, TMA, warp specialisation, persistent loops ----------------
  // The synchronising verbs (wait, arrive, tma_load, when) run in the order written: each
  // comes AFTER every effect recorded before it in the current loop or block, and shared
  // tiles read after a verb are read after it (their rings are placed after it).
  //
  // `stages` mbarriers of `arrivals` arrivals per phase, initialised by thread 0 and
  // published by a block barrier before any use.
  Semaphores semaphores(int stages, int arrivals);
  // Waits until the phase of the given parity of sem[stage] has completed.
  UOp wait(const Semaphores& sem, const UOp& stage, const UOp& parity);  // returns the wait
  // Arrives on sem[stage] (each thread that runs it), first adding tx_bytes to the bytes its
  // phase waits for (the producer's expect before its TMA loads).
  void arrive(const Semaphores& sem, const UOp& stage, int64_t tx_bytes = 0);
  // A tensor map parameter at `slot` for filling shared tiles of type `tile` (one stage):
  // its box is the tile's panel (the swizzle's width, or the whole line, by its lines) and
  // one element of each of `outer` outer dimensions (a 4-D map of B, H, N, D: 2).
  TmaMap tensor_map(int64_t slot, DType tile, int outer = 0);
  // Starts TMA loads of the window at (row0, col0) of the map's matrix into a shared tile
  // (one per panel; zeros outside the matrix), completing on sem[stage]: the tile's bytes
  // are what an arrive must expect.
  UOp tma_load(const Tile& dst, const TmaMap& src, const UOp& row0, const UOp& col0,
               const Semaphores& sem, const UOp& stage, const std::vector<UOp>& outer = {});
  // Writes a register tile into a shared tile (stmatrix where the target has it).
  void store(const Tile& dst, const Tile& value);
  // Makes this thread's shared-memory writes so far visible to TMA and wgmma (a FENCE
  // proxy_async; the threads that wrote each run it).
  void fence_async();
  // Named barrier `id` (1..15) of `threads` threads, whole warps: sync waits there until
  // they have all come (by sync or signal); signal counts this thread's arrival and goes on.
  void sync(int id, int threads);
  void signal(int id, int threads);
  // Starts TMA stores of a shared tile to the window at (row0, col0) of the map's matrix
  // (nothing past its end), one per panel, closed into one bulk group; store_wait(n) waits
  // until at most n of this thread's groups still read shared memory.
  void tma_store(const TmaMap& dst, const Tile& src, const UOp& row0, const UOp& col0,
                 const std::vector<UOp>& outer = {});
  void store_wait(int n);
  // Starts an asynchronous product here (wgmma: a warpgroup's product is issued where
  // `start` stands and waited for where its result is first used, so that the work between
  // overlaps it); a product of warps is synchronous and needs no start.
  void start(const Tile& product);
  // A started product's result once at most `pending` products started after it are still
  // in flight (wgmma.wait_group pending), ordered after every effect recorded so far; a
  // product of warps is returned as it is.
  Tile await(const Tile& product, int pending);
  // A block that only the threads where cond holds run.
  void when(const UOp& cond, const std::function<void()>& body);
  // Warp specialisation: the producer warpgroup (the last) lowers its register budget to
  // producer_regs and runs `producer` on its first thread; the consumer warpgroups raise
  // theirs to consumer_regs (0: what the block's launch registers and the producer's
  // leave them, at most 240) and run `consumers`. Budgets the block's registers cannot
  // give are refused: setmaxnreg.inc would wait forever.
  void specialise(int producer_regs, int consumer_regs, const std::function<void()>& producer,
                  const std::function<void()>& consumers);
  // A persistent loop: `blocks` blocks take the tiles 0 .. tiles-1 in turn, block b the
  // tiles b, b + blocks, ...; body runs with the tile's index and the block's iteration.
  void persistent(const UOp& tiles, int64_t blocks,
                  const std::function<void(const UOp& tile, const UOp& iteration)>& body);

  UOp finish();  // the SINK

 private:
  friend class Carried;
  struct Frame {
    UOp range;  // the RANGE, or the IF of a block
    std::vector<UOp> effects;
  };
  void record(const UOp& effect) { frames_.back().effects.push_back(effect); }
  std::vector<UOp> recorded() const;  // the current frame's effects (void ones)
  UOp ordered(const UOp& verb);       // records a verb and places the rings after it
  void close_frame(const UOp& done);  // carried tiles read after a loop or block see its end
  std::string name_;
  Unit unit_ = Unit::Warp;
  int producers_ = 0;
  int warp_rows_, warp_cols_;
  int64_t next_reg_ = 0, next_shared_ = 0, next_axis_ = 0;
  std::vector<Frame> frames_;
  std::vector<std::shared_ptr<Carried::State>> carried_;
  std::vector<std::shared_ptr<Ring::State>> rings_;
};

}  // namespace kitten::tiles
