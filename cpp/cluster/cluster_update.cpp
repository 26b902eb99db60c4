// cluster_update.cpp -- dispatch to Swendsen-Wang or Wolff, counters over ranks.
#include "cluster/cluster_update.hpp"

#include <stdexcept>
#include <string>

namespace qftml {

ClusterUpdate::ClusterUpdate(const Action& action, Field& field, uint64_t seed, ClusterAlgorithm algorithm, int every)
    : algorithm_(algorithm), every_(every), comm_(action.geometry().comm()) {
  if (every < 1) throw std::invalid_argument("cluster_every must be >= 1, got " + std::to_string(every));
  if (algorithm == ClusterAlgorithm::swendsen_wang) sw_ = std::make_unique<SwendsenWang>(action, field, seed);
  else if (algorithm == ClusterAlgorithm::wolff) wolff_ = std::make_unique<Wolff>(action, field, seed);
  else throw std::invalid_argument("ClusterUpdate needs an algorithm (swendsen-wang or wolff)");
}

void ClusterUpdate::update(uint64_t sweep) {
  if (sw_) sw_->update(sweep);
  else wolff_->update(sweep);
}

void ClusterUpdate::reduce_counters() {
  const ClusterCounters& c = sw_ ? sw_->counters() : wolff_->counters();
  int64_t v[4] = {c.updates, c.clusters, c.flipped, c.sites};
  MPI_Allreduce(MPI_IN_PLACE, v + 1, 3, MPI_INT64_T, MPI_SUM, comm_);  // every rank does every update
  totals_ = ClusterCounters{v[0], v[1], v[2], v[3]};
}

const ClusterSeconds& ClusterUpdate::seconds() const { return sw_ ? sw_->seconds() : wolff_->seconds(); }

void ClusterUpdate::reset_counters() {
  if (sw_) sw_->reset_counters();
  else wolff_->reset_counters();
  totals_ = ClusterCounters{};
}

void ClusterUpdate::reset_timers() {
  if (sw_) sw_->reset_timers();
  else wolff_->reset_timers();
}

double ClusterUpdate::bytes_per_site() const { return sw_ ? sw_->bytes_per_site() : wolff_->bytes_per_site(); }

}  // namespace qftml
