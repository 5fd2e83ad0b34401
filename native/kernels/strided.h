// Rank-generic strided addressing shared by the element-wise drivers.
#pragma once

namespace attn {

constexpr int kMaxRank = 8;

// Walks the multi-indices of a shape in row-major order, keeping a flat
// offset for up to three strided operands.
struct Odometer {
  int rank;
  const long* shape;
  long idx[kMaxRank];
  long off[3];
  const long* strides[3];
  int nops;

  // Positions the walk at row-major linear position `pos`.
  Odometer(int rank_, const long* shape_, int nops_, const long* const* strides_, long pos)
      : rank(rank_), shape(shape_), nops(nops_) {
    for (int o = 0; o < 3; ++o) {
      off[o] = 0;
      strides[o] = o < nops ? strides_[o] : nullptr;
    }
    for (int d = rank - 1; d >= 0; --d) {
      idx[d] = shape[d] > 0 ? pos % shape[d] : 0;
      pos = shape[d] > 0 ? pos / shape[d] : 0;
      for (int o = 0; o < nops; ++o) off[o] += idx[d] * strides[o][d];
    }
  }

  void next() {
    for (int d = rank - 1; d >= 0; --d) {
      ++idx[d];
      for (int o = 0; o < nops; ++o) off[o] += strides[o][d];
      if (idx[d] < shape[d]) return;
      for (int o = 0; o < nops; ++o) off[o] -= idx[d] * strides[o][d];
      idx[d] = 0;
    }
  }
};

}  // namespace attn
