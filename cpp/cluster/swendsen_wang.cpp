// swendsen_wang.cpp -- bonds row by row, union-find in natural order, merge, flips.
#include "cluster/swendsen_wang.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "cluster/union_find.hpp"

namespace qftml {
namespace {

constexpr int64_t kRemote = std::numeric_limits<int64_t>::min();

std::vector<std::vector<int>> link_offsets(const Action& a) {
  std::vector<std::vector<int>> o;
  for (int l = 0; l < a.n_links(); ++l) o.push_back(a.offset(l));
  return o;
}

}  // namespace

SwendsenWang::SwendsenWang(const Action& action, Field& field, uint64_t seed)
    : action_(action),
      field_(field),
      seed_(seed),
      dim_(action.geometry().dim()),
      n_links_(action.n_links()),
      merge_(action.geometry(), link_offsets(action)) {
  const Geometry& g = action.geometry();
  if (&field.geometry() != &g) throw std::invalid_argument("field and action live on different Lattice objects");
  if (n_links_ > kMaxClusterLinks) throw std::invalid_argument("cluster updates support at most 16 links per site");
  if (g.local_volume() >= (int64_t(1) << 31) - 1)
    throw std::invalid_argument("cluster updates need fewer than 2^31 sites per rank");
  volume_ = g.local_volume();
  row_length_ = g.local_shape()[dim_ - 1];
  n_rows_ = volume_ / row_length_;
  last_local_ = g.grid()[dim_ - 1] == 1;
  for (int l = 0; l < n_links_; ++l) e_last_[l] = action.offset(l)[dim_ - 1];
  // Does any r[x] differ from 0? (the flip probability needs the cluster sums only then)
  double rmax = 0.0;
  action.layout().for_each_site([&](const int*, int p, int64_t flat) { rmax = std::fmax(rmax, std::fabs(action.r(p)[flat])); });
  MPI_Allreduce(MPI_IN_PLACE, &rmax, 1, MPI_DOUBLE, MPI_MAX, g.comm());
  has_field_ = rmax > 0.0;
  build_rows();
  bonds_.resize(volume_);
  parent_.resize(volume_);
  piece_label_.resize(volume_);
  row_mask_.resize(action.layout().half_row());
}

void SwendsenWang::build_rows() {
  const Geometry& g = action_.geometry();
  const CheckerboardLayout& layout = action_.layout();
  const int d = dim_, inner = d - 1;
  const std::vector<int>& loc = g.local_shape();
  // Natural strides of the outer directions (in rows) and the global index of each row start.
  std::vector<int64_t> row_stride(d, 1);
  for (int mu = inner - 2; mu >= 0; --mu) row_stride[mu] = row_stride[mu + 1] * loc[mu + 1];
  row_delta_.assign(n_rows_ * n_links_, 0);
  row_gbase_.assign(n_rows_, 0);
  std::vector<int> x(d, 0);
  for (int64_t r = 0; r < n_rows_; ++r) {
    int64_t gb = g.local_offset()[inner];
    for (int mu = 0; mu < inner; ++mu) gb += static_cast<int64_t>(g.local_offset()[mu] + x[mu]) * g.global_stride(mu);
    row_gbase_[r] = gb;
    for (int l = 0; l < n_links_; ++l) {
      int64_t delta = 0;
      for (int mu = 0; mu < inner && delta != kRemote; ++mu) {
        int y = x[mu] + action_.offset(l)[mu];
        if (y < 0 || y >= loc[mu]) {
          if (g.grid()[mu] != 1) {
            delta = kRemote;
            break;
          }
          y = (y + loc[mu]) % loc[mu];
        }
        delta += (y - x[mu]) * row_stride[mu] * row_length_;
      }
      row_delta_[r * n_links_ + l] = delta;
    }
    for (int mu = inner - 1; mu >= 0; --mu) {
      if (++x[mu] < loc[mu]) break;
      x[mu] = 0;
    }
  }
  layout.for_each_row([&](int p, int64_t base, int c, const int* xo) {
    int64_t r = 0;
    for (int mu = 0; mu < inner; ++mu) r += xo[mu] * row_stride[mu];
    CbRow row;
    row.parity = p;
    row.base = base;
    row.nat0 = r * row_length_ + c;
    BondRow& b = row.bond;
    b.n = layout.half_row();
    b.phi = field_.parity(p) + base;
    b.n_links = n_links_;
    b.gidx0 = static_cast<uint64_t>(row_gbase_[r] + c);
    for (int l = 0; l < n_links_; ++l) {
      const NeighbourShift& fw = action_.shift(l, c, +1);
      b.nb[l] = field_.parity(p ^ fw.dparity) + base + fw.delta;
      b.w[l] = action_.coupling(l, p) + base;  // link (x, x + e_l) is stored at x
      b.w0[l] = action_.coupling0(l);
    }
    rows_.push_back(row);
  });
}

void SwendsenWang::update(uint64_t sweep) {
  if (action_.n_extra() > 0) field_.ensure_corner_ghosts();
  double t0 = thread_cpu_seconds();
  compute_bonds(sweep);
  double t1 = thread_cpu_seconds();
  seconds_.bonds += t1 - t0;
  label_local();
  compress_pieces();
  if (has_field_) sum_field();
  t0 = thread_cpu_seconds();
  seconds_.labels += t0 - t1;
  not_owner_.clear();
  merge_.merge(
      bonds_.data(), [this](int64_t i) { return piece_of(i); }, piece_label_.data(),
      has_field_ ? piece_sum_.data() : nullptr, not_owner_);
  t1 = thread_cpu_seconds();
  seconds_.merge += t1 - t0;
  decide(sweep);
  flip();
  field_.exchange_halos();
  seconds_.flips += thread_cpu_seconds() - t1;
  ++counters_.updates;
}

void SwendsenWang::compute_bonds(uint64_t sweep) {
  const PhiloxKey key = rng_key(seed_, static_cast<uint32_t>(RngPurpose::cluster_bonds));
  const bool homog = action_.homogeneous();
  uint16_t* mask = row_mask_.data();
  uint16_t* bonds = bonds_.data();
  int32_t* parent = parent_.data();
  for (const CbRow& row : rows_) {
    if (homog) bond_row<true>(row.bond, sweep, key, mask);
    else bond_row<false>(row.bond, sweep, key, mask);
    const int64_t n = row.bond.n;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = row.nat0 + 2 * k;
      bonds[i] = mask[k];
      parent[i] = static_cast<int32_t>(i);
    }
  }
}

// Two passes. The first visits the sites in natural order and takes the two nearest-neighbour
// bonds from the previous site in the row and from the previous row (both already labelled): with
// one of them the site joins that label (no find), with both the two sets are united. The second
// adds every other bond (wrap-around links of local directions, further directions, extra links)
// by plain unions.
void SwendsenWang::label_local() {
  int32_t* parent = parent_.data();
  const uint16_t* bonds = bonds_.data();
  const int64_t L = row_length_;
  const int la = dim_ - 1, lb = dim_ - 2;  // links e_{d-1} (within the row) and e_{d-2} (row above)
  const int64_t rows_b = action_.geometry().local_shape()[lb];  // direction d-2 is the fastest between rows
  const unsigned bit_a = 1u << la, bit_b = 1u << lb;
  for (int64_t r = 0; r < n_rows_; ++r) {
    const int64_t base = r * L;
    const bool has_up = r % rows_b != 0;
    const int64_t up = has_up ? -L : 0;
    const unsigned mask_b = has_up ? bit_b : 0u;
    int32_t prev = 0;  // parent[i - 1], kept in a register (no store-to-load round trip)
    for (int64_t x = 0; x < L; ++x) {
      const int64_t i = base + x;
      const bool left = x > 0 && (bonds[i - (x > 0)] & bit_a);
      const bool above = bonds[i + up] & mask_b;
      // A new label, or that of the left or upper neighbour (arithmetic select: bonds are random,
      // branches would be mispredicted half the time).
      const int32_t pu = parent[i + up];
      int32_t p = static_cast<int32_t>(i);
      p ^= (p ^ pu) & -static_cast<int32_t>(above);
      p ^= (p ^ prev) & -static_cast<int32_t>(left);
      parent[i] = p;
      if (left & above & (prev != pu)) {  // equal provisional labels: nothing to unite
        rem_union(parent, static_cast<int32_t>(i), static_cast<int32_t>(i + up));
        p = parent[i];
      }
      prev = p;
    }
  }
  for (int64_t r = 0; r < n_rows_; ++r) {
    const int64_t* delta = row_delta_.data() + r * n_links_;
    const int64_t base = r * L;
    const bool last_b = r % rows_b == rows_b - 1;
    for (int l = 0; l < n_links_; ++l) {
      if (delta[l] == kRemote) continue;
      const unsigned bit = 1u << l;
      int64_t x0 = 0;
      if (l == la) x0 = L - 1;            // only the wrap-around link at the row end
      else if (l == lb && !last_b) continue;  // taken in the first pass
      for (int64_t x = x0; x < L; ++x) {
        const int64_t i = base + x;
        if (!(bonds[i] & bit)) continue;
        const int64_t xl = x + e_last_[l];
        int64_t j = i + delta[l] + e_last_[l];
        if (xl < 0 || xl >= L) {
          if (!last_local_) continue;
          j += xl < 0 ? L : -L;
        }
        rem_union(parent, static_cast<int32_t>(i), static_cast<int32_t>(j));
      }
    }
  }
}

// Every site gets its piece number (pieces numbered in order of their roots): the root of site i
// is at or before i, and every site before i holds its piece number already. Piece labels are the
// global index of the root, the piece's smallest site.
void SwendsenWang::compress_pieces() {
  int32_t* parent = parent_.data();
  int64_t* label = piece_label_.data();  // volume entries: no bounds to check
  int32_t n = 0;
  const int64_t L = row_length_;
  for (int64_t r = 0; r < n_rows_; ++r) {
    const int64_t base = r * L, gb = row_gbase_[r];
    for (int64_t x = 0; x < L; ++x) {  // no branch: roots are random
      const int64_t i = base + x;
      const int32_t p = parent[i];
      const bool root = p == i;
      const int32_t q = parent[p];  // p < i: already its piece number (p = i: unused)
      parent[i] = root ? n : q;
      label[n] = gb + x;            // kept only if i is a root
      n += root;
    }
  }
  n_pieces_ = n;
}

void SwendsenWang::sum_field() {
  piece_sum_.assign(n_pieces_, 0);
  const bool homog = action_.homogeneous();
  const double r0 = action_.r0();
  for (const CbRow& row : rows_) {
    const double* phi = row.bond.phi;
    const double* r = action_.r(row.parity) + row.base;
    for (int64_t k = 0; k < row.bond.n; ++k)
      piece_sum_[piece_of(row.nat0 + 2 * k)] += to_fixed((homog ? r0 : r[k]) * phi[k]);
  }
}

// Cluster C flips with probability 1/2 min(1, exp(2 sum_C r phi)) (coin of its label).
void SwendsenWang::decide(uint64_t sweep) {
  const PhiloxKey key = rng_key(seed_, static_cast<uint32_t>(RngPurpose::cluster_coins));
  piece_flip_.resize(n_pieces_);
  const double* prob = nullptr;
  if (has_field_) {
    piece_prob_.resize(n_pieces_);
    for (int64_t p = 0; p < n_pieces_; ++p) {
      const double t = 2.0 * from_fixed(piece_sum_[p]);
      piece_prob_[p] = 0.5 * exp_clamped(t < 0.0 ? t : 0.0);
    }
    prob = piece_prob_.data();
  }
  coin_flips(piece_label_.data(), n_pieces_, sweep, key, prob, piece_flip_.data());
  int64_t flipped = 0;
  for (int64_t p = 0; p < n_pieces_; ++p) flipped += piece_flip_[p];
  for (int32_t p : not_owner_) flipped -= piece_flip_[p];
  counters_.clusters += n_pieces_ - static_cast<int64_t>(not_owner_.size());
  counters_.flipped += flipped;
  counters_.sites += volume_;
}

void SwendsenWang::flip() {
  const uint8_t* f = piece_flip_.data();
  for (const CbRow& row : rows_) {
    double* phi = field_.parity(row.parity) + row.base;
    for (int64_t k = 0; k < row.bond.n; ++k) {  // flip the sign bit: no branch
      const uint64_t bits = __builtin_bit_cast(uint64_t, phi[k]) ^ (static_cast<uint64_t>(f[piece_of(row.nat0 + 2 * k)]) << 63);
      phi[k] = __builtin_bit_cast(double, bits);
    }
  }
}

double SwendsenWang::bytes_per_site() const {
  const double per_piece = sizeof(int64_t) + sizeof(uint8_t) + (has_field_ ? sizeof(fixed128) : 0);
  // the row tables too: a CbRow holds a BondRow of kMaxClusterLinks pointers (~27 bytes per site at 32^4)
  const double tables = rows_.capacity() * sizeof(CbRow) + (row_delta_.capacity() + row_gbase_.capacity()) *
                        sizeof(int64_t) + row_mask_.capacity() * sizeof(uint16_t);
  const double bytes = bonds_.capacity() * sizeof(uint16_t) + parent_.capacity() * sizeof(int32_t) +
                       piece_label_.capacity() * per_piece + merge_.bytes() + tables;
  return bytes / static_cast<double>(volume_);
}

}  // namespace qftml
