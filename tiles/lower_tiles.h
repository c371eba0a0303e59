// The tile -> thread lowering (docs/dsl.md), two passes registered into dsl/'s lowering
// pipeline before `schedule`: tile_warps turns a block's register tiles into the tiles its
// warps hold (each op that places elements gets the warp's origin), and lower_tiles turns
// warps' tiles into per-thread UOps (lane fragments from the MMA layout expressions,
// ldmatrix, cp.async with the widest width the view's alignment proves, MMA, shuffles,
// gated global stores).
#pragma once

#include "dsl/target.h"
#include "dsl/uop.h"

namespace kitten::tiles {

// Registers the pass (tile_ops() calls it once).
void register_tile_passes();
// The passes: a graph without tile ops comes back unchanged; lower_tiles refuses a block's
// tile (tile_warps runs first).
UOp tile_warps(const UOp& sink);
UOp lower_tiles(const UOp& sink, const Target& target);

}  // namespace kitten::tiles
