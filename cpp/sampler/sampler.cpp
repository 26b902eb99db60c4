// sampler.cpp -- sweep orders (colour order, streaming, pipelined sweeps), row segments, halo overlap.
#include "sampler/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace qftml {

Sampler::Sampler(const Action& action, Field& field, uint64_t seed, Algorithm algorithm, int hits,
                 double step, ClusterAlgorithm cluster, int cluster_every)
    : action_(action),
      field_(field),
      halo_(action.geometry(), action.layout(), /*corners=*/action.n_extra() > 0),
      seed_(seed),
      algorithm_(algorithm),
      hits_(hits),
      step_(step) {
  if (&field.geometry() != &action.geometry())
    throw std::invalid_argument("field and action live on different Lattice objects");
  if (hits < 1 || hits >= kMaxDraws)
    throw std::invalid_argument("hits must be >= 1 and < " + std::to_string(kMaxDraws) +
                                " (the draw field of the RNG counter), got " + std::to_string(hits));
  // Site counters hold 48 bits of the global site index, the cluster bonds' of the link index.
  if (static_cast<uint64_t>(action.geometry().global_volume()) * static_cast<uint64_t>(action.n_links()) >
      kMaxCounterSites)
    throw std::invalid_argument("the lattice is too large for the RNG counters (volume x links must be <= 2^48)");
  set_step(step);
  build_stencils();
  build_colours();
  streaming_ = colours_.size() == 2;
  if (streaming_) build_stream();
  proposed_per_sweep_ = action.geometry().local_volume() * static_cast<int64_t>(hits);
  J_.resize(action.layout().half_row());
  if (cluster != ClusterAlgorithm::none)
    cluster_ = std::make_unique<ClusterUpdate>(action, field, seed, cluster, cluster_every);
}

void Sampler::set_streaming(bool on) {
  if (on && colours_.size() != 2)
    throw std::invalid_argument("streaming sweeps need two colours (no extra links); this action has " +
                                std::to_string(colours_.size()));
  streaming_ = on;  // the stream was built with the colours (two colours)
}

void Sampler::set_step(double s) {
  if (!(s > 0.0) || !std::isfinite(s))
    throw std::invalid_argument("Metropolis step must be a positive number, got " + std::to_string(s));
  step_ = s;
}

namespace {

// Global index of the site k = 0 of a row (outer coordinates x, offset c in the last direction).
uint64_t row_global_base(const Geometry& g, int c, const int* x) {
  const int inner = g.dim() - 1;
  uint64_t gbase = static_cast<uint64_t>(g.local_offset()[inner] + c);
  for (int mu = 0; mu < inner; ++mu)
    gbase += static_cast<uint64_t>(g.local_offset()[mu] + x[mu]) * g.global_stride(mu);
  return gbase;
}

// Sites of colour 1 updated while colour 0's halo is in flight (when there is a halo to hide).
constexpr int64_t kOverlapSites = 8192;
// Sweeps pipelined through one pass over memory (4096^2 inhomogeneous, against colour order:
// k = 1, 2, 3, 4, 6 gave 1.07, 1.15, 1.20, 1.19, 1.21 times the rate; the rows in flight stay in cache).
constexpr int kMaxPipelinedSweeps = 4;

}  // namespace

// Stencil 2 p + c: the rows of parity p with offset c. A neighbour x +- e_l of such a row's site
// at flat i is at i + delta in parity p ^ dparity; link (x, x+e) is stored at x, (x-e, x) at x-e.
void Sampler::build_stencils() {
  for (int p = 0; p < 2; ++p)
    for (int c = 0; c < 2; ++c) {
      RowStencil& s = stencils_[2 * p + c];
      s.phi = field_.parity(p);
      s.a = action_.a(p), s.b = action_.b(p), s.r = action_.r(p);
      s.a0 = action_.a0(), s.b0 = action_.b0(), s.r0 = action_.r0();
      int t = 0;
      for (int l = 0; l < action_.n_links(); ++l) {
        const NeighbourShift& fw = action_.shift(l, c, +1);
        const NeighbourShift& bw = action_.shift(l, c, -1);
        s.nb_phi[t] = field_.parity(p ^ fw.dparity), s.nb_phi_delta[t] = fw.delta;
        s.nb_coup[t] = action_.coupling(l, p), s.nb_coup_delta[t] = 0;
        s.coup0[t++] = action_.coupling0(l);
        s.nb_phi[t] = field_.parity(p ^ bw.dparity), s.nb_phi_delta[t] = bw.delta;
        s.nb_coup[t] = action_.coupling(l, p ^ bw.dparity), s.nb_coup_delta[t] = bw.delta;
        s.coup0[t++] = action_.coupling0(l);
      }
      s.n_terms = t;
    }
}

// Sites k0 ... k1-1 of the row of parity p, offset c, whose k = 0 is at flat `base`.
RowSegment Sampler::segment(int p, int64_t base, int c, uint64_t gbase, int64_t k0, int64_t k1) const {
  RowSegment g;
  g.at = base + k0;
  g.gidx0 = gbase + 2 * static_cast<uint64_t>(k0);
  g.n = static_cast<int32_t>(k1 - k0);
  g.stencil = 2 * p + c;
  return g;
}

size_t Sampler::table_bytes() const {
  size_t n = 0;
  for (const Colour& col : colours_) n += col.interior.capacity() + col.boundary.capacity();
  const Stream& st = stream_;
  n += st.first.capacity() + st.second.capacity() + st.second_late.capacity() + st.second_rows.capacity();
  return sizeof(stencils_) + n * sizeof(RowSegment) + st.second_begin.capacity() * sizeof(int64_t) +
         J_.capacity() * sizeof(double);
}

void Sampler::build_colours() {
  const Geometry& g = action_.geometry();
  const CheckerboardLayout& layout = action_.layout();
  const int d = g.dim();
  const bool sublattices = action_.n_extra() > 0;
  const int n_colours = sublattices ? (1 << d) : 2;
  colours_.assign(n_colours, Colour{});
  const int64_t half = layout.half_row();
  const int inner = d - 1;
  layout.for_each_row([&](int p, int64_t base, int c, const int* x) {
    // Colour of the row: its parity, or its sublattice bits (x_0 mod 2, ..., x_{d-1} mod 2).
    int colour = p;
    if (sublattices) {
      colour = 0;
      for (int mu = 0; mu < d - 1; ++mu) colour |= (x[mu] & 1) << (d - 1 - mu);
      colour |= c;  // every site of this row has x_{d-1} = 2k + c
    }
    const uint64_t gbase = row_global_base(g, c, x);
    bool edge_row = false;
    for (int mu = 0; mu < d - 1; ++mu)
      edge_row = edge_row || (!halo_.local_direction(mu) && (x[mu] == 0 || x[mu] == layout.local(mu) - 1));
    Colour& col = colours_[colour];
    col.parity = p;
    // Interior sites have every neighbour (offsets in {-1,0,1}^d) off the ghost layer:
    // x_{d-1} = 2k + c in [1, L-2], i.e. k in [1, half) for c = 0 and [0, half-1) for c = 1.
    // (A direction copied locally at the start of the exchange has no boundary.)
    const bool inner_local = halo_.local_direction(inner);
    const int64_t k_lo = inner_local ? 0 : (c == 0 ? 1 : 0);
    const int64_t k_hi = inner_local ? half : (c == 0 ? half : half - 1);
    if (edge_row || k_lo >= k_hi) {
      col.boundary.push_back(segment(p, base, c, gbase, 0, half));
      return;
    }
    col.interior.push_back(segment(p, base, c, gbase, k_lo, k_hi));
    if (k_lo > 0) col.boundary.push_back(segment(p, base, c, gbase, 0, k_lo));
    if (k_hi < half) col.boundary.push_back(segment(p, base, c, gbase, k_hi, half));
  });
}

void Sampler::update_segments(const RowSegment* segments, size_t n_segments, uint64_t sweep) {
  const SweepWords sw = sweep_words(sweep);
  const bool homog = action_.homogeneous();
  const RowSegment* const end = segments + n_segments;
  // Metropolis and spin-flip kernels compute the local field themselves (one pass over memory).
  if (action_.field_type() == FieldType::ising) {
    const PhiloxKey key = rng_key(seed_, static_cast<uint32_t>(RngPurpose::ising));
    for (const RowSegment* g = segments; g != end; ++g) {
      const RowView v = row_view(stencils_[g->stencil], *g);
      accepted_ += homog ? ising_row<true>(v, sw, hits_, key) : ising_row<false>(v, sw, hits_, key);
    }
  } else if (algorithm_ == Algorithm::metropolis) {
    const PhiloxKey key = rng_key(seed_, static_cast<uint32_t>(RngPurpose::metropolis));
    for (const RowSegment* g = segments; g != end; ++g) {
      const RowView v = row_view(stencils_[g->stencil], *g);
      accepted_ += homog ? metropolis_row<true>(v, sw, hits_, step_, key) : metropolis_row<false>(v, sw, hits_, step_, key);
    }
  } else {
    const PhiloxKey key = rng_key(seed_, static_cast<uint32_t>(RngPurpose::independence));
    double* J = J_.data();
    for (const RowSegment* g = segments; g != end; ++g) {
      const RowView v = row_view(stencils_[g->stencil], *g);
      if (homog) local_field<true>(v, J);
      else local_field<false>(v, J);
      accepted_ += homog ? independence_row<true>(v, J, sw, hits_, key) : independence_row<false>(v, J, sw, hits_, key);
    }
  }
}

void Sampler::one_sweep() {
  if (streaming_) one_sweep_streaming();
  else one_sweep_by_colour();
  if (!halo_.corners()) field_.mark_corners_stale();  // faces only: diagonal links need a refresh
  proposed_ += proposed_per_sweep_;
  ++sweep_index_;
}

void Sampler::one_sweep_by_colour() {
  // The previous colour's halo is in flight while this colour's interior is updated.
  int pending = -1;
  for (const Colour& col : colours_) {
    double t0 = MPI_Wtime();
    update_segments(col.interior);
    update_seconds_ += MPI_Wtime() - t0;
    if (pending >= 0) halo_.finish(field_.parity(pending));
    t0 = MPI_Wtime();
    update_segments(col.boundary);
    update_seconds_ += MPI_Wtime() - t0;
    halo_.start(field_.parity(col.parity));
    pending = col.parity;
  }
  halo_.finish(field_.parity(pending));
}

// Colour 0 needs only colour-1 values of the previous sweep, whose ghosts are fresh when a sweep
// starts, so it runs row by row without waiting. Colour-1 row r reads colour-0 rows r - lag ... r +
// lag, so it follows colour-0 row r + lag; its couplings and neighbours are still in cache. The
// colour-1 sites next to colour-0 ghosts wait for colour 0's halo, as in colour order.
void Sampler::one_sweep_streaming() {
  const Stream& st = stream_;
  double* phi0 = field_.parity(0);
  const bool inner_local = halo_.local_direction(action_.geometry().dim() - 1);
  const int64_t half = action_.layout().half_row();
  const int64_t rows = static_cast<int64_t>(st.first.size()), delay = st.lag + st.hold;
  double t0 = MPI_Wtime();
  for (int64_t r = 0; r < rows; ++r) {
    update_segments(&st.first[r], 1, sweep_index_);
    if (inner_local) HaloExchange::copy_local_row(phi0, st.first[r].at, half);
    if (r >= delay) update_stream_row(r - delay);
  }
  update_seconds_ += MPI_Wtime() - t0;
  halo_.start(phi0);
  t0 = MPI_Wtime();
  for (int64_t r = std::max<int64_t>(0, rows - delay); r < rows; ++r) update_stream_row(r);
  update_seconds_ += MPI_Wtime() - t0;
  halo_.finish(phi0);
  t0 = MPI_Wtime();
  update_segments(st.second_late);
  update_seconds_ += MPI_Wtime() - t0;
  halo_.start(field_.parity(1));
  halo_.finish(field_.parity(1));
}

void Sampler::build_stream() {
  const Geometry& g = action_.geometry();
  const CheckerboardLayout& layout = action_.layout();
  const int d = g.dim(), inner = d - 1;
  const int64_t half = layout.half_row();
  Stream& st = stream_;
  st.lag = 1;
  for (int mu = 1; mu < inner; ++mu) st.lag *= layout.local(mu);
  bool any_remote = false;
  for (int mu = 0; mu < d; ++mu) any_remote = any_remote || !halo_.local_direction(mu);
  const bool inner_local = halo_.local_direction(inner);
  layout.for_each_row([&](int p, int64_t base, int c, const int* x) {
    const uint64_t gbase = row_global_base(g, c, x);
    if (p == 0) {
      st.first.push_back(segment(0, base, c, gbase, 0, half));
      return;
    }
    st.second_rows.push_back(segment(1, base, c, gbase, 0, half));
    st.second_begin.push_back(static_cast<int64_t>(st.second.size()));
    // Outer neighbours in the ghost layer: after colour 0's halo (copied or received).
    bool edge_row = false;
    for (int mu = 0; mu < inner; ++mu) edge_row = edge_row || x[mu] == 0 || x[mu] == layout.local(mu) - 1;
    // Last direction: a local one is refreshed row by row; a remote one leaves the end sites late.
    const int64_t k_lo = inner_local ? 0 : (c == 0 ? 1 : 0);
    const int64_t k_hi = inner_local ? half : (c == 0 ? half : half - 1);
    if (edge_row || k_lo >= k_hi) {
      st.second_late.push_back(segment(1, base, c, gbase, 0, half));
      return;
    }
    st.second.push_back(segment(1, base, c, gbase, k_lo, k_hi));
    if (k_lo > 0) st.second_late.push_back(segment(1, base, c, gbase, 0, k_lo));
    if (k_hi < half) st.second_late.push_back(segment(1, base, c, gbase, k_hi, half));
  });
  st.second_begin.push_back(static_cast<int64_t>(st.second.size()));
  const int64_t rows = static_cast<int64_t>(st.first.size());
  st.hold = any_remote ? std::min<int64_t>(rows, (kOverlapSites + half - 1) / half) : 0;
}

// Local sweeps up to each cluster update, then the update (counter: the sweep it follows).
void Sampler::sweep(int n) {
  int done = 0;
  while (done < n) {
    const int k = cluster_ ? std::min<int>(n - done, cluster_->every() - static_cast<int>(sweep_index_ % cluster_->every()))
                           : n - done;
    local_sweeps(k);
    done += k;
    if (cluster_ && cluster_->due(sweep_index_)) cluster_->update(sweep_index_ - 1);
  }
  reduce_counters();
}

void Sampler::local_sweeps(int n) {
  int done = 0;
  while (n - done >= 2) {
    const int k = std::min(n - done, pipeline_depth());
    if (k < 2) break;
    pipelined_sweeps(k);
    done += k;
  }
  for (; done < n; ++done) one_sweep();
}

// Sweeps that one pass over memory can carry: 2D blocks whose last direction is local (only rows
// 0 and L-1 touch the ghost layer), at most kMaxPipelinedSweeps, and L >= 4 k rows.
int Sampler::pipeline_depth() const {
  const Geometry& g = action_.geometry();
  if (!streaming_ || g.dim() != 2 || !halo_.local_direction(1)) return 1;
  return std::min(kMaxPipelinedSweeps, action_.layout().local(0) / 4);
}

// k sweeps s0 ... s0+k-1 in one pass over the rows j = 0 ... L-1 of a 2D block. Stage q = 0 ... 2k-1
// is colour q mod 2 of sweep s0 + q / 2; stage q of row j reads stage q-1 of rows j-1 ... j+1 (and
// overwrites what stage q-2 left there, which only those reads needed). So at step r the stages
// run on rows r - q, each only where it needs no ghost: stage q covers rows q ... L-1-q. Then,
// stage by stage, stage q does its rows next to the block edges, 1 ... q-1 and L-q ... L-2 while
// the halo of stage q-1 is in flight, and rows 0 and L-1 once it has arrived. The faces sent in each halo (rows 0 and L-1) are untouched by later
// stages at that point, so they carry the right sweep's values. A row's ghosts in the (local) last
// direction are refreshed right after each update, since the next stage reads them before any halo.
// Every site sees the neighbours and RNG counters of plain sweeps: the same chain, bit for bit, with
// the couplings read from memory once per k sweeps.
void Sampler::pipelined_sweeps(int k) {
  const Stream& st = stream_;
  const uint64_t s0 = sweep_index_;
  double* phi[2] = {field_.parity(0), field_.parity(1)};
  const int64_t L = static_cast<int64_t>(st.first.size()), half = action_.layout().half_row();
  const int stages = 2 * k;
  const auto run = [&](int q, int64_t j) {
    const int c = q & 1;
    const RowSegment& row = c ? st.second_rows[j] : st.first[j];
    update_segments(&row, 1, s0 + q / 2);
    HaloExchange::copy_local_row(phi[c], row.at, half);
  };
  double t0 = MPI_Wtime();
  for (int64_t r = 0; r < L; ++r)
    for (int q = 0; q < stages; ++q) {
      const int64_t j = r - q;
      if (j >= q && j <= L - 1 - q) run(q, j);
    }
  update_seconds_ += MPI_Wtime() - t0;
  for (int q = 1; q < stages; ++q) {
    // Only rows 0 and L-1 read the ghosts; the other edge rows of stage q overlap the messages.
    halo_.start(phi[(q - 1) & 1]);
    t0 = MPI_Wtime();
    for (int64_t j = 1; j < q; ++j) run(q, j);
    for (int64_t j = L - q; j < L - 1; ++j) run(q, j);
    update_seconds_ += MPI_Wtime() - t0;
    halo_.finish(phi[(q - 1) & 1]);
    t0 = MPI_Wtime();
    run(q, 0);
    run(q, L - 1);
    update_seconds_ += MPI_Wtime() - t0;
  }
  halo_.exchange(phi[(stages - 1) & 1]);
  field_.mark_corners_stale();
  proposed_ += k * proposed_per_sweep_;
  sweep_index_ += k;
}

// One small allreduce per sweep()/thermalize() call, so acceptance() is local and safe to call
// on one rank only (a collective there would be an easy way to hang a job).
void Sampler::reduce_counters() {
  int64_t counts[2] = {accepted_, proposed_};
  MPI_Allreduce(MPI_IN_PLACE, counts, 2, MPI_INT64_T, MPI_SUM, action_.geometry().comm());
  global_accepted_ = counts[0], global_proposed_ = counts[1];
  if (cluster_) cluster_->reduce_counters();
}

void Sampler::thermalize(int n, bool tune, double target) {
  for (int i = 0; i < n; ++i) {
    const int64_t acc0 = accepted_, prop0 = proposed_;
    one_sweep();
    if (tune && algorithm_ == Algorithm::metropolis && action_.field_type() == FieldType::real) {
      int64_t counts[2] = {accepted_ - acc0, proposed_ - prop0};
      MPI_Allreduce(MPI_IN_PLACE, counts, 2, MPI_INT64_T, MPI_SUM, action_.geometry().comm());
      const double rate = double(counts[0]) / double(counts[1]);
      step_ *= std::exp(std::fmax(-0.5, std::fmin(0.5, rate - target)));
    }
    if (cluster_ && cluster_->due(sweep_index_)) cluster_->update(sweep_index_ - 1);
  }
  reduce_counters();
}

double Sampler::acceptance() const {
  return global_proposed_ > 0 ? double(global_accepted_) / double(global_proposed_) : 0.0;
}

void Sampler::randomize() {
  const Geometry& g = action_.geometry();
  const PhiloxKey key = rng_key(seed_, static_cast<uint32_t>(RngPurpose::initial_field));
  const bool ising = action_.field_type() == FieldType::ising;
  std::vector<double> local(g.local_volume());
  std::vector<int> gx(g.dim());
  int64_t i = 0;
  field_.layout().for_each_site([&](const int* x, int, int64_t) {
    uint64_t gi = 0;
    for (int mu = 0; mu < g.dim(); ++mu)
      gi += static_cast<uint64_t>(g.local_offset()[mu] + x[mu]) * g.global_stride(mu);
    uint32_t c0 = static_cast<uint32_t>(gi), c1 = static_cast<uint32_t>(gi >> 32), c2 = 0, c3 = 0;
    philox4x32_10(c0, c1, c2, c3, key.k0, key.k1);
    const double u = uniform52(c0, c1);
    local[i++] = ising ? (u < 0.5 ? -1.0 : 1.0) : 2.0 * u - 1.0;
  });
  field_.set_local(local.data());
}

}  // namespace qftml
