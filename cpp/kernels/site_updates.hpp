// site_updates.hpp -- single-site updates of one contiguous row of one parity (plain arrays).
//
// The single-site conditional of the action (DESIGN 1.1) is
//     p(phi_x | rest) ~ exp(-a phi^2 - b phi^4 + (J - r) phi),  J = sum_links coupling * phi_nb,
// so every update needs only J, the site's (a, b, r) and random numbers.
//
// Exports:
//   local_field<Homog>(row, J)        J[k] = sum over link terms of coupling * neighbour value
//   metropolis_row<Homog>(...)        `hits` Metropolis hits per site, phi' = phi + step (2u - 1)
//   ising_row<Homog>(...)             `hits` spin-flip Metropolis hits per site (phi = +-1)
//   heatbath_row<Homog>(...)          exact draw from the 1D conditional (rejection from a Gaussian)
//   sample_quartic(alpha, beta, j, ...) one exact draw of exp(-alpha x^2 - beta x^4 + j x)
// Each returns the number of accepted proposals (heatbath: the number of proposals made).
// Random numbers: Philox block at counter (global site index, sweep, draw).
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "kernels/fast_exp.hpp"
#include "rng/philox.hpp"

namespace qftml {

constexpr int kMaxLinkTerms = 32;  // 2 * (d nearest-neighbour + extra offsets)

// One row segment: n sites at stride 1 of one parity array, with what their updates read.
struct RowView {
  int64_t n = 0;
  double* phi = nullptr;
  const double* a = nullptr;  // per-site couplings at the row start (inhomogeneous)
  const double* b = nullptr;
  const double* r = nullptr;
  double a0 = 0, b0 = 0, r0 = 0;  // homogeneous couplings
  int n_terms = 0;
  const double* nb_phi[kMaxLinkTerms] = {};   // neighbour value of site k at nb_phi[t][k]
  const double* nb_coup[kMaxLinkTerms] = {};  // its link coupling at nb_coup[t][k]
  double coup0[kMaxLinkTerms] = {};           // homogeneous link couplings
  uint64_t gidx0 = 0;                         // global index of site k is gidx0 + 2 k
};

template <bool Homog>
inline void local_field(const RowView& v, double* __restrict J) {
  const int64_t n = v.n;
  for (int64_t k = 0; k < n; ++k) J[k] = 0.0;
  for (int t = 0; t < v.n_terms; ++t) {
    const double* __restrict nb = v.nb_phi[t];
    if (Homog) {
      const double c = v.coup0[t];
      for (int64_t k = 0; k < n; ++k) J[k] += c * nb[k];
    } else {
      const double* __restrict c = v.nb_coup[t];
      for (int64_t k = 0; k < n; ++k) J[k] += c[k] * nb[k];
    }
  }
}

template <bool Homog>
inline int64_t metropolis_row(const RowView& v, const double* __restrict J, uint32_t sweep, int hits,
                              double step, PhiloxKey key) {
  // Everything the loop reads goes into locals first, so the compiler sees no aliasing with phi.
  double* __restrict phi = v.phi;
  const double* __restrict pa = v.a;
  const double* __restrict pb = v.b;
  const double* __restrict pr = v.r;
  const double a0 = v.a0, b0 = v.b0, r0 = v.r0;
  const int64_t n = v.n;
  const uint64_t g0 = v.gidx0;
  const uint32_t k0 = key.k0, k1 = key.k1;
  int64_t accepted = 0;
  for (int hit = 0; hit < hits; ++hit) {
#pragma omp simd reduction(+ : accepted)
    for (int64_t k = 0; k < n; ++k) {
      const uint64_t g = g0 + 2 * static_cast<uint64_t>(k);
      uint32_t c0 = static_cast<uint32_t>(g), c1 = static_cast<uint32_t>(g >> 32);
      uint32_t c2 = sweep, c3 = static_cast<uint32_t>(hit);
      philox4x32_10(c0, c1, c2, c3, k0, k1);
      const double u_prop = uniform52(c0, c1), u_acc = uniform52(c2, c3);
      const double a = Homog ? a0 : pa[k];
      const double b = Homog ? b0 : pb[k];
      const double r = Homog ? r0 : pr[k];
      const double old = phi[k];
      const double trial = old + step * (2.0 * u_prop - 1.0);
      const double o2 = old * old, t2 = trial * trial;
      const double dS = (trial - old) * (r - J[k]) + a * (t2 - o2) + b * (t2 * t2 - o2 * o2);
      const double x = dS > 0.0 ? -dS : 0.0;
      const bool accept = u_acc < exp_clamped(x);
      phi[k] = accept ? trial : old;
      accepted += accept ? 1 : 0;
    }
  }
  return accepted;
}

template <bool Homog>
inline int64_t ising_row(const RowView& v, const double* __restrict J, uint32_t sweep, int hits,
                         PhiloxKey key) {
  double* __restrict phi = v.phi;
  const double* __restrict pr = v.r;
  const double r0 = v.r0;
  const int64_t n = v.n;
  const uint64_t g0 = v.gidx0;
  const uint32_t k0 = key.k0, k1 = key.k1;
  int64_t accepted = 0;
  for (int hit = 0; hit < hits; ++hit) {
#pragma omp simd reduction(+ : accepted)
    for (int64_t k = 0; k < n; ++k) {
      const uint64_t g = g0 + 2 * static_cast<uint64_t>(k);
      uint32_t c0 = static_cast<uint32_t>(g), c1 = static_cast<uint32_t>(g >> 32);
      uint32_t c2 = sweep, c3 = static_cast<uint32_t>(hit);
      philox4x32_10(c0, c1, c2, c3, k0, k1);
      const double u = uniform52(c0, c1);
      const double r = Homog ? r0 : pr[k];
      const double s = phi[k];
      const double dS = 2.0 * s * (J[k] - r);
      const double x = dS > 0.0 ? -dS : 0.0;
      const bool accept = u < exp_clamped(x);
      phi[k] = accept ? -s : s;
      accepted += accept ? 1 : 0;
    }
  }
  return accepted;
}

// Exact draw from exp(-alpha x^2 - beta x^4 + j x) (beta >= 0; alpha > 0 if beta == 0).
// Proposal N(j / (2 a_p), 1 / (2 a_p)) with a_p > 0; with delta = a_p - alpha the target over
// the proposal is exp(delta x^2 - beta x^4), bounded by exp(delta^2 / (4 beta)) if delta > 0,
// by 1 otherwise: accept with the ratio over its bound. Draws use counter (site, sweep, draw0 + i).
inline double sample_quartic(double alpha, double beta, double j, uint64_t site, uint32_t sweep,
                             uint32_t draw0, PhiloxKey key, int64_t* proposals) {
  const double sb = std::sqrt(beta);
  const double a_p = beta > 0.0 ? std::fmax(alpha + sb, 0.5 * sb) : alpha;
  const double delta = a_p - alpha;
  const double mean = j / (2.0 * a_p), sd = 1.0 / std::sqrt(2.0 * a_p);
  for (uint32_t attempt = 0; attempt < 100000; ++attempt) {
    uint32_t c0 = static_cast<uint32_t>(site), c1 = static_cast<uint32_t>(site >> 32);
    uint32_t c2 = sweep, c3 = draw0 + attempt;
    philox4x32_10(c0, c1, c2, c3, key.k0, key.k1);
    const double u1 = uniform32_open(c0), u2 = uniform32_open(c1), u3 = uniform52(c2, c3);
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    const double x = mean + sd * z;
    const double x2 = x * x;
    double log_ratio;
    if (delta > 0.0) {
      const double m = x2 - delta / (2.0 * beta);
      log_ratio = -beta * m * m;
    } else {
      log_ratio = delta * x2 - beta * x2 * x2;
    }
    ++*proposals;
    if (u3 < std::exp(log_ratio)) return x;
  }
  throw std::runtime_error("heatbath: 1D quartic sampler made 100000 proposals without acceptance");
}

template <bool Homog>
inline int64_t heatbath_row(const RowView& v, const double* __restrict J, uint32_t sweep, int hits,
                            PhiloxKey key) {
  int64_t proposals = 0;
  for (int hit = 0; hit < hits; ++hit)
    for (int64_t k = 0; k < v.n; ++k) {
      const double a = Homog ? v.a0 : v.a[k];
      const double b = Homog ? v.b0 : v.b[k];
      const double r = Homog ? v.r0 : v.r[k];
      v.phi[k] = sample_quartic(a, b, J[k] - r, v.gidx0 + 2 * static_cast<uint64_t>(k), sweep,
                                static_cast<uint32_t>(hit) << 20, key, &proposals);
    }
  return proposals;
}

}  // namespace qftml
