// geometry.hpp -- the global lattice, the process grid and this rank's block.
//
// Exports:
//   Geometry(shape, comm, grid)   validates shape and grid (on every rank, before any collective),
//                                 builds the periodic Cartesian communicator (the engine's own:
//                                 MPI_ERRORS_ARE_FATAL, see comms/requests.hpp)
//   choose_process_grid(shape, n) MPI_Dims_create's grid if it divides the lattice into blocks of
//                                 even extent, else the valid grid with the smallest halo surface
//   Geometry::neighbour(mu, dir)  rank of the neighbouring block in direction +-mu
//   global_index(x)               lexicographic index of a global site (last axis fastest)
#pragma once
#include <mpi.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace qftml {

constexpr int kMaxDim = 4;

std::vector<int> choose_process_grid(const std::vector<int>& shape, int n_ranks);

class Geometry {
 public:
  Geometry(const std::vector<int>& shape, MPI_Comm comm, const std::vector<int>& grid);
  ~Geometry();
  Geometry(const Geometry&) = delete;
  Geometry& operator=(const Geometry&) = delete;

  int dim() const { return dim_; }
  const std::vector<int>& shape() const { return shape_; }
  const std::vector<int>& grid() const { return grid_; }
  const std::vector<int>& coords() const { return coords_; }
  const std::vector<int>& local_shape() const { return local_shape_; }
  const std::vector<int>& local_offset() const { return local_offset_; }
  int64_t global_volume() const { return global_volume_; }
  int64_t local_volume() const { return local_volume_; }
  MPI_Comm comm() const { return cart_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int neighbour(int mu, int dir) const { return neighbours_[2 * mu + (dir > 0 ? 1 : 0)]; }
  int64_t global_stride(int mu) const { return global_stride_[mu]; }

 private:
  int dim_;
  std::vector<int> shape_, grid_, coords_, local_shape_, local_offset_;
  int64_t global_volume_ = 1, local_volume_ = 1;
  std::array<int64_t, kMaxDim> global_stride_{};
  MPI_Comm cart_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::array<int, 2 * kMaxDim> neighbours_{};
};

}  // namespace qftml
