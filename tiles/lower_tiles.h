// The tile -> thread lowering (docs/dsl.md): the pass that rewrites a tile kernel's tile
// ops into per-thread UOps (lane fragments from the MMA layout expressions, ldmatrix,
// cp.async with the widest width the view's alignment proves, MMA, gated global stores),
// registered into dsl/'s lowering pipeline before `schedule`.
#pragma once

#include "dsl/target.h"
#include "dsl/uop.h"

namespace kitten::tiles {

// Registers the pass (tile_ops() calls it once).
void register_tile_passes();
// The pass itself: a graph without tile ops comes back unchanged.
UOp lower_tiles(const UOp& sink, const Target& target);

}  // namespace kitten::tiles
