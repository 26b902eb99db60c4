// halo_exchange.hpp -- ghost-layer exchange of one checkerboard parity array.
//
// Exports:
//   HaloExchange(geometry, layout, corners)  precomputes face index lists and buffers
//   start(a)    packs faces and posts non-blocking sends/receives; interior work may follow.
//               Without corners, a direction in which the process grid has one rank is copied
//               at once (local_direction(mu)): its ghosts are fresh when start returns
//   finish(a)   waits, unpacks ghosts; with corners=true the directions 1..d-1 are then exchanged
//               one after the other, faces including earlier ghosts, which fills edge and corner
//               ghosts (needed by diagonal links); without corners all directions are in flight
//               together during start
//   exchange(a) start + finish
//   copy_local_row(a, base, half)  ghosts of one row in the last direction when that direction is
//               local (its two ends wrap onto each other): lets a sweep refresh a row at a time
//   wait_seconds()  time spent blocked in finish (how much of the exchange was not hidden)
//   bytes()     memory of the index lists and buffers
// Only one exchange may be in flight per object; requests still pending when it is destroyed are
// cancelled and completed (RequestSet). Tags: tags::halo(mu, side) (comms/tags.hpp).
#pragma once
#include <mpi.h>

#include <vector>

#include "comms/requests.hpp"
#include "geometry/checkerboard_layout.hpp"
#include "geometry/geometry.hpp"

namespace qftml {

class HaloExchange {
 public:
  HaloExchange(const Geometry& geometry, const CheckerboardLayout& layout, bool corners);
  void start(double* a);
  void finish(double* a);
  void exchange(double* a) {
    start(a);
    finish(a);
  }
  bool corners() const { return corners_; }
  bool local_direction(int mu) const { return local_[mu]; }
  // Row with k = 0 at flat index base, half sites: ghost k = -1 is site half-1, ghost half is 0.
  static void copy_local_row(double* a, int64_t base, int64_t half) {
    a[base - 1] = a[base + half - 1];
    a[base + half] = a[base];
  }
  double wait_seconds() const { return wait_seconds_; }
  double pack_seconds() const { return pack_seconds_; }
  void reset_timers() { wait_seconds_ = pack_seconds_ = 0.0; }
  size_t bytes() const;

 private:
  void post(int mu, double* a);
  void complete(int mu_begin, int mu_end, double* a);
  void copy_local(int mu, double* a);

  const Geometry& geometry_;
  int dim_;
  bool corners_;
  bool local_[kMaxDim] = {};
  std::vector<int64_t> send_idx_[kMaxDim][2], recv_idx_[kMaxDim][2];
  std::vector<double> send_buf_[kMaxDim][2], recv_buf_[kMaxDim][2];
  RequestSet requests_;  // after the buffers: destroyed (cancelled, completed) before them
  double wait_seconds_ = 0.0, pack_seconds_ = 0.0;
};

}  // namespace qftml
