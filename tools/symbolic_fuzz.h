// A fuzzer for the simplifier: random integer expressions over bounded variables, parsed,
// simplified, rendered and re-parsed; every version must evaluate to the original's value
// for random and extreme assignments, the simplified bounds must contain each value, and
// each value must be a multiple of the simplified expression's known divisor. int32 and
// int64 expressions, with bit operators, nested where/min/max, symbolic divisors, and
// constants and ranges at the ends of the type.
#pragma once

#include <cstdint>
#include <string>

namespace kitten {

struct FuzzResult {
  int64_t checked = 0;    // expressions simplified and compared
  int64_t rejected = 0;   // generated expressions the parser refused (a divisor could be 0)
  int64_t undefined = 0;  // parsed, but overflowing (undefined) at every assignment tried
  std::string failure;    // empty when every expression passed; else how to reproduce
};

// Case i draws from a generator seeded with (seed, i), so a failure names its case.
FuzzResult fuzz_simplify(uint64_t seed, int64_t count);

}  // namespace kitten
