// field.hpp -- a real scalar field on the distributed lattice, checkerboard ordered, with ghosts.
//
// Exports:
//   Field(geometry)          zero field (both parity arrays, ghosts included)
//   set_local(x) / get_local(out)   this rank's block in natural (row-major) order; set_local
//                                   refreshes the ghosts (collective)
//   exchange_halos()         fill every ghost, edges and corners included (collective)
//   mark_corners_stale()     a sampler that exchanged faces only says so
//   ensure_corner_ghosts()   exchange_halos() if edges/corners are stale (collective; every rank
//                            sees the same history, so all agree); diagonal links need them
//   gather(root)             the global lattice in natural order on `root` (collective; only on
//                            explicit request, small volumes)
//   scatter(global, root)    the inverse of gather
//   parity(p)                the padded array of parity p (see checkerboard_layout.hpp)
//   bytes()                  memory of the two arrays and of its halo exchange
#pragma once
#include <vector>

#include "comms/halo_exchange.hpp"
#include "geometry/checkerboard_layout.hpp"
#include "geometry/geometry.hpp"

namespace qftml {

class Field {
 public:
  explicit Field(const Geometry& geometry);
  const Geometry& geometry() const { return geometry_; }
  const CheckerboardLayout& layout() const { return layout_; }
  double* parity(int p) { return data_[p].data(); }
  const double* parity(int p) const { return data_[p].data(); }

  void set_local(const double* natural);
  void get_local(double* natural) const;
  void exchange_halos();
  void mark_corners_stale() { corners_fresh_ = false; }
  // Ghosts are a cache of the neighbours' values, so refreshing them is allowed on a const Field.
  void ensure_corner_ghosts() const {
    if (!corners_fresh_) const_cast<Field*>(this)->exchange_halos();
  }
  std::vector<double> gather(int root) const;
  size_t bytes() const { return (data_[0].capacity() + data_[1].capacity()) * sizeof(double) + halo_.bytes(); }
  void scatter(const double* global, int root);

 private:
  const Geometry& geometry_;
  CheckerboardLayout layout_;
  std::vector<double> data_[2];
  HaloExchange halo_;
  bool corners_fresh_ = true;
};

}  // namespace qftml
