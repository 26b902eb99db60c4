// swendsen_wang.hpp -- embedded-Ising Swendsen-Wang update of the signs of phi (DESIGN 1.2b).
//
// One update at sweep s:
//   1. bonds: every link (x, x + e_l) of the action, nearest-neighbour and extra, bonded with
//      P = 1 - exp(-2 w phi_x phi_y) if w phi_x phi_y > 0 (bonds.hpp; Philox at (link, s))
//   2. local labelling: union-find over this block in natural order (union_find.hpp); each
//      connected piece gets the smallest global site index of its sites as its label
//   3. cross-rank merge (boundary_merge.hpp): pieces joined by bonds across block faces become one
//      cluster whose label is the smallest of their labels, the smallest global site index of the
//      whole cluster
//   4. flips: cluster C with label c flips with probability 1/2 min(1, exp(-Delta S)),
//      Delta S = -2 sum_{x in C} r_x phi_x (the only term of S that changes), from one uniform of
//      Philox under rng_key(seed, cluster_coins) at counter (c low 32 bits, c bits 32..47, s low,
//      s high). The cluster sums are fixed-point (reproducible_sum.hpp), so they are exact and
//      equal on every process grid; with r = 0 the probability is 1/2 (plain Swendsen-Wang).
// Every step depends only on global indices, the sweep and the field: the same configuration on
// any process grid and rank count.
//
// Exports:
//   SwendsenWang(action, field, seed)
//   update(sweep)        one update (collective); ghosts fresh on entry and on return
//   counters()           {updates, clusters, flipped clusters} of this rank since reset (a cluster
//                        is counted by the rank holding its smallest site)
//   seconds()            {bonds, labels, merge, flips} CPU seconds of this thread since reset (the
//                        machine may be shared; flips include the halo refresh)
//   thread_cpu_seconds() the clock of seconds()
//   bytes_per_site()     memory of the bonds, labels and per-cluster arrays / local volume
#pragma once
#include <time.h>

#include <array>
#include <cstdint>
#include <vector>

#include "action/action.hpp"
#include "cluster/bonds.hpp"
#include "cluster/boundary_merge.hpp"
#include "comms/reproducible_sum.hpp"
#include "lattice/field.hpp"

namespace qftml {

inline double thread_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

struct ClusterCounters {
  int64_t updates = 0, clusters = 0, flipped = 0, sites = 0;  // sites: in the clusters counted
};

struct ClusterSeconds {
  double bonds = 0, labels = 0, merge = 0, flips = 0;
};

class SwendsenWang {
 public:
  SwendsenWang(const Action& action, Field& field, uint64_t seed);
  void update(uint64_t sweep);
  const ClusterCounters& counters() const { return counters_; }
  const ClusterSeconds& seconds() const { return seconds_; }
  void reset_counters() { counters_ = ClusterCounters{}; }
  void reset_timers() { seconds_ = ClusterSeconds{}; }
  double bytes_per_site() const;
  bool has_field() const { return has_field_; }

 private:
  struct CbRow {     // one checkerboard row: bonds are computed and phi is flipped row by row
    BondRow bond;
    int parity;
    int64_t base;    // flat index of k = 0 in the parity array
    int64_t nat0;    // natural local index of site k is nat0 + 2 k
  };
  void build_rows();
  void compute_bonds(uint64_t sweep);
  void label_local();
  void compress_pieces();
  void sum_field();
  void decide(uint64_t sweep);
  void flip();
  int32_t piece_of(int64_t i) const { return parent_[i]; }  // after compress_pieces

  const Action& action_;
  Field& field_;
  uint64_t seed_;
  bool has_field_ = false;  // some r[x] != 0: flips need the cluster sums
  int dim_, n_links_;
  int64_t volume_, row_length_, n_rows_;
  bool last_local_;
  std::vector<CbRow> rows_;
  std::vector<int64_t> row_delta_;     // natural rows x links: offset of the neighbour row, or kRemote
  std::vector<int64_t> row_gbase_;     // global index of x_{d-1} = 0 of each natural row
  std::array<int, kMaxClusterLinks> e_last_{};
  std::vector<uint16_t> bonds_, row_mask_;
  std::vector<int32_t> parent_;        // union-find parents; after compress_pieces: the piece of each site
  std::vector<int64_t> piece_label_;   // smallest global site index of each piece (then of its cluster)
  std::vector<fixed128> piece_sum_;    // sum of r phi over each piece (then its cluster), if has_field_
  std::vector<uint8_t> piece_flip_;
  std::vector<double> piece_prob_;
  std::vector<int32_t> not_owner_;     // pieces of clusters whose smallest site is elsewhere
  int64_t n_pieces_ = 0;
  BoundaryMerge merge_;
  ClusterCounters counters_;
  ClusterSeconds seconds_;
};

}  // namespace qftml
