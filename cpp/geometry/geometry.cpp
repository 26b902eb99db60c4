// geometry.cpp -- validation of lattice shape and process grid, Cartesian communicator.
#include "geometry/geometry.hpp"

#include <functional>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "comms/requests.hpp"

namespace qftml {
namespace {

std::string join(const std::vector<int>& v, const char* sep = "x") {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) s << (i ? sep : "") << v[i];
  return s.str();
}

// Empty string if `grid` cuts `shape` into blocks of even extent, else the reason it does not.
std::string grid_problem(const std::vector<int>& shape, const std::vector<int>& grid) {
  for (size_t mu = 0; mu < shape.size(); ++mu) {
    if (grid[mu] < 1) return "process grid extent " + std::to_string(grid[mu]) + " in direction " +
                             std::to_string(mu) + " is not positive";
    if (shape[mu] % grid[mu] != 0)
      return "lattice extent " + std::to_string(shape[mu]) + " in direction " + std::to_string(mu) +
             " is not divisible by " + std::to_string(grid[mu]) + " ranks";
    if ((shape[mu] / grid[mu]) % 2 != 0)
      return "local extent " + std::to_string(shape[mu] / grid[mu]) + " in direction " +
             std::to_string(mu) + " (" + std::to_string(shape[mu]) + "/" + std::to_string(grid[mu]) +
             ") is odd; the checkerboard needs even local extents";
  }
  return "";
}

}  // namespace

std::vector<int> choose_process_grid(const std::vector<int>& shape, int n_ranks) {
  const int d = static_cast<int>(shape.size());
  std::vector<int> dims(d, 0);
  MPI_Dims_create(n_ranks, d, dims.data());  // local computation, not a collective
  if (grid_problem(shape, dims).empty()) return dims;
  // Fall back to every factorisation of n_ranks; keep the one with the smallest halo surface.
  std::vector<int> best, cur(d, 1);
  double best_surface = std::numeric_limits<double>::infinity();
  std::function<void(int, int)> search = [&](int mu, int left) {
    if (mu == d - 1) {
      cur[mu] = left;
      if (!grid_problem(shape, cur).empty()) return;
      double vol = 1, surface = 0;
      for (int nu = 0; nu < d; ++nu) vol *= double(shape[nu]) / cur[nu];
      for (int nu = 0; nu < d; ++nu)
        if (cur[nu] > 1) surface += vol / (double(shape[nu]) / cur[nu]);
      if (surface < best_surface) best_surface = surface, best = cur;
      return;
    }
    for (int f = 1; f <= left; ++f)
      if (left % f == 0) cur[mu] = f, search(mu + 1, left / f);
  };
  search(0, n_ranks);
  if (best.empty())
    throw std::invalid_argument("lattice " + join(shape) + " cannot be split over " +
                                std::to_string(n_ranks) +
                                " ranks into blocks of even extent in every direction");
  return best;
}

Geometry::Geometry(const std::vector<int>& shape, MPI_Comm comm, const std::vector<int>& grid)
    : dim_(static_cast<int>(shape.size())), shape_(shape) {
  // Every check below is local, so every rank raises the same error before any collective.
  if (dim_ < 2 || dim_ > kMaxDim)
    throw std::invalid_argument("lattice dimension " + std::to_string(dim_) +
                                " is not supported (2, 3 or 4)");
  for (int mu = 0; mu < dim_; ++mu)
    if (shape[mu] < 2 || shape[mu] % 2 != 0)
      throw std::invalid_argument("lattice extent " + std::to_string(shape[mu]) + " in direction " +
                                  std::to_string(mu) + " of " + join(shape) +
                                  " must be even and >= 2 (periodic checkerboard)");
  check_mpi(MPI_Comm_size(comm, &size_), "MPI_Comm_size");
  if (grid.empty()) {
    grid_ = choose_process_grid(shape, size_);
  } else {
    if (static_cast<int>(grid.size()) != dim_)
      throw std::invalid_argument("process grid " + join(grid) + " has " +
                                  std::to_string(grid.size()) + " entries for a " +
                                  std::to_string(dim_) + "-dimensional lattice " + join(shape));
    int64_t prod = 1;
    for (int g : grid) prod *= g;
    if (prod != size_)
      throw std::invalid_argument("process grid " + join(grid) + " has " + std::to_string(prod) +
                                  " blocks but the communicator has " + std::to_string(size_) +
                                  " ranks");
    const std::string why = grid_problem(shape, grid);
    if (!why.empty())
      throw std::invalid_argument("process grid " + join(grid) + " does not fit lattice " +
                                  join(shape) + ": " + why);
    grid_ = grid;
  }
  std::vector<int> periods(dim_, 1);
  check_mpi(MPI_Cart_create(comm, dim_, grid_.data(), periods.data(), /*reorder=*/0, &cart_), "MPI_Cart_create");
  // The engine's own communicator: a failing MPI call on it aborts (comms/requests.hpp).
  check_mpi(MPI_Comm_set_errhandler(cart_, MPI_ERRORS_ARE_FATAL), "MPI_Comm_set_errhandler");
  MPI_Comm_rank(cart_, &rank_);
  coords_.assign(dim_, 0);
  MPI_Cart_coords(cart_, rank_, dim_, coords_.data());
  local_shape_.resize(dim_);
  local_offset_.resize(dim_);
  for (int mu = 0; mu < dim_; ++mu) {
    local_shape_[mu] = shape[mu] / grid_[mu];
    local_offset_[mu] = coords_[mu] * local_shape_[mu];
    global_volume_ *= shape[mu];
    local_volume_ *= local_shape_[mu];
    MPI_Cart_shift(cart_, mu, 1, &neighbours_[2 * mu], &neighbours_[2 * mu + 1]);
  }
  int64_t stride = 1;
  for (int mu = dim_ - 1; mu >= 0; --mu) global_stride_[mu] = stride, stride *= shape[mu];
}

Geometry::~Geometry() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && cart_ != MPI_COMM_NULL) MPI_Comm_free(&cart_);
}

}  // namespace qftml
