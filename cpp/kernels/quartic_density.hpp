// quartic_density.hpp -- the 1D density p(x) ~ exp(l(x)), l(x) = -alpha x^2 - beta x^4 + j x,
// sampled exactly and integrated to near machine precision (plain arrays, no MPI, no Python).
//
// It is the conditional of every real unit of a phi^4 network (DESIGN 1.6) and of every lattice
// site (DESIGN 1.1). Normalisable iff beta > 0, or beta = 0 and alpha > 0 (Gaussian).
//
// Exports:
//   quartic_maxima(alpha, beta, j, m)            local maxima of l (1 or 2, ascending) into m
//   quartic_integral(alpha, beta, j, &m1, &m2, &m4) -> ln of the integral of exp(l), and the
//                                                moments <x>, <x^2>, <x^4> of p
//   QuarticEnvelope(alpha, beta, j)              a piecewise-exponential upper bound of exp(l)
//   quartic_draw(alpha, beta, j, key, c0, c1, c2, &attempts) -> one exact draw from p
//   quartic_integral_rows(rows, units, alpha, beta, j, logz, m1, m2, m4)   over a (rows, units)
//                                                array, alpha and beta per unit (column)
//   quartic_sample_rows(rows, units, alpha, beta, j, index0, step, key, x) -> total attempts;
//                                                element (r, u) draws with counter
//                                                (index0 + r * units + u, step, attempt)
// Invalid (alpha, beta) give NaN; the caller checks normalisability first.
//
// Why the sampler is exact. l'' = -2 alpha - 12 beta x^2, so l is concave except on
// (-x_c, x_c), x_c = sqrt(-alpha / (6 beta)), when alpha < 0 (double wells). The envelope is
// piecewise linear in l: nodes around each local maximum (and at +-x_c); on every interval
// between nodes where l is concave, the tangents at its two ends (each alone lies above a concave
// function; they are joined where they cross, clamped into the interval, so any rounding of the
// crossing point keeps the bound); on every convex interval, the chord (above a convex function);
// on the two tails (concave, beyond the outermost nodes where l' has the sign that makes them
// integrable), the tangent at the outermost node. A draw is the envelope's closed-form inverse CDF
// of a 52-bit uniform, accepted with probability exp(l(x) - envelope(x)) <= 1: textbook rejection,
// exact for any envelope that bounds the density, whatever its tightness (only the acceptance
// rate, ~0.9, depends on the node placement). Exact up to floating-point rounding of the formulas.
//
// Why the integral is near machine precision. exp(l) is entire and decays like exp(-beta x^4):
// the trapezoidal rule on R converges geometrically in 1 / step (for a Gaussian of width s the
// relative error is ~2 exp(-2 pi^2 s^2 / h^2), < 1e-70 at h = s / 3; exp(-x^4) needs
// h <= 0.15 for 1e-15, measured against mpmath). The rule runs on [L, R] with l(L), l(R) <
// max l - 46 (neglected mass < 1e-20 of the total), step = min(narrowest local width of the
// maxima that carry mass / 3, 0.13 beta^(-1/4)), terms relative to max l (no overflow).
// beta = 0 is the closed-form Gaussian.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "rng/philox.hpp"

namespace qftml {

inline double quartic_log_density(double alpha, double beta, double j, double x) {
  const double x2 = x * x;
  return -alpha * x2 - beta * x2 * x2 + j * x;
}
inline double quartic_slope(double alpha, double beta, double j, double x) {
  return -2.0 * alpha * x - 4.0 * beta * x * x * x + j;
}

inline bool quartic_valid(double alpha, double beta) {
  return std::isfinite(alpha) && std::isfinite(beta) && (beta > 0.0 || (beta == 0.0 && alpha > 0.0));
}

// Stationary points of l solve 4 beta x^3 + 2 alpha x - j = 0 (Cardano, then Newton polish).
// The outer two of three real roots are maxima; a single real root is the maximum.
inline int quartic_maxima(double alpha, double beta, double j, double* m) {
  if (beta <= 0.0) {
    m[0] = j / (2.0 * alpha);
    return 1;
  }
  const double p = alpha / (2.0 * beta), q = -j / (4.0 * beta);  // x^3 + p x + q = 0
  const double disc = q * q / 4.0 + p * p * p / 27.0;
  int n = 1;
  if (disc >= 0.0) {
    const double sq = std::sqrt(disc);
    // the larger-magnitude cube root first, the other from their product -p/3 (no cancellation)
    const double t = std::cbrt(-q / 2.0 + (q <= 0.0 ? sq : -sq));
    m[0] = t != 0.0 ? t - p / (3.0 * t) : 0.0;
    if (!std::isfinite(m[0])) m[0] = alpha > 0.0 ? j / (2.0 * alpha) : 0.0;  // overflow at tiny beta
  } else {
    const double rad = 2.0 * std::sqrt(-p / 3.0);
    const double phase = std::acos(std::fmax(-1.0, std::fmin(1.0, 3.0 * q / (p * rad)))) / 3.0;
    m[1] = rad * std::cos(phase);                              // largest root
    m[0] = rad * std::cos(phase - 2.0 * 3.141592653589793 / 3.0 * 2.0);  // smallest root
    if (m[0] > m[1]) std::swap(m[0], m[1]);
    n = 2;
  }
  for (int i = 0; i < n; ++i) {
    for (int it = 0; it < 3; ++it) {
      const double x = m[i], g = 4.0 * beta * x * x * x + 2.0 * alpha * x - j;
      const double dg = 12.0 * beta * x * x + 2.0 * alpha;
      if (!(dg > 0.0)) break;
      const double y = x - g / dg;
      if (!std::isfinite(y)) break;
      m[i] = y;
    }
  }
  return n;
}

// Local width at a maximum: 1 / sqrt(curvature), the curvature floored by the quartic's own
// scale 2 sqrt(beta) (a flat maximum, alpha = j = 0, still has width ~ beta^(-1/4)).
inline double quartic_width(double alpha, double beta, double m) {
  const double c = 2.0 * alpha + 12.0 * beta * m * m;
  return 1.0 / std::sqrt(std::fmax(c, 0.0) + 2.0 * std::sqrt(beta));
}

inline double quartic_integral(double alpha, double beta, double j, double* m1, double* m2, double* m4) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (!quartic_valid(alpha, beta) || !std::isfinite(j)) {
    *m1 = *m2 = *m4 = nan;
    return nan;
  }
  if (beta == 0.0) {
    const double mu = j / (2.0 * alpha), var = 1.0 / (2.0 * alpha);
    *m1 = mu;
    *m2 = var + mu * mu;
    *m4 = mu * mu * mu * mu + 6.0 * mu * mu * var + 3.0 * var * var;
    return 0.5 * std::log(3.141592653589793 / alpha) + j * j / (4.0 * alpha);
  }
  double m[2];
  const int n = quartic_maxima(alpha, beta, j, m);
  double lmax = -std::numeric_limits<double>::infinity();
  double lm[2];
  for (int i = 0; i < n; ++i) lmax = std::fmax(lmax, lm[i] = quartic_log_density(alpha, beta, j, m[i]));
  constexpr double cut = 46.0;
  // step: a third of the narrowest significant local width, and at most 0.13 beta^(-1/4) (the
  // quartic's own scale: exp(-x^4) is not as smooth as a Gaussian of the same width)
  double h = 0.13 / std::sqrt(std::sqrt(beta));
  for (int i = 0; i < n; ++i)
    if (lm[i] > lmax - cut) h = std::fmin(h, quartic_width(alpha, beta, m[i]) / 3.0);
  // the ends: l is monotone outside the outer maxima
  const double sl = quartic_width(alpha, beta, m[0]), sr = quartic_width(alpha, beta, m[n - 1]);
  double lo = m[0] - 6.0 * sl, hi = m[n - 1] + 6.0 * sr;
  for (double step = 3.0 * sl; quartic_log_density(alpha, beta, j, lo) > lmax - cut; step *= 1.5) lo -= step;
  for (double step = 3.0 * sr; quartic_log_density(alpha, beta, j, hi) > lmax - cut; step *= 1.5) hi += step;
  const int64_t npts = static_cast<int64_t>(std::ceil((hi - lo) / h)) + 1;
  h = (hi - lo) / static_cast<double>(npts - 1);
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s4 = 0.0;
  for (int64_t k = 0; k < npts; ++k) {
    const double x = lo + h * static_cast<double>(k), x2 = x * x;
    const double e = std::exp(quartic_log_density(alpha, beta, j, x) - lmax);
    s0 += e;
    s1 += e * x;
    s2 += e * x2;
    s4 += e * x2 * x2;
  }
  *m1 = s1 / s0;
  *m2 = s2 / s0;
  *m4 = s4 / s0;
  return lmax + std::log(s0 * h);
}

// Piecewise-exponential envelope: piece k covers [left[k], right[k]] with log-envelope
// y[k] + slope[k] (x - x0[k]); the first and last pieces are the tails (infinite).
struct QuarticEnvelope {
  static constexpr int kMaxNodes = 16, kMaxPieces = 2 * kMaxNodes;
  int pieces = 0;
  double left[kMaxPieces], right[kMaxPieces], x0[kMaxPieces], y[kMaxPieces], slope[kMaxPieces];
  double cum[kMaxPieces + 1];  // cumulative masses relative to exp(ref)
  double ref = 0.0;
  double alpha, beta, j;

  QuarticEnvelope(double alpha_, double beta_, double j_) : alpha(alpha_), beta(beta_), j(j_) {
    double m[2];
    const int n = quartic_maxima(alpha, beta, j, m);
    double nodes[kMaxNodes];
    int k = 0;
    static constexpr double offsets[5] = {-2.4, -1.0, 0.0, 1.0, 2.4};
    for (int i = 0; i < n; ++i) {
      const double s = quartic_width(alpha, beta, m[i]);
      for (double o : offsets) nodes[k++] = m[i] + o * s;
    }
    const double xc = alpha < 0.0 ? std::sqrt(-alpha / (6.0 * beta)) : 0.0;
    if (alpha < 0.0) {
      nodes[k++] = -xc;
      nodes[k++] = xc;
    }
    std::sort(nodes, nodes + k);
    // the outer nodes must lie in the concave tails with l' > 0 on the left, < 0 on the right
    const double s0 = quartic_width(alpha, beta, m[0]), s1 = quartic_width(alpha, beta, m[n - 1]);
    for (double st = s0; !(quartic_slope(alpha, beta, j, nodes[0]) > 0.0 && nodes[0] <= -xc); st *= 2.0)
      nodes[0] -= st;
    for (double st = s1; !(quartic_slope(alpha, beta, j, nodes[k - 1]) < 0.0 && nodes[k - 1] >= xc); st *= 2.0)
      nodes[k - 1] += st;
    int u = 1;  // drop coincident nodes
    for (int i = 1; i < k; ++i)
      if (nodes[i] > nodes[u - 1]) nodes[u++] = nodes[i];
    k = u;
    double l[kMaxNodes], d[kMaxNodes];
    for (int i = 0; i < k; ++i) {
      l[i] = quartic_log_density(alpha, beta, j, nodes[i]);
      d[i] = quartic_slope(alpha, beta, j, nodes[i]);
    }
    const double inf = std::numeric_limits<double>::infinity();
    add(-inf, nodes[0], nodes[0], l[0], d[0]);
    for (int i = 0; i + 1 < k; ++i) {
      const double a = nodes[i], b = nodes[i + 1], mid = 0.5 * (a + b);
      if (alpha < 0.0 && mid > -xc && mid < xc) {  // convex: the chord
        add(a, b, a, l[i], (l[i + 1] - l[i]) / (b - a));
      } else {  // concave: tangents at both ends, joined where they cross (clamped)
        double z = (l[i + 1] - l[i] - d[i + 1] * b + d[i] * a) / (d[i] - d[i + 1]);
        if (!(z >= a)) z = a;  // also catches NaN (parallel tangents)
        if (z > b) z = b;
        if (z > a) add(a, z, a, l[i], d[i]);
        if (z < b) add(z, b, b, l[i + 1], d[i + 1]);
      }
    }
    add(nodes[k - 1], inf, nodes[k - 1], l[k - 1], d[k - 1]);
    ref = -inf;
    for (int p = 0; p < pieces; ++p) ref = std::fmax(ref, std::fmax(at(p, left[p]), at(p, right[p])));
    cum[0] = 0.0;
    for (int p = 0; p < pieces; ++p) cum[p + 1] = cum[p] + mass(p);
  }

  void add(double a, double b, double x, double yy, double s) {
    left[pieces] = a, right[pieces] = b, x0[pieces] = x, y[pieces] = yy, slope[pieces] = s;
    ++pieces;
  }
  double at(int p, double x) const {  // log-envelope at a finite end (tails: their finite end)
    if (!std::isfinite(x)) return -std::numeric_limits<double>::infinity();
    return y[p] + slope[p] * (x - x0[p]);
  }
  double value(int p, double x) const { return y[p] + slope[p] * (x - x0[p]); }
  double mass(int p) const {
    const double s = slope[p];
    if (!std::isfinite(left[p])) return std::exp(at(p, right[p]) - ref) / s;   // s > 0
    if (!std::isfinite(right[p])) return std::exp(at(p, left[p]) - ref) / -s;  // s < 0
    const double w = right[p] - left[p];
    if (s == 0.0) return w * std::exp(at(p, left[p]) - ref);
    if (s > 0.0) return std::exp(at(p, right[p]) - ref) * (-std::expm1(-s * w)) / s;
    return std::exp(at(p, left[p]) - ref) * std::expm1(s * w) / s;
  }
  // inverse CDF of piece p at v in [0, 1)
  double invert(int p, double v) const {
    const double s = slope[p];
    if (!std::isfinite(left[p])) return right[p] + std::log1p(-v) / s;
    if (!std::isfinite(right[p])) return left[p] + std::log1p(-v) / s;
    const double w = right[p] - left[p];
    if (s == 0.0) return left[p] + v * w;
    if (s > 0.0) return std::fmax(left[p], right[p] + std::log1p((1.0 - v) * std::expm1(-s * w)) / s);
    return std::fmin(right[p], left[p] + std::log1p(v * std::expm1(s * w)) / s);
  }
  // the envelope's inverse CDF at u in [0, 1): (x, log-envelope at x)
  double draw(double u, double* log_env) const {
    const double t = u * cum[pieces];
    int p = 0;
    while (p + 1 < pieces && cum[p + 1] <= t) ++p;
    const double v = std::fmin(std::fmax((t - cum[p]) / (cum[p + 1] - cum[p]), 0.0), 1.0 - 0x1p-53);
    const double x = invert(p, v);
    *log_env = value(p, x);
    return x;
  }
};

// One exact draw. Attempt a uses the Philox block at counter (c0, c1, c2, a): words 0, 1 place
// the proposal, words 2, 3 decide its acceptance. *attempts is incremented per proposal.
inline double quartic_draw(double alpha, double beta, double j, PhiloxKey key, uint32_t c0, uint32_t c1,
                           uint32_t c2, int64_t* attempts) {
  if (!quartic_valid(alpha, beta) || !std::isfinite(j)) return std::numeric_limits<double>::quiet_NaN();
  if (beta == 0.0) {  // Gaussian: Box-Muller on two 52-bit uniforms
    uint32_t w0 = c0, w1 = c1, w2 = c2, w3 = 0;
    philox4x32_10(w0, w1, w2, w3, key.k0, key.k1);
    ++*attempts;
    const double u1 = 1.0 - uniform52(w0, w1), u2 = uniform52(w2, w3);  // u1 in (0, 1]
    const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    return j / (2.0 * alpha) + z / std::sqrt(2.0 * alpha);
  }
  const QuarticEnvelope env(alpha, beta, j);
  for (uint32_t a = 0; a < (1u << 20); ++a) {
    uint32_t w0 = c0, w1 = c1, w2 = c2, w3 = a;
    philox4x32_10(w0, w1, w2, w3, key.k0, key.k1);
    ++*attempts;
    double log_env;
    const double x = env.draw(uniform52(w0, w1), &log_env);
    const double u = uniform52(w2, w3);
    if (u < std::exp(quartic_log_density(alpha, beta, j, x) - log_env)) return x;
  }
  return std::numeric_limits<double>::quiet_NaN();  // unreachable unless the envelope is broken
}

inline void quartic_integral_rows(int64_t rows, int64_t units, const double* alpha, const double* beta,
                                  const double* j, double* logz, double* m1, double* m2, double* m4) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t i = r * units + u;
      double a1, a2, a4;
      const double lz = quartic_integral(alpha[u], beta[u], j[i], &a1, &a2, &a4);
      if (logz) logz[i] = lz;
      if (m1) m1[i] = a1;
      if (m2) m2[i] = a2;
      if (m4) m4[i] = a4;
    }
}

inline int64_t quartic_sample_rows(int64_t rows, int64_t units, const double* alpha, const double* beta,
                                   const double* j, uint64_t index0, uint32_t step, PhiloxKey key, double* x) {
  int64_t attempts = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t i = r * units + u;
      const uint64_t idx = index0 + static_cast<uint64_t>(i);
      x[i] = quartic_draw(alpha[u], beta[u], j[i], key, static_cast<uint32_t>(idx), static_cast<uint32_t>(idx >> 32),
                          step, &attempts);
    }
  return attempts;
}

}  // namespace qftml
