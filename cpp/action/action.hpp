// action.hpp -- the inhomogeneous phi^4 action of DESIGN 1.1 on the distributed lattice.
//
//   S = - sum_{x,l} c_l[x] phi_x phi_{x+e_l} + sum_x (a[x] phi^2 + b[x] phi^4 + r[x] phi)
// with links l = 0..d-1 the unit vectors (couplings w) and l = d.. the extra offsets (g).
//
// Exports:
//   Action(geometry, field_type, extra_offsets, w, g, a, b, r)
//       couplings as natural-order local arrays (w: V x d, g: V x n_extra, a, b, r: V); stored
//       checkerboard ordered with ghosts; rejects non-normalisable couplings on every rank
//   action(field)                 global S (collective; face ghosts must be fresh, as they are
//                                 after sweeps; edge/corner ghosts are refreshed if needed)
//   local_action(field)           S on this rank's block (not reduced; fixed-point sum as in action)
//   gradient_densities(field, ...)  dS/dw, dS/dg, dS/da, dS/db, dS/dr per site, natural order
//   density_row(field, columns, row, size)   one fused pass for learning: the densities of the
//                                 families in `columns` written into one preallocated row (tied
//                                 families: their local sum), returns local_action(field)
//   get_couplings(...)            the couplings back in natural order
//   shift(l, c, dir)              where the neighbour x +- e_l lives (flat delta, parity change)
//   bytes()                       memory of the coupling arrays (stored per site even when homogeneous)
#pragma once
#include <array>
#include <vector>

#include "comms/reproducible_sum.hpp"
#include "geometry/checkerboard_layout.hpp"
#include "geometry/geometry.hpp"
#include "lattice/field.hpp"

namespace qftml {

enum class FieldType { real = 0, ising = 1 };

// A block of columns of Action::density_row: family 0..4 = w, g, a, b, r, from row[start]; per
// site in natural order (w: V x d, g: V x n_extra, a, b, r: V), or, tied, one local sum.
struct DensityColumns {
  int family;
  bool tied;
  int64_t start;
};

class Action {
 public:
  Action(const Geometry& geometry, FieldType field_type,
         const std::vector<std::vector<int>>& extra_offsets, const double* w, const double* g,
         const double* a, const double* b, const double* r);

  const Geometry& geometry() const { return geometry_; }
  const CheckerboardLayout& layout() const { return layout_; }
  FieldType field_type() const { return field_type_; }
  int n_links() const { return static_cast<int>(offsets_.size()); }
  int n_extra() const { return n_links() - geometry_.dim(); }
  const std::vector<int>& offset(int l) const { return offsets_[l]; }
  bool homogeneous() const { return homogeneous_; }
  const double* coupling(int l, int p) const { return links_[l][p].data(); }
  const double* a(int p) const { return a_[p].data(); }
  const double* b(int p) const { return b_[p].data(); }
  const double* r(int p) const { return r_[p].data(); }
  double coupling0(int l) const { return links0_[l]; }
  double a0() const { return a0_; }
  double b0() const { return b0_; }
  double r0() const { return r0_; }
  const NeighbourShift& shift(int l, int c, int dir) const { return shifts_[l][c][dir > 0 ? 1 : 0]; }

  double action(const Field& field) const;
  double local_action(const Field& field) const;
  double density_row(const Field& field, const std::vector<DensityColumns>& columns, double* row,
                     int64_t row_size) const;
  void gradient_densities(const Field& field, double* dw, double* dg, double* da, double* db,
                          double* dr) const;
  void get_couplings(double* w, double* g, double* a, double* b, double* r) const;
  size_t bytes() const {
    size_t n = 0;
    for (const auto& l : links_) n += l[0].capacity() + l[1].capacity();
    for (const auto* fam : {&a_, &b_, &r_}) n += (*fam)[0].capacity() + (*fam)[1].capacity();
    return n * sizeof(double);
  }

 private:
  void validate();
  template <class RowTerms>
  fixed128 action_rows(const Field& field, RowTerms&& row_terms) const;

  const Geometry& geometry_;
  CheckerboardLayout layout_;
  FieldType field_type_;
  std::vector<std::vector<int>> offsets_;
  std::vector<std::array<std::vector<double>, 2>> links_;
  std::array<std::vector<double>, 2> a_, b_, r_;
  bool homogeneous_ = false;
  std::vector<double> links0_;
  double a0_ = 0, b0_ = 0, r0_ = 0;
  std::vector<std::array<std::array<NeighbourShift, 2>, 2>> shifts_;
};

}  // namespace qftml
