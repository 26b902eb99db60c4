// cluster_update.hpp -- the cluster update a Sampler runs between local sweeps.
//
// Exports:
//   ClusterAlgorithm               none, swendsen_wang (any process grid), wolff (one rank)
//   ClusterUpdate(action, field, seed, algorithm, every)
//       every: local sweeps per cluster update. The update follows local sweep s (RNG counter s)
//       when (s + 1) % every == 0, i.e. when the sweep count reaches a multiple of `every`; it is
//       part of that sweep, so sweep counts, `every` of the stored records and checkpoints keep
//       their meaning and a chain restarts from (field, sweep_index) alone
//   due(sweeps_done)               true if a cluster update follows the sweep that made the count
//   update(sweep)                  one cluster update (collective for swendsen_wang)
//   reduce_counters()              sum the counters over ranks (collective); totals() reads them
//   seconds(), reset_counters(), reset_timers(), bytes_per_site()
#pragma once
#include <memory>

#include "cluster/swendsen_wang.hpp"
#include "cluster/wolff.hpp"

namespace qftml {

enum class ClusterAlgorithm { none = 0, swendsen_wang = 1, wolff = 2 };

class ClusterUpdate {
 public:
  ClusterUpdate(const Action& action, Field& field, uint64_t seed, ClusterAlgorithm algorithm, int every);
  ClusterAlgorithm algorithm() const { return algorithm_; }
  int every() const { return every_; }
  bool due(uint64_t sweeps_done) const { return sweeps_done % static_cast<uint64_t>(every_) == 0; }
  void update(uint64_t sweep);
  void reduce_counters();
  const ClusterCounters& totals() const { return totals_; }
  const ClusterSeconds& seconds() const;
  void reset_counters();
  void reset_timers();
  double bytes_per_site() const;

 private:
  ClusterAlgorithm algorithm_;
  int every_;
  MPI_Comm comm_;
  std::unique_ptr<SwendsenWang> sw_;
  std::unique_ptr<Wolff> wolff_;
  ClusterCounters totals_;
};

}  // namespace qftml
