// checkerboard_layout.hpp -- even/odd ordered storage of a local block with one ghost layer.
//
// A field is two arrays, one per parity p = (sum_mu x_mu) mod 2. Each is a padded row-major
// array: outer directions 0..d-2 have extent L_mu + 2 (ghosts at 0 and L_mu + 1), the last
// direction keeps only the sites of that parity, L_{d-1}/2 + 2 entries (ghosts at both ends).
// A row (fixed outer coordinates, sum s) of array p holds local x_{d-1} = 2k + c with
// c = (p - s) mod 2, so one parity of one row is a contiguous, vectorisable loop over k.
// Local extents are even, so local parity equals global parity.
//
// Exports:
//   CheckerboardLayout(local_shape)       padded extents, strides, array size
//   site(x) -> {parity, flat index}       where local site x lives
//   neighbour(e, c) -> {delta, dparity}   flat offset and parity change of x + e, e in {-1,0,1}^d,
//                                         for a row with offset c
//   for_each_site(f)                      f(x, parity, flat) over the interior, natural order
//   for_each_row(f)                       f(parity, flat of k = 0, c, outer x) over interior rows
#pragma once
#include <array>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "geometry/geometry.hpp"

namespace qftml {

struct SiteRef {
  int parity;
  int64_t flat;
};

struct NeighbourShift {
  int64_t delta;
  int dparity;
};

class CheckerboardLayout {
 public:
  explicit CheckerboardLayout(const std::vector<int>& local_shape)
      : dim_(static_cast<int>(local_shape.size())) {
    for (int mu = 0; mu < dim_; ++mu) {
      local_[mu] = local_shape[mu];
      padded_[mu] = (mu == dim_ - 1 ? local_shape[mu] / 2 : local_shape[mu]) + 2;
    }
    int64_t s = 1;
    for (int mu = dim_ - 1; mu >= 0; --mu) stride_[mu] = s, s *= padded_[mu];
    size_ = s;
  }

  int dim() const { return dim_; }
  int local(int mu) const { return local_[mu]; }
  int padded(int mu) const { return padded_[mu]; }
  int64_t stride(int mu) const { return stride_[mu]; }
  int64_t size() const { return size_; }
  int half_row() const { return local_[dim_ - 1] / 2; }

  SiteRef site(const int* x) const {
    int sum = 0;
    int64_t flat = 0;
    for (int mu = 0; mu < dim_ - 1; ++mu) sum += x[mu], flat += (x[mu] + 1) * stride_[mu];
    const int xl = x[dim_ - 1];
    sum += xl;
    flat += xl / 2 + 1;
    return SiteRef{sum & 1, flat};
  }

  NeighbourShift neighbour(const int* e, int c) const {
    int64_t delta = 0;
    int sum = 0;
    for (int mu = 0; mu < dim_; ++mu) {
      if (e[mu] < -1 || e[mu] > 1) throw std::invalid_argument("link offsets must lie in {-1,0,1}");
      sum += e[mu];
      if (mu < dim_ - 1) delta += e[mu] * stride_[mu];
    }
    const int el = e[dim_ - 1];
    const int c_new = ((c + el) % 2 + 2) % 2;
    delta += (c + el - c_new) / 2;
    return NeighbourShift{delta, ((sum % 2) + 2) % 2};
  }

  // f(x, parity, flat) for every interior site, x in natural (lexicographic) order.
  template <class F>
  void for_each_site(F&& f) const {
    std::array<int, kMaxDim> x{};
    int64_t n = 1;
    for (int mu = 0; mu < dim_; ++mu) n *= local_[mu];
    for (int64_t i = 0; i < n; ++i) {
      const SiteRef s = site(x.data());
      f(x.data(), s.parity, s.flat);
      for (int mu = dim_ - 1; mu >= 0; --mu) {
        if (++x[mu] < local_[mu]) break;
        x[mu] = 0;
      }
    }
  }

  // f(parity, flat index of k = 0, c, outer coordinates) for both parities of every interior row.
  template <class F>
  void for_each_row(F&& f) const {
    std::array<int, kMaxDim> x{};
    int64_t n = 1;
    for (int mu = 0; mu < dim_ - 1; ++mu) n *= local_[mu];
    for (int64_t i = 0; i < n; ++i) {
      int sum = 0;
      int64_t base = 1;
      for (int mu = 0; mu < dim_ - 1; ++mu) sum += x[mu], base += (x[mu] + 1) * stride_[mu];
      for (int p = 0; p < 2; ++p) f(p, base, (p - sum) & 1, x.data());
      for (int mu = dim_ - 2; mu >= 0; --mu) {
        if (++x[mu] < local_[mu]) break;
        x[mu] = 0;
      }
    }
  }

 private:
  int dim_;
  std::array<int, kMaxDim> local_{}, padded_{};
  std::array<int64_t, kMaxDim> stride_{};
  int64_t size_ = 0;
};

}  // namespace qftml
