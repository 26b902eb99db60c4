// block_constrained.hpp -- Metropolis pair moves that keep every block sum fixed (plain arrays).
//
// Inverse Monte Carlo RG (Ron, Swendsen and Brandt, PRL 89, 275701): sample the fine theory's
// conditional p(phi | R_b(phi) = Phi) given the block field Phi. A move picks a site x of a block of
// b^d sites, a partner y != x of the same block and d = step (2u - 1), and proposes
//     phi_x -> phi_x + d,   phi_y -> phi_y - d              (the block sum is unchanged),
// accepted with min(1, exp(-Delta S)) for the homogeneous action
//     S = - kappa sum_{x,mu} phi_x phi_{x+mu} + sum_x (a phi_x^2 + b phi_x^4 + r phi_x).
// The proposal density of (x, y, d) equals that of the reverse move (x, y, -d) from the new state,
// so every move satisfies detailed balance with respect to the conditional; one sweep visits every
// site of every block once as the x of a move, in block order.
//
// Parallel structure: blocks are coloured by the parity of the sum of their global block
// coordinates. Blocks of one colour share no link when every direction has an even number of
// blocks (or exactly one block, which then is one rank's whole extent), so one colour is updated
// with fixed ghosts and the result does not depend on the order of blocks or on the process grid.
// The caller refreshes the ghosts between colours.
//
// Exports:
//   ConstrainedView           the padded local array (natural order, one ghost layer per side) and
//                             the geometry: local extents, global offset and extents, b, couplings
//   block_constrained_colour(v, colour, key, sweep, step) -> accepted moves
//                             one pass over the local blocks of one colour
// Random numbers: one Philox block per move at counter (global index of x lo, hi, sweep lo, sweep
// hi): word 0 chooses the partner, word 1 the displacement, words 2 and 3 the acceptance uniform.
#pragma once
#include <cstdint>
#include <stdexcept>

#include "kernels/fast_exp.hpp"
#include "rng/philox.hpp"

namespace qftml {

constexpr int kMaxConstrainedDim = 4;

struct ConstrainedView {
  int ndim = 0;
  double* phi = nullptr;                   // padded array, extents local[mu] + 2, row major
  int64_t local[kMaxConstrainedDim] = {};  // interior extents
  int64_t offset[kMaxConstrainedDim] = {}; // global coordinate of interior site 0
  int64_t global[kMaxConstrainedDim] = {}; // global extents
  int b = 2;
  double kappa = 0, a = 0, bq = 0, r = 0;  // link coupling, phi^2, phi^4, phi coefficients
};

namespace detail {

struct PaddedGeometry {
  int64_t stride[kMaxConstrainedDim] = {};  // strides of the padded array
  bool wrap[kMaxConstrainedDim] = {};       // the whole direction is local: periodic inside
};

inline PaddedGeometry padded_geometry(const ConstrainedView& v) {
  PaddedGeometry g;
  int64_t s = 1;
  for (int mu = v.ndim - 1; mu >= 0; --mu) {
    g.stride[mu] = s;
    s *= v.local[mu] + 2;
    g.wrap[mu] = v.local[mu] == v.global[mu];
  }
  return g;
}

// Sum over the 2d neighbours of interior site c (padded index p): ghosts, or the periodic image
// inside the local array when the direction is not split.
inline double neighbour_sum(const ConstrainedView& v, const PaddedGeometry& g, const int64_t* c, int64_t p) {
  double J = 0.0;
  for (int mu = 0; mu < v.ndim; ++mu) {
    const int64_t s = g.stride[mu], n = v.local[mu];
    const int64_t up = (g.wrap[mu] && c[mu] == n - 1) ? p - (n - 1) * s : p + s;
    const int64_t dn = (g.wrap[mu] && c[mu] == 0) ? p + (n - 1) * s : p - s;
    J += v.phi[up];
    J += v.phi[dn];
  }
  return J;
}

inline double site_dS(const ConstrainedView& v, double old, double trial, double J) {
  const double o2 = old * old, t2 = trial * trial;
  return (trial - old) * (v.r - v.kappa * J) + v.a * (t2 - o2) + v.bq * (t2 * t2 - o2 * o2);
}

}  // namespace detail

inline int64_t block_constrained_colour(const ConstrainedView& v, int colour, PhiloxKey key, uint64_t sweep,
                                        double step) {
  if (v.ndim < 1 || v.ndim > kMaxConstrainedDim) throw std::invalid_argument("block_constrained: ndim out of range");
  const detail::PaddedGeometry g = detail::padded_geometry(v);
  const int d = v.ndim, b = v.b;
  int64_t nblk[kMaxConstrainedDim], total_blocks = 1;
  for (int mu = 0; mu < d; ++mu) {
    if (v.local[mu] % b || v.offset[mu] % b) throw std::invalid_argument("block_constrained: blocks cross ranks");
    nblk[mu] = v.local[mu] / b;
    total_blocks *= nblk[mu];
  }
  int n_in_block = 1;
  for (int mu = 0; mu < d; ++mu) n_in_block *= b;
  const uint32_t s_lo = static_cast<uint32_t>(sweep), s_hi = static_cast<uint32_t>(sweep >> 32);
  int64_t accepted = 0;
  int64_t cx[kMaxConstrainedDim], cy[kMaxConstrainedDim];
  for (int64_t B = 0; B < total_blocks; ++B) {
    int64_t bc[kMaxConstrainedDim];
    int64_t rem = B, parity = 0;
    for (int mu = d - 1; mu >= 0; --mu) {
      bc[mu] = rem % nblk[mu];
      rem /= nblk[mu];
      parity += v.offset[mu] / b + bc[mu];
    }
    if ((parity & 1) != colour) continue;
    for (int j = 0; j < n_in_block; ++j) {
      // site x: sub-position j of the block (row major), its padded index and global index
      int64_t px = 0, gx = 0, rj = j;
      for (int mu = d - 1; mu >= 0; --mu) {
        cx[mu] = bc[mu] * b + rj % b;
        rj /= b;
      }
      for (int mu = 0; mu < d; ++mu) {
        px += (cx[mu] + 1) * g.stride[mu];
        gx = gx * v.global[mu] + v.offset[mu] + cx[mu];
      }
      uint32_t c0 = static_cast<uint32_t>(gx), c1 = static_cast<uint32_t>(static_cast<uint64_t>(gx) >> 32);
      uint32_t c2 = s_lo, c3 = s_hi;
      philox4x32_10(c0, c1, c2, c3, key.k0, key.k1);
      const int pick = static_cast<int>(c0 % static_cast<uint32_t>(n_in_block - 1));
      const int k = pick < j ? pick : pick + 1;  // partner y != x, uniform over the block
      int64_t py = 0, rk = k;
      for (int mu = d - 1; mu >= 0; --mu) {
        cy[mu] = bc[mu] * b + rk % b;
        rk /= b;
      }
      for (int mu = 0; mu < d; ++mu) py += (cy[mu] + 1) * g.stride[mu];
      const double delta = step * (2.0 * uniform32_open(c1) - 1.0);
      const double u_acc = uniform52(c2, c3);
      // x first, then y with x already moved: links between x and y are counted exactly
      const double ox = v.phi[px], oy = v.phi[py];
      const double tx = ox + delta, ty = oy - delta;
      const double dS1 = detail::site_dS(v, ox, tx, detail::neighbour_sum(v, g, cx, px));
      v.phi[px] = tx;
      const double dS2 = detail::site_dS(v, oy, ty, detail::neighbour_sum(v, g, cy, py));
      const double dS = dS1 + dS2;
      const bool accept = dS <= 0.0 || u_acc < exp_clamped(-dS);
      if (accept) {
        v.phi[py] = ty;
        ++accepted;
      } else {
        v.phi[px] = ox;
      }
    }
  }
  return accepted;
}

}  // namespace qftml
