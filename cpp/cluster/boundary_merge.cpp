// boundary_merge.cpp -- crossing-link lists, pairwise label exchange, the gathered boundary graph.
#include "cluster/boundary_merge.hpp"

#include <algorithm>
#include <map>
#include <utility>

#include "cluster/union_find.hpp"
#include "comms/requests.hpp"
#include "comms/tags.hpp"

namespace qftml {

BoundaryMerge::BoundaryMerge(const Geometry& g, const std::vector<std::vector<int>>& offsets)
    : comm_(g.comm()), active_(g.size() > 1) {
  if (!active_) return;
  const int d = g.dim(), n_links = static_cast<int>(offsets.size());
  const std::vector<int>&shape = g.shape(), &loc = g.local_shape(), &off = g.local_offset();
  // Rank owning global site X, or -1 for this rank.
  std::vector<int> oc(d);
  auto owner = [&](const std::vector<int64_t>& X) {
    bool mine = true;
    for (int mu = 0; mu < d; ++mu) {
      oc[mu] = static_cast<int>(X[mu] / loc[mu]);
      mine = mine && oc[mu] == g.coords()[mu];
    }
    if (mine) return -1;
    int r = 0;
    MPI_Cart_rank(comm_, oc.data(), &r);
    return r;
  };
  auto gindex = [&](const std::vector<int64_t>& X) {
    int64_t gi = 0;
    for (int mu = 0; mu < d; ++mu) gi += X[mu] * g.global_stride(mu);
    return gi;
  };
  // (global link index, entry) per rank, sorted below.
  std::map<int, std::vector<std::pair<int64_t, OutLink>>> out;
  std::map<int, std::vector<std::pair<int64_t, int64_t>>> in;
  std::vector<int> x(d, 0);
  std::vector<int64_t> X(d), Y(d);
  for (int64_t i = 0; i < g.local_volume(); ++i) {
    for (int mu = 0; mu < d; ++mu) X[mu] = off[mu] + x[mu];
    const int64_t gx = gindex(X);
    for (int l = 0; l < n_links; ++l) {
      for (int mu = 0; mu < d; ++mu) Y[mu] = (X[mu] + offsets[l][mu] + shape[mu]) % shape[mu];
      const int r_fw = owner(Y);
      if (r_fw >= 0) out[r_fw].push_back({gx * n_links + l, OutLink{i, l}});
      for (int mu = 0; mu < d; ++mu) Y[mu] = (X[mu] - offsets[l][mu] + shape[mu]) % shape[mu];
      const int r_bw = owner(Y);
      if (r_bw >= 0) in[r_bw].push_back({gindex(Y) * n_links + l, i});
    }
    for (int mu = d - 1; mu >= 0; --mu) {
      if (++x[mu] < loc[mu]) break;
      x[mu] = 0;
    }
  }
  std::vector<int> ranks;
  for (const auto& kv : out) ranks.push_back(kv.first);
  for (const auto& kv : in) ranks.push_back(kv.first);
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  auto by_link = [](const auto& a, const auto& b) { return a.first < b.first; };
  for (int r : ranks) {
    Neighbour nb;
    nb.rank = r;
    auto& o = out[r];
    std::sort(o.begin(), o.end(), by_link);
    for (const auto& e : o) nb.out.push_back(e.second), boundary_sites_.push_back(e.second.site);
    auto& n = in[r];
    std::sort(n.begin(), n.end(), by_link);
    for (const auto& e : n) nb.in.push_back(e.second), boundary_sites_.push_back(e.second);
    nb.send.resize(nb.in.size());
    nb.recv.resize(nb.out.size());
    neighbours_.push_back(std::move(nb));
  }
  std::sort(boundary_sites_.begin(), boundary_sites_.end());
  boundary_sites_.erase(std::unique(boundary_sites_.begin(), boundary_sites_.end()), boundary_sites_.end());
  counts_.resize(g.size());
  displs_.resize(g.size());
}

void BoundaryMerge::exchange_labels() {
  RequestSet req;  // completed here, or cancelled if anything throws before the wait
  req.reserve(2 * neighbours_.size());
  for (Neighbour& nb : neighbours_) {
    if (!nb.recv.empty())
      MPI_Irecv(nb.recv.data(), static_cast<int>(nb.recv.size()), MPI_INT64_T, nb.rank, tags::cluster_labels, comm_,
                req.add());
    if (!nb.send.empty())
      MPI_Isend(nb.send.data(), static_cast<int>(nb.send.size()), MPI_INT64_T, nb.rank, tags::cluster_labels, comm_,
                req.add());
  }
  req.wait_all();
}

void BoundaryMerge::solve(int64_t* label, fixed128* sum, std::vector<int32_t>& not_owner) {
  // This rank's distinct edges, then its boundary pieces with their sums.
  {
    std::vector<std::pair<int64_t, int64_t>> e(payload_.size() / 2);
    for (size_t j = 0; j < e.size(); ++j) e[j] = {payload_[2 * j], payload_[2 * j + 1]};
    std::sort(e.begin(), e.end());
    e.erase(std::unique(e.begin(), e.end()), e.end());
    payload_.assign(1, static_cast<int64_t>(e.size()));
    for (const auto& p : e) payload_.push_back(p.first), payload_.push_back(p.second);
  }
  std::sort(boundary_pieces_.begin(), boundary_pieces_.end());
  boundary_pieces_.erase(std::unique(boundary_pieces_.begin(), boundary_pieces_.end()), boundary_pieces_.end());
  if (with_sums_)
    for (int32_t p : boundary_pieces_) {
      const unsigned __int128 u = static_cast<unsigned __int128>(sum[p]);
      payload_.push_back(label[p]);
      payload_.push_back(static_cast<int64_t>(static_cast<uint64_t>(u)));
      payload_.push_back(static_cast<int64_t>(static_cast<uint64_t>(u >> 64)));
    }
  int n = static_cast<int>(payload_.size());
  MPI_Allgather(&n, 1, MPI_INT, counts_.data(), 1, MPI_INT, comm_);
  int total = 0;
  for (size_t r = 0; r < counts_.size(); ++r) displs_[r] = total, total += counts_[r];
  gathered_.resize(total);
  MPI_Allgatherv(payload_.data(), n, MPI_INT64_T, gathered_.data(), counts_.data(), displs_.data(),
                 MPI_INT64_T, comm_);
  // The graph of boundary pieces: nodes are labels, roots the smallest label of each component.
  nodes_.clear();
  for (size_t r = 0; r < counts_.size(); ++r) {
    const int64_t* p = gathered_.data() + displs_[r];
    nodes_.insert(nodes_.end(), p + 1, p + 1 + 2 * p[0]);
  }
  std::sort(nodes_.begin(), nodes_.end());
  nodes_.erase(std::unique(nodes_.begin(), nodes_.end()), nodes_.end());
  const int32_t n_nodes = static_cast<int32_t>(nodes_.size());
  auto node = [&](int64_t lab) {
    const auto it = std::lower_bound(nodes_.begin(), nodes_.end(), lab);
    return it != nodes_.end() && *it == lab ? static_cast<int32_t>(it - nodes_.begin()) : -1;
  };
  node_parent_.resize(n_nodes);
  for (int32_t i = 0; i < n_nodes; ++i) node_parent_[i] = i;
  for (size_t r = 0; r < counts_.size(); ++r) {
    const int64_t* p = gathered_.data() + displs_[r];
    for (int64_t j = 0; j < p[0]; ++j) rem_union(node_parent_.data(), node(p[1 + 2 * j]), node(p[2 + 2 * j]));
  }
  resolve_roots(node_parent_.data(), n_nodes);
  if (with_sums_) {
    node_sum_.assign(n_nodes, 0);
    for (size_t r = 0; r < counts_.size(); ++r) {
      const int64_t* p = gathered_.data() + displs_[r];
      const int64_t* q = p + 1 + 2 * p[0];
      for (const int64_t* end = p + counts_[r]; q < end; q += 3) {
        const int32_t i = node(q[0]);
        if (i < 0) continue;  // a piece with no bond across: its own cluster
        const unsigned __int128 u = static_cast<unsigned __int128>(static_cast<uint64_t>(q[1])) |
                                    (static_cast<unsigned __int128>(static_cast<uint64_t>(q[2])) << 64);
        node_sum_[node_parent_[i]] += static_cast<fixed128>(u);
      }
    }
  }
  for (int32_t p : boundary_pieces_) {
    const int32_t i = node(label[p]);
    if (i < 0) continue;
    const int32_t root = node_parent_[i];
    if (nodes_[root] != label[p]) not_owner.push_back(p);
    label[p] = nodes_[root];
    if (with_sums_) sum[p] = node_sum_[root];
  }
}

size_t BoundaryMerge::bytes() const {
  size_t b = boundary_sites_.capacity() * sizeof(int64_t);
  for (const Neighbour& nb : neighbours_)
    b += nb.out.capacity() * sizeof(OutLink) + (nb.in.capacity() + nb.send.capacity() + nb.recv.capacity()) * sizeof(int64_t);
  return b;
}

}  // namespace qftml
