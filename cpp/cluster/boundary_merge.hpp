// boundary_merge.hpp -- joins the cluster pieces of neighbouring blocks (the cross-rank step of
// Swendsen-Wang labelling).
//
// Each rank has labelled its block: a piece is a set of its sites connected by bonds inside the
// block, labelled by its smallest global site index. A bond on a link that leaves the block joins
// two pieces of different ranks. The merge takes a constant number of communication rounds,
// whatever the shape of the clusters:
//   1. pairwise: for every link crossing into this block from rank R (R owns it, since a link
//      (x, x + e) belongs to the rank of x), send R the label of the piece at its end here; both
//      sides list these links in the order of their global link index, so no indices travel
//   2. each rank reduces its bonded crossing links to distinct edges (label here, label there)
//      and, when the action has r != 0, adds (label, fixed-point sum of r phi) of each boundary
//      piece
//   3. one MPI_Allgatherv of all edges and sums; every rank runs the same union-find on the
//      (small) graph of boundary pieces, whose roots are the smallest labels: the canonical label
//      of each cluster, and its exact total sum
// Why not exchange labels over the faces until nothing changes: at the critical point one cluster
// spans the whole process grid, so that takes O(grid diameter) rounds, each with a global
// reduction to detect convergence, and a cluster winding through the blocks needs more. Here the
// data are O(boundary pieces) per rank (far below the local volume at production block sizes);
// beyond a few hundred ranks a tree of pairwise merges (Flanigan-Tamayo) would bound it instead.
//
// Exports:
//   BoundaryMerge(geometry, offsets)   lists of crossing links per neighbouring rank (no collective)
//   active()                           more than one rank in the communicator
//   merge(...)                         steps 1-3 (collective); see the declaration
//   bytes()                            memory of the link lists and buffers
#pragma once
#include <mpi.h>

#include <cstdint>
#include <vector>

#include "comms/reproducible_sum.hpp"
#include "geometry/geometry.hpp"

namespace qftml {

class BoundaryMerge {
 public:
  BoundaryMerge(const Geometry& geometry, const std::vector<std::vector<int>>& offsets);
  bool active() const { return active_; }

  // bonds: natural-order bond masks; piece_of(i): piece of natural site i; label[piece], sum[piece]
  // (sum may be null: no field). On return the label and sum of every piece of a cluster that
  // crosses blocks are those of its cluster; pieces that do not hold the cluster's smallest site
  // are appended to not_owner.
  template <class PieceOf>
  void merge(const uint16_t* bonds, PieceOf piece_of, int64_t* label, fixed128* sum,
             std::vector<int32_t>& not_owner);
  size_t bytes() const;

 private:
  struct OutLink {
    int64_t site;  // natural local index of x
    int link;      // l
  };
  struct Neighbour {
    int rank;
    std::vector<OutLink> out;   // links this rank owns that end on `rank`, in global link order
    std::vector<int64_t> in;    // sites here at the end of links `rank` owns, in global link order
    std::vector<int64_t> send, recv;
  };
  void exchange_labels();
  void solve(int64_t* label, fixed128* sum, std::vector<int32_t>& not_owner);

  MPI_Comm comm_;
  bool active_;
  std::vector<Neighbour> neighbours_;
  std::vector<int64_t> boundary_sites_;  // every site in some `out` or `in` list, sorted
  // Per merge: this rank's boundary pieces, its payload, the gathered graph.
  std::vector<int32_t> boundary_pieces_;
  std::vector<int64_t> payload_, gathered_, nodes_;
  std::vector<int32_t> node_parent_;
  std::vector<fixed128> node_sum_;
  std::vector<int> counts_, displs_;
  bool with_sums_ = false;
};

template <class PieceOf>
void BoundaryMerge::merge(const uint16_t* bonds, PieceOf piece_of, int64_t* label, fixed128* sum,
                          std::vector<int32_t>& not_owner) {
  if (!active_) return;
  with_sums_ = sum != nullptr;
  for (Neighbour& nb : neighbours_)
    for (size_t j = 0; j < nb.in.size(); ++j) nb.send[j] = label[piece_of(nb.in[j])];
  exchange_labels();
  // Payload: [edges (a, b), a < b, distinct] then [pieces (label, sum low, sum high)].
  payload_.clear();
  for (const Neighbour& nb : neighbours_)
    for (size_t j = 0; j < nb.out.size(); ++j) {
      const OutLink& o = nb.out[j];
      if (!((bonds[o.site] >> o.link) & 1u)) continue;
      const int64_t a = label[piece_of(o.site)], b = nb.recv[j];
      payload_.push_back(a < b ? a : b);
      payload_.push_back(a < b ? b : a);
    }
  boundary_pieces_.clear();
  for (int64_t s : boundary_sites_) boundary_pieces_.push_back(piece_of(s));
  solve(label, sum, not_owner);
}

}  // namespace qftml
