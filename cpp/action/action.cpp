// action.cpp -- coupling storage, normalisability checks, action value and gradient densities.
#include "action/action.hpp"

#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "comms/halo_exchange.hpp"
#include "comms/reproducible_sum.hpp"

namespace qftml {

Action::Action(const Geometry& geometry, FieldType field_type,
               const std::vector<std::vector<int>>& extra_offsets, const double* w, const double* g,
               const double* a, const double* b, const double* r)
    : geometry_(geometry), layout_(geometry.local_shape()), field_type_(field_type) {
  const int d = geometry.dim();
  for (int mu = 0; mu < d; ++mu) {
    std::vector<int> e(d, 0);
    e[mu] = 1;
    offsets_.push_back(e);
  }
  for (const auto& e : extra_offsets) {
    bool zero = true, in_range = true;
    for (int v : e) zero = zero && v == 0, in_range = in_range && v >= -1 && v <= 1;
    if (static_cast<int>(e.size()) != d || zero || !in_range) {
      std::ostringstream s;
      s << "extra link offset (";
      for (size_t i = 0; i < e.size(); ++i) s << (i ? "," : "") << e[i];
      s << ") must have " << d << " entries in {-1, 0, 1}, not all zero";
      throw std::invalid_argument(s.str());
    }
    offsets_.push_back(e);
  }
  const int n_links = static_cast<int>(offsets_.size());
  if (2 * n_links > 32) throw std::invalid_argument("too many extra link offsets (at most 12)");
  const int n_extra = n_links - d;

  links_.resize(n_links);
  for (auto& l : links_) l[0].assign(layout_.size(), 0.0), l[1].assign(layout_.size(), 0.0);
  for (auto* fam : {&a_, &b_, &r_}) (*fam)[0].assign(layout_.size(), 0.0), (*fam)[1].assign(layout_.size(), 0.0);
  int64_t i = 0;
  layout_.for_each_site([&](const int*, int p, int64_t flat) {
    for (int mu = 0; mu < d; ++mu) links_[mu][p][flat] = w[i * d + mu];
    for (int l = 0; l < n_extra; ++l) links_[d + l][p][flat] = g[i * n_extra + l];
    a_[p][flat] = a[i];
    b_[p][flat] = b[i];
    r_[p][flat] = r[i];
    ++i;
  });
  // Backward links read the coupling stored at x - e, so link couplings need their ghosts.
  HaloExchange halo(geometry, layout_, /*corners=*/true);
  for (auto& l : links_) halo.exchange(l[0].data()), halo.exchange(l[1].data());

  shifts_.resize(n_links);
  for (int l = 0; l < n_links; ++l)
    for (int c = 0; c < 2; ++c) {
      std::vector<int> back(d);
      for (int mu = 0; mu < d; ++mu) back[mu] = -offsets_[l][mu];
      shifts_[l][c][1] = layout_.neighbour(offsets_[l].data(), c);
      shifts_[l][c][0] = layout_.neighbour(back.data(), c);
    }
  validate();
}

void Action::validate() {
  const int n_links = this->n_links();
  const int n_fam = n_links + 3;
  // mins[f] and -maxs[f] of every family in one MIN allreduce, plus failure counts (as -count).
  std::vector<double> red(2 * n_fam + 2, std::numeric_limits<double>::infinity());
  double nonfinite = 0;
  auto fold = [&](int f, double v) {
    if (!std::isfinite(v)) nonfinite += 1;
    red[f] = std::fmin(red[f], v);
    red[n_fam + f] = std::fmin(red[n_fam + f], -v);
  };
  layout_.for_each_site([&](const int*, int p, int64_t flat) {
    for (int l = 0; l < n_links; ++l) fold(l, links_[l][p][flat]);
    fold(n_links, a_[p][flat]);
    fold(n_links + 1, b_[p][flat]);
    fold(n_links + 2, r_[p][flat]);
  });
  red[2 * n_fam] = -nonfinite;
  // Gershgorin: 2 a[x] > sum of |couplings| of the links at x proves the quadratic form positive.
  double not_dominant = 0;
  layout_.for_each_site([&](const int* x, int p, int64_t flat) {
    const int c = x[layout_.dim() - 1] & 1;
    double off = 0;
    for (int l = 0; l < n_links; ++l) {
      const NeighbourShift& bk = shifts_[l][c][0];
      off += std::fabs(links_[l][p][flat]) + std::fabs(links_[l][p ^ bk.dparity][flat + bk.delta]);
    }
    if (!(2.0 * a_[p][flat] > off)) not_dominant += 1;
  });
  red[2 * n_fam + 1] = -not_dominant;
  MPI_Allreduce(MPI_IN_PLACE, red.data(), static_cast<int>(red.size()), MPI_DOUBLE, MPI_MIN,
                geometry_.comm());
  auto mn = [&](int f) { return red[f]; };
  auto mx = [&](int f) { return -red[n_fam + f]; };
  if (red[2 * n_fam] < 0) {
    throw std::invalid_argument("couplings contain " + std::to_string(int64_t(-red[2 * n_fam])) +
                                " NaN or infinite values");
  }
  homogeneous_ = true;
  for (int f = 0; f < n_fam; ++f) homogeneous_ = homogeneous_ && mn(f) == mx(f);
  links0_.resize(n_links);
  for (int l = 0; l < n_links; ++l) links0_[l] = mn(l);
  a0_ = mn(n_links), b0_ = mn(n_links + 1), r0_ = mn(n_links + 2);
  if (field_type_ == FieldType::ising) return;  // finite state space: always normalisable
  const double bmin = mn(n_links + 1), bmax = mx(n_links + 1);
  std::ostringstream s;
  if (bmin < 0) {
    s << "quartic coupling b < 0 somewhere (min b = " << bmin
      << "): exp(-S) is not normalisable; every b[x] must be > 0 (or b = 0 everywhere)";
    throw std::invalid_argument(s.str());
  }
  if (bmin == 0 && bmax > 0) {
    s << "quartic coupling b = 0 at some sites and > 0 at others (max b = " << bmax
      << "): use b > 0 everywhere, or b = 0 everywhere for a Gaussian action";
    throw std::invalid_argument(s.str());
  }
  if (bmax == 0 && red[2 * n_fam + 1] < 0) {
    s << "Gaussian action (b = 0) whose quadratic form is not shown positive definite: "
      << int64_t(-red[2 * n_fam + 1])
      << " sites have 2 a[x] <= sum of |link couplings| at x (min a = " << mn(n_links)
      << "); exp(-S) is not normalisable. Increase a (mu2) or use b > 0";
    throw std::invalid_argument(s.str());
  }
}

// Fixed-point sum over this block of the per-site terms of S, row by row; row_terms(p, c, i0, phi,
// link values) sees each row (i0: natural index of its k = 0 site, link l's products phi_x phi_{x+e_l}
// in lk[l]) so density_row can write densities in the same pass.
template <class RowTerms>
fixed128 Action::action_rows(const Field& field, RowTerms&& row_terms) const {
  const int d = geometry_.dim(), n_links = this->n_links();
  const int64_t n = layout_.half_row();
  if (n_extra() > 0) field.ensure_corner_ghosts();
  std::vector<int64_t> nat_stride(d, 1);
  for (int mu = d - 2; mu >= 0; --mu) nat_stride[mu] = nat_stride[mu + 1] * layout_.local(mu + 1);
  fixed128 total = 0;
  std::vector<double> s(n);
  std::vector<const double*> nbs(n_links);
  layout_.for_each_row([&](int p, int64_t base, int c, const int* x) {
    const double* __restrict phi = field.parity(p) + base;
    const double* __restrict a = a_[p].data() + base;
    const double* __restrict b = b_[p].data() + base;
    const double* __restrict r = r_[p].data() + base;
    for (int64_t k = 0; k < n; ++k) {
      const double f2 = phi[k] * phi[k];
      s[k] = a[k] * f2 + b[k] * f2 * f2 + r[k] * phi[k];
    }
    for (int l = 0; l < n_links; ++l) {
      const NeighbourShift& fw = shifts_[l][c][1];
      const double* __restrict nb = field.parity(p ^ fw.dparity) + base + fw.delta;
      const double* __restrict w = links_[l][p].data() + base;
      for (int64_t k = 0; k < n; ++k) s[k] -= w[k] * (phi[k] * nb[k]);
      nbs[l] = nb;
    }
    int64_t i0 = c;
    for (int mu = 0; mu < d - 1; ++mu) i0 += x[mu] * nat_stride[mu];
    row_terms(i0, phi, nbs.data());
    total += sum_fixed(s.data(), n);
  });
  return total;
}

double Action::action(const Field& field) const {
  // Fixed-point sum of per-site terms: the same bits on every process grid (reproducible_sum.hpp).
  fixed128 total = action_rows(field, [](int64_t, const double*, const double* const*) {});
  allreduce_fixed(&total, 1, geometry_.comm());
  return from_fixed(total);
}

double Action::local_action(const Field& field) const {
  return from_fixed(action_rows(field, [](int64_t, const double*, const double* const*) {}));
}

// The densities are those of gradient_densities bit for bit; tied sums are fixed-point sums.
double Action::density_row(const Field& field, const std::vector<DensityColumns>& columns, double* row,
                           int64_t row_size) const {
  const int d = geometry_.dim(), n_extra = this->n_extra(), n_links = this->n_links();
  const int64_t V = geometry_.local_volume(), n = layout_.half_row();
  const int64_t width[5] = {d, n_extra, 1, 1, 1};
  int64_t start[5] = {-1, -1, -1, -1, -1};
  bool tied[5] = {};
  for (const DensityColumns& col : columns) {
    if (col.family < 0 || col.family > 4) throw std::invalid_argument("density family must be 0..4 (w, g, a, b, r)");
    const int64_t size = col.tied ? 1 : V * width[col.family];
    if (col.start < 0 || col.start + size > row_size)
      throw std::invalid_argument("density columns of family " + std::to_string(col.family) + " do not fit the row");
    start[col.family] = col.start, tied[col.family] = col.tied;
  }
  fixed128 tied_sum[5] = {};
  std::vector<double> t(n);
  auto put = [&](int f, int64_t i0, int64_t stride, int64_t offset, auto&& value) {
    if (start[f] < 0) return;
    if (tied[f]) {
      for (int64_t k = 0; k < n; ++k) t[k] = value(k);
      tied_sum[f] += sum_fixed(t.data(), n);
    } else {
      double* __restrict out = row + start[f] + offset;
      for (int64_t k = 0; k < n; ++k) out[(i0 + 2 * k) * stride] = value(k);
    }
  };
  const fixed128 total = action_rows(field, [&](int64_t i0, const double* phi, const double* const* nbs) {
    for (int l = 0; l < n_links; ++l) {
      const double* nb = nbs[l];
      const auto link = [&](int64_t k) { return -phi[k] * nb[k]; };
      if (l < d) put(0, i0, d, l, link);
      else put(1, i0, n_extra, l - d, link);
    }
    put(2, i0, 1, 0, [&](int64_t k) { return phi[k] * phi[k]; });
    put(3, i0, 1, 0, [&](int64_t k) { return phi[k] * phi[k] * phi[k] * phi[k]; });
    put(4, i0, 1, 0, [&](int64_t k) { return phi[k]; });
  });
  for (int f = 0; f < 5; ++f)
    if (start[f] >= 0 && tied[f]) row[start[f]] = from_fixed(tied_sum[f]);
  return from_fixed(total);
}

void Action::gradient_densities(const Field& field, double* dw, double* dg, double* da, double* db,
                                double* dr) const {
  const int d = geometry_.dim(), n_extra = this->n_extra();
  if (n_extra > 0) field.ensure_corner_ghosts();
  int64_t i = 0;
  layout_.for_each_site([&](const int* x, int p, int64_t flat) {
    const int c = x[d - 1] & 1;
    const double f = field.parity(p)[flat];
    for (int l = 0; l < d + n_extra; ++l) {
      const NeighbourShift& fw = shifts_[l][c][1];
      const double link = -f * field.parity(p ^ fw.dparity)[flat + fw.delta];
      if (l < d) {
        if (dw) dw[i * d + l] = link;
      } else if (dg) {
        dg[i * n_extra + (l - d)] = link;
      }
    }
    if (da) da[i] = f * f;
    if (db) db[i] = f * f * f * f;
    if (dr) dr[i] = f;
    ++i;
  });
}

void Action::get_couplings(double* w, double* g, double* a, double* b, double* r) const {
  const int d = geometry_.dim(), n_extra = this->n_extra();
  int64_t i = 0;
  layout_.for_each_site([&](const int*, int p, int64_t flat) {
    for (int mu = 0; mu < d; ++mu) w[i * d + mu] = links_[mu][p][flat];
    for (int l = 0; l < n_extra; ++l) g[i * n_extra + l] = links_[d + l][p][flat];
    a[i] = a_[p][flat];
    b[i] = b_[p][flat];
    r[i] = r_[p][flat];
    ++i;
  });
}

}  // namespace qftml
