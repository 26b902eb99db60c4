// union_find.hpp -- disjoint sets over 0..n-1 whose roots are the smallest member (plain arrays).
//
// Rem's algorithm with splicing (Patwary, Blair, Manne, SEA 2010: the fastest of the classic
// variants in their tests): parent[x] <= x always, so every root is the minimum of its set, and a
// pass in increasing order resolves every parent to its root with one lookup per element.
//
// Exports:
//   rem_union(parent, x, y)      merge the sets of x and y
//   resolve_roots(parent, n)     parent[i] = root of i for all i (one increasing pass)
#pragma once
#include <cstdint>

namespace qftml {

template <class Index>
inline void rem_union(Index* __restrict parent, Index x, Index y) {
  while (parent[x] != parent[y]) {
    if (parent[x] > parent[y]) {
      if (x == parent[x]) {
        parent[x] = parent[y];
        return;
      }
      const Index z = parent[x];
      parent[x] = parent[y];
      x = z;
    } else {
      if (y == parent[y]) {
        parent[y] = parent[x];
        return;
      }
      const Index z = parent[y];
      parent[y] = parent[x];
      y = z;
    }
  }
}

template <class Index>
inline void resolve_roots(Index* __restrict parent, int64_t n) {
  for (int64_t i = 0; i < n; ++i) parent[i] = parent[parent[i]];  // parent[i] <= i is resolved already
}

}  // namespace qftml
