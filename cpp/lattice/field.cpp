// field.cpp -- natural-order access, gather/scatter and ghost refresh of a Field.
#include "lattice/field.hpp"

namespace qftml {

Field::Field(const Geometry& geometry)
    : geometry_(geometry), layout_(geometry.local_shape()), halo_(geometry, layout_, /*corners=*/true) {
  data_[0].assign(layout_.size(), 0.0);
  data_[1].assign(layout_.size(), 0.0);
}

void Field::set_local(const double* natural) {
  int64_t i = 0;
  layout_.for_each_site([&](const int*, int p, int64_t flat) { data_[p][flat] = natural[i++]; });
  exchange_halos();
}

void Field::get_local(double* natural) const {
  int64_t i = 0;
  layout_.for_each_site([&](const int*, int p, int64_t flat) { natural[i++] = data_[p][flat]; });
}

void Field::exchange_halos() {
  halo_.exchange(data_[0].data());
  halo_.exchange(data_[1].data());
  corners_fresh_ = true;
}

namespace {
// Visit (global index, local natural index) of every site of the block of rank `coords`.
template <class F>
void for_each_block_site(const Geometry& g, const std::vector<int>& coords, F&& f) {
  const int d = g.dim();
  std::vector<int> x(d, 0);
  const int64_t n = g.local_volume();
  for (int64_t i = 0; i < n; ++i) {
    int64_t gi = 0;
    for (int mu = 0; mu < d; ++mu)
      gi += static_cast<int64_t>(coords[mu] * g.local_shape()[mu] + x[mu]) * g.global_stride(mu);
    f(gi, i);
    for (int mu = d - 1; mu >= 0; --mu) {
      if (++x[mu] < g.local_shape()[mu]) break;
      x[mu] = 0;
    }
  }
}
}  // namespace

std::vector<double> Field::gather(int root) const {
  const int64_t n = geometry_.local_volume();
  std::vector<double> local(n);
  get_local(local.data());
  const bool is_root = geometry_.rank() == root;
  std::vector<double> all(is_root ? n * geometry_.size() : 0), global;
  MPI_Gather(local.data(), static_cast<int>(n), MPI_DOUBLE, all.data(), static_cast<int>(n),
             MPI_DOUBLE, root, geometry_.comm());
  if (!is_root) return global;
  global.resize(geometry_.global_volume());
  std::vector<int> coords(geometry_.dim());
  for (int rank = 0; rank < geometry_.size(); ++rank) {
    MPI_Cart_coords(geometry_.comm(), rank, geometry_.dim(), coords.data());
    const double* block = all.data() + rank * n;
    for_each_block_site(geometry_, coords, [&](int64_t gi, int64_t i) { global[gi] = block[i]; });
  }
  return global;
}

void Field::scatter(const double* global, int root) {
  const int64_t n = geometry_.local_volume();
  const bool is_root = geometry_.rank() == root;
  std::vector<double> all(is_root ? n * geometry_.size() : 0), local(n);
  if (is_root) {
    std::vector<int> coords(geometry_.dim());
    for (int rank = 0; rank < geometry_.size(); ++rank) {
      MPI_Cart_coords(geometry_.comm(), rank, geometry_.dim(), coords.data());
      double* block = all.data() + rank * n;
      for_each_block_site(geometry_, coords, [&](int64_t gi, int64_t i) { block[i] = global[gi]; });
    }
  }
  MPI_Scatter(all.data(), static_cast<int>(n), MPI_DOUBLE, local.data(), static_cast<int>(n),
              MPI_DOUBLE, root, geometry_.comm());
  set_local(local.data());
}

}  // namespace qftml
