// observables.cpp -- one pass over the local block, one allreduce; sums are reproducible.
#include "observables/observables.hpp"

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
  // result is the same bit for bit on any process grid (reproducible_sum.hpp).
  std::vector<fixed128> v(4 + n_links + L0, 0);
  const NeighbourShift* fw[2][16];  // Action allows at most 16 links
  for (int c = 0; c < 2; ++c)
    for (int l = 0; l < n_links; ++l) fw[c][l] = &action.shift(l, c, +1);
  layout.for_each_row([&](int p, int64_t base, int c, const int* x) {
    const double* phi = field.parity(p) + base;
    const double* a = action.a(p) + base;
    const double* b = action.b(p) + base;
    const double* r = action.r(p) + base;
    fixed128& slice = v[4 + n_links + g.local_offset()[0] + x[0]];
    for (int64_t k = 0; k < n; ++k) {
      const double f = phi[k], f2 = f * f;
      double s = a[k] * f2 + b[k] * f2 * f2 + r[k] * f;
      for (int l = 0; l < n_links; ++l) {
        const double pp = f * field.parity(p ^ fw[c][l]->dparity)[base + fw[c][l]->delta + k];
        v[4 + l] += to_fixed(pp);
        s -= action.coupling(l, p)[base + k] * pp;
      }
      const fixed128 ff = to_fixed(f);
      v[0] += ff;
      slice += ff;
      v[1] += to_fixed(f2);
      v[2] += to_fixed(f2 * f2);
      v[3] += to_fixed(s);
    }
  });
  allreduce_fixed(v.data(), static_cast<int>(v.size()), g.comm());
  Measurement out;
  out.magnetisation = from_fixed(v[0]), out.sum_phi2 = from_fixed(v[1]);
  out.sum_phi4 = from_fixed(v[2]), out.action = from_fixed(v[3]);
  for (int l = 0; l < n_links; ++l) out.link_sums.push_back(from_fixed(v[4 + l]));
  for (int t = 0; t < L0; ++t) out.slice_sums.push_back(from_fixed(v[4 + n_links + t]));
  return out;
}

}  // namespace qftml
