// observables.hpp -- per-configuration measurements, reduced over ranks (DESIGN 1.2).
//
// Exports:
//   measure(field, action) -> Measurement   one allreduce of a small vector:
//     magnetisation M = sum phi, sum phi^2, sum phi^4, per link l the unweighted sum of
//     phi_x phi_{x+e_l} (sufficient statistics of homogeneous couplings), the action S of
//     `action` (its own couplings), and the zero-momentum slice sums along direction 0
//     (length L_0, for the time-slice correlator). Field ghosts must be fresh.
#pragma once
#include <vector>

#include "action/action.hpp"
#include "lattice/field.hpp"

namespace qftml {

struct Measurement {
  double magnetisation = 0, sum_phi2 = 0, sum_phi4 = 0, action = 0;
  std::vector<double> link_sums;   // one per link of the action
  std::vector<double> slice_sums;  // one per global time slice (direction 0)
};

Measurement measure(const Field& field, const Action& action);

}  // namespace qftml
