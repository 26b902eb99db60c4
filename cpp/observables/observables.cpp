// observables.cpp -- one pass over the local block, one allreduce; sums are reproducible.
#include "observables/observables.hpp"

#include <cmath>

#include "comms/reproducible_sum.hpp"

namespace qftml {

Measurement measure(const Field& field, const Action& action) {
  const Geometry& g = action.geometry();
  const CheckerboardLayout& layout = action.layout();
  const int n_links = action.n_links();
  const int64_t n = layout.half_row();
  const int L0 = g.shape()[0];
  if (action.n_extra() > 0) field.ensure_corner_ghosts();
  // [M, phi^2, phi^4, S, links..., slices...] as fixed-point sums of per-site terms, so the
  // result is the same bit for bit on any process grid (reproducible_sum.hpp). Per row, the
  // terms go to small buffers in vectorisable loops, then into the fixed-point sums.
  // The last entry counts sites whose terms the fixed-point sums cannot hold (NaN, inf, or
  // |term| >= 2^50): if there is one anywhere, every result is NaN (callers refuse it).
  constexpr double kTermMax = 1125899906842624.0;  // 2^50
  std::vector<fixed128> v(5 + n_links + L0, 0);
  std::vector<double> f2(n), f4(n), s(n), pp(n);
  layout.for_each_row([&](int p, int64_t base, int c, const int* x) {
    const double* __restrict phi = field.parity(p) + base;
    const double* __restrict a = action.a(p) + base;
    const double* __restrict b = action.b(p) + base;
    const double* __restrict r = action.r(p) + base;
    for (int64_t k = 0; k < n; ++k) {
      f2[k] = phi[k] * phi[k];
      f4[k] = f2[k] * f2[k];
      s[k] = a[k] * f2[k] + b[k] * f4[k] + r[k] * phi[k];
    }
    for (int l = 0; l < n_links; ++l) {
      const NeighbourShift& fw = action.shift(l, c, +1);
      const double* __restrict nb = field.parity(p ^ fw.dparity) + base + fw.delta;
      const double* __restrict w = action.coupling(l, p) + base;
      for (int64_t k = 0; k < n; ++k) {
        pp[k] = phi[k] * nb[k];
        s[k] -= w[k] * pp[k];
      }
      v[4 + l] += sum_fixed(pp.data(), n);
    }
    int64_t bad = 0;
    for (int64_t k = 0; k < n; ++k) bad += !(f4[k] < kTermMax) | !(std::fabs(s[k]) < kTermMax);
    v.back() += bad;
    const fixed128 m = sum_fixed(phi, n);
    v[0] += m;
    v[4 + n_links + g.local_offset()[0] + x[0]] += m;
    v[1] += sum_fixed(f2.data(), n);
    v[2] += sum_fixed(f4.data(), n);
    v[3] += sum_fixed(s.data(), n);
  });
  allreduce_fixed(v.data(), static_cast<int>(v.size()), g.comm());
  Measurement out;
  if (v.back() != 0) {
    const double nan = std::nan("");
    out.magnetisation = out.sum_phi2 = out.sum_phi4 = out.action = nan;
    out.link_sums.assign(n_links, nan);
    out.slice_sums.assign(L0, nan);
    return out;
  }
  out.magnetisation = from_fixed(v[0]), out.sum_phi2 = from_fixed(v[1]);
  out.sum_phi4 = from_fixed(v[2]), out.action = from_fixed(v[3]);
  for (int l = 0; l < n_links; ++l) out.link_sums.push_back(from_fixed(v[4 + l]));
  for (int t = 0; t < L0; ++t) out.slice_sums.push_back(from_fixed(v[4 + n_links + t]));
  return out;
}

}  // namespace qftml
