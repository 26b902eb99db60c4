// bernoulli_draws.hpp -- binary units of the phi^4 networks: x_i = 1 with probability p_i, in one pass.
//
// Exports:
//   bernoulli_draw_rows(n, p, index0, step, key, out)
//       out[i] = (uniform52(w0, w1) < p[i]) ? 1 : 0, (w0..w3) the Philox block of the counter
//       (index0 + i [64 bits in words 0, 1], step, 0) under `key`: the same numbers as
//       qftml.engine.rng.uniform_range(seed, purpose, index0, n, c2=step) < p, without the array of
//       uniforms. AVX-512 builds draw 32 counters at a time (philox4x32_10_x8: the same words).
// Compiled into qftml_engine (cpp/kernels/bernoulli_draws.cpp: -O3 -march=native).
#pragma once
#include <cstdint>

#include "rng/philox.hpp"

namespace qftml {

void bernoulli_draw_rows(int64_t n, const double* p, uint64_t index0, uint32_t step, PhiloxKey key, double* out);

}  // namespace qftml
