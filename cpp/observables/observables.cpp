// observables.cpp -- one pass over the local block, one allreduce.
#include "observables/observables.hpp"

namespace qftml {

Measurement measure(const Field& field, const Action& action) {
  const Geometry& g = action.geometry();
  const CheckerboardLayout& layout = action.layout();
  const int n_links = action.n_links();
  const int64_t n = layout.half_row();
  const int L0 = g.shape()[0];
  // [M, phi^2, phi^4, S_local, links..., slices...]
  std::vector<double> v(4 + n_links + L0, 0.0);
  layout.for_each_row([&](int p, int64_t base, int c, const int* x) {
    const double* phi = field.parity(p) + base;
    const double* a = action.a(p) + base;
    const double* b = action.b(p) + base;
    const double* r = action.r(p) + base;
    double m = 0, m2 = 0, m4 = 0, s = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double f = phi[k], f2 = f * f;
      m += f, m2 += f2, m4 += f2 * f2;
      s += a[k] * f2 + b[k] * f2 * f2 + r[k] * f;
    }
    for (int l = 0; l < n_links; ++l) {
      const NeighbourShift& fw = action.shift(l, c, +1);
      const double* nb = field.parity(p ^ fw.dparity) + base + fw.delta;
      const double* w = action.coupling(l, p) + base;
      double links = 0, wlinks = 0;
      for (int64_t k = 0; k < n; ++k) {
        const double pp = phi[k] * nb[k];
        links += pp;
        wlinks += w[k] * pp;
      }
      v[4 + l] += links;
      s -= wlinks;
    }
    v[0] += m, v[1] += m2, v[2] += m4, v[3] += s;
    v[4 + n_links + g.local_offset()[0] + x[0]] += m;
  });
  MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE, MPI_SUM, g.comm());
  Measurement out;
  out.magnetisation = v[0], out.sum_phi2 = v[1], out.sum_phi4 = v[2], out.action = v[3];
  out.link_sums.assign(v.begin() + 4, v.begin() + 4 + n_links);
  out.slice_sums.assign(v.begin() + 4 + n_links, v.end());
  return out;
}

}  // namespace qftml
