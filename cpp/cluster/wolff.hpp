// wolff.hpp -- embedded-Ising single-cluster (Wolff) update of the signs of phi, on one rank.
//
// One update at sweep s grows one cluster. It starts at the site floor(u V), u from Philox under
// rng_key(seed, cluster_coins) at counter (0, draw 1, s), and grows breadth first through the links
// (nearest-neighbour and extra, both directions) of each added site: a link to a site outside
// with w phi_x phi_y > 0 is bonded with P = 1 - exp(-2 w phi_x phi_y), each link tested once. The
// bond uniforms are the sequence of Philox blocks under rng_key(seed, cluster_bonds) at counters
// (block j, s), two uniforms per block. The cluster flips with probability
// min(1, exp(2 sum_C r phi)) (uniform: coins at (0, draw 2, s); r = 0: always).
// Exactly one cluster per update: growing clusters until they cover V sites (a common recipe)
// makes the number of steps depend on the path and biases the chain (tests/test_cluster.py saw
// <E> of the 4x4 Ising model off by 20 standard errors). The growth is sequential, so the update
// needs the whole lattice on one rank; Swendsen-Wang is the distributed cluster update.
//
// Exports:
//   Wolff(action, field, seed)   throws if the lattice is split over more than one rank
//   update(sweep)                one update; ghosts fresh on return
//   counters(), seconds(), bytes_per_site()   as SwendsenWang (seconds: all under bonds)
#pragma once
#include <cstdint>
#include <vector>

#include "action/action.hpp"
#include "cluster/swendsen_wang.hpp"
#include "lattice/field.hpp"

namespace qftml {

class Wolff {
 public:
  Wolff(const Action& action, Field& field, uint64_t seed);
  void update(uint64_t sweep);
  const ClusterCounters& counters() const { return counters_; }
  const ClusterSeconds& seconds() const { return seconds_; }
  void reset_counters() { counters_ = ClusterCounters{}; }
  void reset_timers() { seconds_ = ClusterSeconds{}; }
  double bytes_per_site() const;

 private:
  struct Term {   // one of the 2 n_links neighbours of a site
    int link;
    bool forward;  // the link (x, x + e_l) is stored at x; backward terms read it at the neighbour
  };
  int64_t grow(int64_t start, uint64_t sweep, double* field_sum);

  const Action& action_;
  Field& field_;
  uint64_t seed_;
  int n_terms_;
  int64_t volume_;
  bool homogeneous_, has_field_;
  std::vector<Term> terms_;
  std::vector<double> coup0_;              // homogeneous coupling per term
  std::vector<int32_t> neighbour_;         // volume x n_terms, natural order
  std::vector<double> w_, r_;              // inhomogeneous couplings, natural order (w: volume x n_links)
  std::vector<double> phi_;                // the field in natural order during an update
  std::vector<uint32_t> stamp_;            // stamp_[i] == cluster tag: i is in the current cluster
  std::vector<int32_t> queue_;             // the cluster being grown (breadth first)
  uint32_t tag_ = 0;
  ClusterCounters counters_;
  ClusterSeconds seconds_;
};

}  // namespace qftml
