// wolff.cpp -- neighbour table, breadth-first growth, flips (one rank).
#include "cluster/wolff.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace qftml {
namespace {

inline void philox_at(uint64_t index, uint32_t draw, uint64_t sweep, PhiloxKey key, uint32_t* w) {
  w[0] = static_cast<uint32_t>(index);
  w[1] = (static_cast<uint32_t>(index >> 32) & 0xFFFFu) | (draw << 16);
  w[2] = static_cast<uint32_t>(sweep);
  w[3] = static_cast<uint32_t>(sweep >> 32);
  philox4x32_10(w[0], w[1], w[2], w[3], key.k0, key.k1);
}

}  // namespace

Wolff::Wolff(const Action& action, Field& field, uint64_t seed)
    : action_(action), field_(field), seed_(seed), n_terms_(2 * action.n_links()) {
  const Geometry& g = action.geometry();
  if (&field.geometry() != &g) throw std::invalid_argument("field and action live on different Lattice objects");
  if (g.size() != 1)
    throw std::invalid_argument("the Wolff update needs the whole lattice on one rank (this one is split over " +
                                std::to_string(g.size()) + " ranks); use the Swendsen-Wang update");
  volume_ = g.local_volume();
  if (volume_ >= (int64_t(1) << 31) - 1) throw std::invalid_argument("the Wolff update needs fewer than 2^31 sites");
  const int d = g.dim(), n_links = action.n_links();
  for (int l = 0; l < n_links; ++l) {
    terms_.push_back(Term{l, true});
    terms_.push_back(Term{l, false});
    coup0_.push_back(action.coupling0(l));
    coup0_.push_back(action.coupling0(l));
  }
  homogeneous_ = action.homogeneous();
  neighbour_.resize(volume_ * n_terms_);
  const std::vector<int>& L = g.shape();
  std::vector<int64_t> stride(d, 1);
  for (int mu = d - 2; mu >= 0; --mu) stride[mu] = stride[mu + 1] * L[mu + 1];
  std::vector<int> x(d, 0);
  for (int64_t i = 0; i < volume_; ++i) {
    for (int t = 0; t < n_terms_; ++t) {
      const std::vector<int>& e = action.offset(terms_[t].link);
      const int sign = terms_[t].forward ? 1 : -1;
      int64_t j = 0;
      for (int mu = 0; mu < d; ++mu) j += ((x[mu] + sign * e[mu] + L[mu]) % L[mu]) * stride[mu];
      neighbour_[i * n_terms_ + t] = static_cast<int32_t>(j);
    }
    for (int mu = d - 1; mu >= 0; --mu) {
      if (++x[mu] < L[mu]) break;
      x[mu] = 0;
    }
  }
  std::vector<double> w(volume_ * d), gx(volume_ * action.n_extra()), a(volume_), b(volume_), r(volume_);
  action.get_couplings(w.data(), gx.data(), a.data(), b.data(), r.data());
  has_field_ = false;
  for (double v : r) has_field_ = has_field_ || v != 0.0;
  if (!homogeneous_) {
    w_.resize(volume_ * n_links);
    for (int64_t i = 0; i < volume_; ++i)
      for (int l = 0; l < n_links; ++l)
        w_[i * n_links + l] = l < d ? w[i * d + l] : gx[i * action.n_extra() + (l - d)];
  }
  if (has_field_) r_ = std::move(r);
  phi_.resize(volume_);
  stamp_.assign(volume_, 0);
  queue_.reserve(volume_);
}

void Wolff::update(uint64_t sweep) {
  const double t0 = thread_cpu_seconds();
  field_.get_local(phi_.data());
  const PhiloxKey coins = rng_key(seed_, static_cast<uint32_t>(RngPurpose::cluster_coins));
  uint32_t w[4];
  philox_at(0, 1, sweep, coins, w);
  const int64_t start = std::min<int64_t>(volume_ - 1, static_cast<int64_t>(uniform52(w[0], w[1]) * static_cast<double>(volume_)));
  double sum = 0.0;
  const int64_t size = grow(start, sweep, &sum);
  bool flip = true;
  if (has_field_) {
    philox_at(0, 2, sweep, coins, w);
    const double t = 2.0 * sum;
    flip = uniform52(w[0], w[1]) < exp_clamped(t < 0.0 ? t : 0.0);
  }
  if (flip) {
    for (int32_t i : queue_) phi_[i] = -phi_[i];
    field_.set_local(phi_.data());  // refreshes the ghosts
  }
  counters_.flipped += flip;
  counters_.clusters += 1;
  counters_.sites += size;
  ++counters_.updates;
  seconds_.bonds += thread_cpu_seconds() - t0;  // growth and flip: all under bonds
}

// Breadth-first growth from `start`; the cluster is left in queue_. Returns its size and adds
// sum_C r phi to *field_sum.
int64_t Wolff::grow(int64_t start, uint64_t sweep, double* field_sum) {
  if (++tag_ == 0) {  // stamps wrapped around: clear them
    std::fill(stamp_.begin(), stamp_.end(), 0u);
    tag_ = 1;
  }
  const PhiloxKey key = rng_key(seed_, static_cast<uint32_t>(RngPurpose::cluster_bonds));
  const int n_links = action_.n_links();
  uint64_t block = 0;
  uint32_t words[4];
  int spare = 0;  // uniforms left in `words` (two per block)
  auto next_uniform = [&]() {
    if (spare == 0) {
      philox_at(block++, 0, sweep, key, words);
      spare = 2;
      return uniform52(words[0], words[1]);
    }
    spare = 0;
    return uniform52(words[2], words[3]);
  };
  double sum = 0.0;
  queue_.clear();
  queue_.push_back(static_cast<int32_t>(start));
  stamp_[start] = tag_;
  if (has_field_) sum += r_[start] * phi_[start];
  for (size_t head = 0; head < queue_.size(); ++head) {
    const int32_t i = queue_[head];
    const double phi_i = phi_[i];
    const int32_t* nb = neighbour_.data() + static_cast<int64_t>(i) * n_terms_;
    for (int t = 0; t < n_terms_; ++t) {
      const int32_t j = nb[t];
      if (stamp_[j] == tag_) continue;
      const Term& term = terms_[t];
      const double w = homogeneous_ ? coup0_[t]
                                    : w_[static_cast<int64_t>(term.forward ? i : j) * n_links + term.link];
      const double x = bond_probability_arg(phi_i, phi_[j], w);
      if (!(x > 0.0)) continue;
      if (next_uniform() < 1.0 - exp_clamped(-x)) {
        stamp_[j] = tag_;
        queue_.push_back(j);
        if (has_field_) sum += r_[j] * phi_[j];
      }
    }
  }
  *field_sum = sum;
  return static_cast<int64_t>(queue_.size());
}

double Wolff::bytes_per_site() const {
  const double bytes = neighbour_.capacity() * sizeof(int32_t) + (w_.capacity() + r_.capacity() + phi_.capacity()) * sizeof(double) +
                       stamp_.capacity() * sizeof(uint32_t) + queue_.capacity() * sizeof(int32_t);
  return bytes / static_cast<double>(volume_);
}

}  // namespace qftml
