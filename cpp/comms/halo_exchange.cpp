// halo_exchange.cpp -- face index lists, packing and non-blocking exchange of ghost layers.
#include "comms/halo_exchange.hpp"

#include <array>

#include "comms/tags.hpp"

namespace qftml {
namespace {

// Flat indices of the box lo[mu] <= i_mu <= hi[mu] of a padded array, row-major.
std::vector<int64_t> box_indices(const CheckerboardLayout& layout, const std::array<int, kMaxDim>& lo,
                                 const std::array<int, kMaxDim>& hi) {
  const int d = layout.dim();
  std::vector<int64_t> out;
  std::array<int, kMaxDim> i = lo;
  while (true) {
    int64_t flat = 0;
    for (int mu = 0; mu < d; ++mu) flat += i[mu] * layout.stride(mu);
    out.push_back(flat);
    int mu = d - 1;
    for (; mu >= 0; --mu) {
      if (++i[mu] <= hi[mu]) break;
      i[mu] = lo[mu];
    }
    if (mu < 0) break;
  }
  return out;
}

}  // namespace

HaloExchange::HaloExchange(const Geometry& geometry, const CheckerboardLayout& layout, bool corners)
    : geometry_(geometry), dim_(layout.dim()), corners_(corners) {
  for (int mu = 0; mu < dim_; ++mu) {
    std::array<int, kMaxDim> lo{}, hi{};
    for (int nu = 0; nu < dim_; ++nu) {
      const bool with_ghosts = corners_ && nu < mu;
      lo[nu] = with_ghosts ? 0 : 1;
      hi[nu] = with_ghosts ? layout.padded(nu) - 1 : layout.padded(nu) - 2;
    }
    const int last = layout.padded(mu) - 1;
    const int face[2] = {1, last - 1}, ghost[2] = {0, last};
    for (int side = 0; side < 2; ++side) {
      lo[mu] = hi[mu] = face[side];
      send_idx_[mu][side] = box_indices(layout, lo, hi);
      lo[mu] = hi[mu] = ghost[side];
      recv_idx_[mu][side] = box_indices(layout, lo, hi);
      send_buf_[mu][side].resize(send_idx_[mu][side].size());
      recv_buf_[mu][side].resize(recv_idx_[mu][side].size());
    }
  }
  for (int mu = 0; mu < dim_; ++mu) local_[mu] = !corners_ && geometry.grid()[mu] == 1;
  requests_.reserve(4 * kMaxDim);
}

void HaloExchange::post(int mu, double* a) {
  const double t0 = MPI_Wtime();
  for (int side = 0; side < 2; ++side) {
    auto& buf = send_buf_[mu][side];
    const auto& idx = send_idx_[mu][side];
    for (size_t i = 0; i < idx.size(); ++i) buf[i] = a[idx[i]];
  }
  MPI_Comm comm = geometry_.comm();
  const int lower = geometry_.neighbour(mu, -1), upper = geometry_.neighbour(mu, +1);
  // The low ghost layer is the lower neighbour's high face (sent as side 1), and vice versa.
  MPI_Irecv(recv_buf_[mu][0].data(), static_cast<int>(recv_buf_[mu][0].size()), MPI_DOUBLE, lower,
            tags::halo(mu, 1), comm, requests_.add());
  MPI_Irecv(recv_buf_[mu][1].data(), static_cast<int>(recv_buf_[mu][1].size()), MPI_DOUBLE, upper,
            tags::halo(mu, 0), comm, requests_.add());
  MPI_Isend(send_buf_[mu][0].data(), static_cast<int>(send_buf_[mu][0].size()), MPI_DOUBLE, lower,
            tags::halo(mu, 0), comm, requests_.add());
  MPI_Isend(send_buf_[mu][1].data(), static_cast<int>(send_buf_[mu][1].size()), MPI_DOUBLE, upper,
            tags::halo(mu, 1), comm, requests_.add());
  pack_seconds_ += MPI_Wtime() - t0;
}

void HaloExchange::complete(int mu_begin, int mu_end, double* a) {
  const double t0 = MPI_Wtime();
  requests_.wait_all();
  const double t1 = MPI_Wtime();
  for (int mu = mu_begin; mu < mu_end; ++mu)
    for (int side = 0; side < 2 && !(local_[mu] && !corners_); ++side) {
      const auto& buf = recv_buf_[mu][side];
      const auto& idx = recv_idx_[mu][side];
      for (size_t i = 0; i < idx.size(); ++i) a[idx[i]] = buf[i];
    }
  wait_seconds_ += t1 - t0;
  pack_seconds_ += MPI_Wtime() - t1;
}

size_t HaloExchange::bytes() const {
  size_t b = 0;
  for (int mu = 0; mu < dim_; ++mu)
    for (int side = 0; side < 2; ++side)
      b += (send_idx_[mu][side].capacity() + recv_idx_[mu][side].capacity()) * sizeof(int64_t) +
           (send_buf_[mu][side].capacity() + recv_buf_[mu][side].capacity()) * sizeof(double);
  return b;
}

void HaloExchange::copy_local(int mu, double* a) {
  // This rank is its own neighbour in direction mu: the low ghosts are the high face and
  // vice versa. Done at once, so the sites next to these ghosts count as interior.
  const auto& lo_face = send_idx_[mu][0];
  const auto& hi_face = send_idx_[mu][1];
  const auto& lo_ghost = recv_idx_[mu][0];
  const auto& hi_ghost = recv_idx_[mu][1];
  for (size_t i = 0; i < lo_ghost.size(); ++i) a[lo_ghost[i]] = a[hi_face[i]];
  for (size_t i = 0; i < hi_ghost.size(); ++i) a[hi_ghost[i]] = a[lo_face[i]];
}

void HaloExchange::start(double* a) {
  if (corners_) {
    post(0, a);
    return;
  }
  for (int mu = 0; mu < dim_; ++mu) {
    if (local_[mu]) copy_local(mu, a);
    else post(mu, a);
  }
}

void HaloExchange::finish(double* a) {
  if (corners_) {
    complete(0, 1, a);
    for (int mu = 1; mu < dim_; ++mu) {
      post(mu, a);
      complete(mu, mu + 1, a);
    }
  } else {
    complete(0, dim_, a);
  }
}

}  // namespace qftml
