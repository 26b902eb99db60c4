// tags.hpp -- the one scheme of point-to-point message tags of the engine.
//
// Exports:
//   tags::halo(mu, side)   a halo face in direction mu: side 0 travels to the lower neighbour,
//                          side 1 to the upper one (HaloExchange)
//   tags::cluster_labels   the pairwise label exchange of the Swendsen-Wang boundary merge
//
// Every point-to-point message of the engine travels on a Cartesian communicator the engine made
// (Geometry::comm(), one per Lattice), so these tags meet nobody else's: the Python driver's tags
// (qftml.collective.TAGS) live on the driver's own communicators. Each message kind owns a range
// here; a new kind takes the next free range, so two kinds can never match each other's receives.
#pragma once
#include "geometry/geometry.hpp"

namespace qftml {
namespace tags {

constexpr int kHaloBase = 0;  // 2 kMaxDim tags: kHaloBase + 2 mu + side
constexpr int cluster_labels = 64;

constexpr int halo(int mu, int side) { return kHaloBase + 2 * mu + side; }

static_assert(halo(kMaxDim - 1, 1) < cluster_labels, "tag ranges overlap");

}  // namespace tags
}  // namespace qftml
