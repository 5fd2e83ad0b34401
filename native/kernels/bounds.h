// Overflow-checked element counts and extents of strided views: what a bounds
// check needs to compute exactly before it compares anything with an array's
// length. Every function returns false when an intermediate result does not
// fit in a long (the view could not fit in any array).
#pragma once

#include <utility>

#include "strided.h"

namespace attn {

inline bool checked_add(long a, long b, long* r) { return !__builtin_add_overflow(a, b, r); }
inline bool checked_mul(long a, long b, long* r) { return !__builtin_mul_overflow(a, b, r); }

// Product of rank non-negative sizes (0 when any is 0, however large the others).
inline bool checked_count(int rank, const long* shape, long* count) {
  for (int d = 0; d < rank; ++d) {
    if (shape[d] == 0) {
      *count = 0;
      return true;
    }
  }
  long n = 1;
  for (int d = 0; d < rank; ++d) {
    if (shape[d] < 0 || !checked_mul(n, shape[d], &n)) return false;
  }
  *count = n;
  return true;
}

// Elements from a view's first element to one past its last: 1 + sum over
// the axes of (shape[d] - 1) * strides[d], or 0 when any size is 0. Strides
// must be non-negative.
inline bool strided_extent(int rank, const long* shape, const long* strides, long* extent) {
  for (int d = 0; d < rank; ++d) {
    if (shape[d] == 0) {
      *extent = 0;
      return true;
    }
  }
  long e = 1;
  for (int d = 0; d < rank; ++d) {
    long step;
    if (shape[d] < 0 || strides[d] < 0 || !checked_mul(shape[d] - 1, strides[d], &step) || !checked_add(e, step, &e)) {
      return false;
    }
  }
  *extent = e;
  return true;
}

// True when no two elements of the view share a memory location: with the
// axes of length > 1 sorted by stride, each stride steps past everything the
// smaller axes span. (Sufficient, and exact for every layout that views
// produce; a layout that interleaves axes is refused even if its elements are
// distinct.) An empty view has distinct elements.
inline bool distinct_elements(int rank, const long* shape, const long* strides) {
  if (rank > kMaxRank) return false;
  int order[kMaxRank];
  int n = 0;
  for (int d = 0; d < rank; ++d) {
    if (shape[d] == 0) return true;
  }
  for (int d = 0; d < rank; ++d) {
    if (shape[d] > 1) order[n++] = d;
  }
  for (int i = 1; i < n; ++i) {
    for (int j = i; j > 0 && strides[order[j]] < strides[order[j - 1]]; --j) std::swap(order[j], order[j - 1]);
  }
  long span = 1;  // elements spanned by the axes so far
  for (int i = 0; i < n; ++i) {
    const long s = strides[order[i]];
    if (s < span) return false;
    long step;
    if (!checked_mul(s, shape[order[i]] - 1, &step) || !checked_add(step, span, &span)) return false;
  }
  return true;
}

}  // namespace attn
