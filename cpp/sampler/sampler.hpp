// sampler.hpp -- Markov chain sweeps of the field of an Action on the distributed lattice.
//
// Exports:
//   Sampler(action, field, seed, algorithm, hits, step, cluster, cluster_every)
//                         cluster: none, or a cluster update of the signs (cluster/cluster_update.hpp)
//                         after every cluster_every-th sweep, counted as part of that sweep
//   randomize()           hot start from the counter-based RNG (uniform in [-1,1], or +-1 spins)
//   sweep(n)              n sweeps over all sites (collective); ghosts fresh on return
//   thermalize(n, tune)   n sweeps; with tune the Metropolis step is adapted towards 50%
//                         acceptance after every sweep (frozen afterwards: detailed balance holds
//                         for the measured chain)
//   acceptance()          accepted / proposed since reset_counters() over all ranks, as of the
//                         end of the last sweep()/thermalize() call (local, not a collective)
//   set_streaming(on)     two-colour sweeps in streaming order (default) or colour order; the
//                         chain is identical, the memory traffic is not (tests compare the two)
//   cluster()             the cluster update (null without one): its counters and timers
//   sweep_index()         sweeps done so far; it is the RNG counter (all 64 bits), so a chain
//                         restarts from (field, sweep_index, step) alone, on any number of ranks
//   table_bytes(), halo_bytes()   memory of the row tables and of the halo buffers (this rank)
//
// A sweep updates the colours in a fixed order. Colours are independent sets: the two parities
// for nearest-neighbour actions, the 2^d sublattices x mod 2 when diagonal links are present.
// For each colour the interior sites are updated while the previous colour's halo is in flight.
// With two colours the sweep streams instead (one_sweep_streaming): colour 1 of a row follows
// colour 0 of the rows it reads, so each row's couplings come from memory once per sweep, not
// twice. In 2D, when only direction 0 is split over ranks, sweep(n) goes further and pipelines
// up to four sweeps through one pass over memory (pipelined_sweeps). Every site sees the same
// neighbour values and RNG counters as in colour order, so the chain is the same bit for bit;
// only the memory traffic changes.
#pragma once
#include <cstdint>
#include <vector>

#include "action/action.hpp"
#include "cluster/cluster_update.hpp"
#include "kernels/site_updates.hpp"
#include "lattice/field.hpp"

namespace qftml {

// independence: the independence Metropolis-Hastings sampler of kernels/site_updates.hpp (named
// heatbath before ensemble format version 2; the bindings still accept that name).
enum class Algorithm { metropolis = 0, independence = 1 };

class Sampler {
 public:
  Sampler(const Action& action, Field& field, uint64_t seed, Algorithm algorithm, int hits,
          double step, ClusterAlgorithm cluster = ClusterAlgorithm::none, int cluster_every = 1);

  void randomize();
  void sweep(int n);
  void thermalize(int n, bool tune, double target_acceptance = 0.5);
  double acceptance() const;
  void reset_counters() {
    accepted_ = proposed_ = global_accepted_ = global_proposed_ = 0;
    if (cluster_) cluster_->reset_counters();
  }
  ClusterUpdate* cluster() { return cluster_.get(); }
  uint64_t sweep_index() const { return sweep_index_; }
  void set_sweep_index(uint64_t s) { sweep_index_ = s; }
  double step() const { return step_; }
  void set_step(double s);
  int hits() const { return hits_; }
  Algorithm algorithm() const { return algorithm_; }
  uint64_t seed() const { return seed_; }
  int n_colours() const { return static_cast<int>(colours_.size()); }
  // Streaming order (two colours only; the default there) or colour order: the same chain.
  bool streaming() const { return streaming_; }
  void set_streaming(bool on);
  double update_seconds() const { return update_seconds_; }
  double halo_wait_seconds() const { return halo_.wait_seconds(); }
  double halo_pack_seconds() const { return halo_.pack_seconds(); }
  void reset_timers() {
    update_seconds_ = 0;
    halo_.reset_timers();
    if (cluster_) cluster_->reset_timers();
  }
  // Memory on this rank: the row tables (stencils, segments) and the halo index lists and buffers.
  size_t table_bytes() const;
  size_t halo_bytes() const { return halo_.bytes(); }

 private:
  // Row segments (24 bytes each, kernels/site_updates.hpp) over four shared stencils, one per
  // (parity p, row offset c): stencil index 2 p + c.
  struct Colour {
    int parity;
    std::vector<RowSegment> interior, boundary;
  };
  // Two-colour streaming order: row r of colour 0, then row r - delay of colour 1.
  struct Stream {
    int64_t lag = 0;   // colour-1 row r reads colour-0 rows up to r + lag (one x_0 slab)
    int64_t hold = 0;  // colour-1 rows kept back to overlap colour 0's halo exchange
    std::vector<RowSegment> first;        // colour 0: one segment per row, row order (at = row base)
    std::vector<RowSegment> second;       // colour 1, sites needing no colour-0 ghost, rows in order:
    std::vector<int64_t> second_begin;    //   row r's are second[second_begin[r] .. second_begin[r+1])
    std::vector<RowSegment> second_late;  // colour-1 sites next to colour-0 ghosts
    std::vector<RowSegment> second_rows;  // colour 1: one segment per row (two-sweep pipeline)
  };
  void build_colours();
  void build_stream();
  void build_stencils();
  RowSegment segment(int p, int64_t base, int c, uint64_t gbase, int64_t k0, int64_t k1) const;
  void update_segments(const RowSegment* segments, size_t n, uint64_t sweep);
  void update_segments(const std::vector<RowSegment>& segments) {
    update_segments(segments.data(), segments.size(), sweep_index_);
  }
  void update_stream_row(int64_t r) {  // colour 1's early segments of row r
    const Stream& st = stream_;
    update_segments(st.second.data() + st.second_begin[r], st.second_begin[r + 1] - st.second_begin[r], sweep_index_);
  }
  void one_sweep();
  void one_sweep_by_colour();
  void one_sweep_streaming();
  int pipeline_depth() const;
  void pipelined_sweeps(int k);
  void local_sweeps(int n);
  void reduce_counters();

  const Action& action_;
  Field& field_;
  HaloExchange halo_;
  uint64_t seed_;
  Algorithm algorithm_;
  int hits_;
  double step_;
  uint64_t sweep_index_ = 0;
  int64_t accepted_ = 0, proposed_ = 0, global_accepted_ = 0, global_proposed_ = 0;
  RowStencil stencils_[4];
  std::vector<Colour> colours_;
  Stream stream_;
  bool streaming_ = false;
  int64_t proposed_per_sweep_ = 0;
  std::vector<double> J_;
  double update_seconds_ = 0;
  std::unique_ptr<ClusterUpdate> cluster_;
};

}  // namespace qftml
