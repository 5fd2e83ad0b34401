// The operations the TypeScript layer calls. Each one parses its arguments
// into a plain struct (checking every bound again: this layer must never
// touch memory outside the arrays it was given), then runs the kernel now
// (sync) or on a worker thread (async) while references keep the inputs alive.
// Integers and scalars come in one Float64Array per call, read by slot name
// through ParamReader (layouts: native/params.json).
#include "ops.h"

#include <cmath>
#include <algorithm>
#include <functional>
#include <new>
#include <utility>
#include <vector>

#include "../kernels/attention.h"
#include "../kernels/gemm.h"
#include "../kernels/softmax.h"
#include "../kernels/tensor_ops.h"
#include "../runtime/cpu.h"
#include "../runtime/dispatch.h"
#include "../runtime/thread_pool.h"
#include "args.h"
#include "param_reader.h"

namespace attn {
namespace addon {
namespace {

constexpr long kMaxIndex = (1L << 53) - 1;  // every count and stride fits a double exactly
static_assert(params::kMaxRank == kMaxRank, "native/params.json's maxRank is the kernels' kMaxRank");

// ------------------------------------------------------------ async plumbing
class JobWorker : public Napi::AsyncWorker {
 public:
  JobWorker(Napi::Env env, std::function<void()> job, const std::vector<Napi::Value>& keep)
      : Napi::AsyncWorker(env, "attention-kernels"),
        deferred_(Napi::Promise::Deferred::New(env)),
        job_(std::move(job)) {
    refs_.reserve(keep.size());
    for (const Napi::Value& v : keep) {
      if (v.IsObject()) refs_.push_back(Napi::Persistent(v));  // typed arrays; null masks need none
    }
  }

  Napi::Promise promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      job_();
    } catch (const std::bad_alloc&) {
      SetError("out of memory while running the kernel");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  // Settling can fail only when the environment is being torn down (a worker
  // terminated while the kernel ran): nobody is left to observe the Promise,
  // so the failure is dropped rather than escaping as a C++ exception.
  void OnOK() override {
    try {
      deferred_.Resolve(Env().Undefined());
    } catch (const Napi::Error&) {
    }
  }
  void OnError(const Napi::Error& e) override {
    try {
      deferred_.Reject(e.Value());
    } catch (const Napi::Error&) {
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<void()> job_;
  std::vector<Napi::Reference<Napi::Value>> refs_;  // inputs stay alive until we settle
};

// Runs `job` now, or queues it and returns a Promise. Arguments 0..nkeep-1 of
// the call are kept alive for the job's lifetime.
Napi::Value run(const Napi::CallbackInfo& info, bool async, std::size_t nkeep, std::function<void()> job) {
  if (!async) {
    try {
      job();
    } catch (const std::bad_alloc&) {
      throw_range(info.Env(), "out of memory while running the kernel");
    }
    return info.Env().Undefined();
  }
  std::vector<Napi::Value> keep;
  for (std::size_t i = 0; i < nkeep && i < info.Length(); ++i) keep.push_back(info[i]);
  auto* worker = new JobWorker(info.Env(), std::move(job), keep);
  Napi::Promise p = worker->promise();
  worker->Queue();  // deletes itself after OnOK / OnError
  return p;
}

// Elements spanned by a strided view (0 if any dimension is 0).
long strided_extent(Napi::Env env, int rank, const long* shape, const long* strides, const char* what) {
  double span = 1;
  for (int d = 0; d < rank; ++d) {
    if (shape[d] == 0) return 0;
    span += static_cast<double>(shape[d] - 1) * static_cast<double>(strides[d]);
  }
  if (span > static_cast<double>(kMaxIndex)) {
    throw_range(env, std::string(what) + " spans more than 2^53 elements");
  }
  long e = 1;
  for (int d = 0; d < rank; ++d) e += (shape[d] - 1) * strides[d];
  return e;
}

// A mask of `kind` (1 float32, 2 uint8) at argument i that must hold `extent`
// elements from `off`; returns its first element.
const void* mask_data(const Napi::CallbackInfo& info, std::size_t i, long kind, long off, long extent,
                      const char* what) {
  if (kind == 1) {
    F32Arg m = get_f32(info, i, what);
    check_fits(info.Env(), what, off, extent, m.length);
    return m.data + off;
  }
  U8Arg m = get_u8(info, i, what);
  check_fits(info.Env(), what, off, extent, m.length);
  return m.data + off;
}

// ------------------------------------------------------------ gemm
// What gemm and gemmWithPacked check alike: the spans of the operands stay
// below 2^53; A, out and the optional bias (argument 3, at bias_offset) fit
// their arrays; out's batch items are disjoint and out shares memory with
// neither A nor the bias. Sets g.a, g.c and g.bias; g's shape and strides
// must be set. `inputs` names the operands out must stay apart from.
void bind_a_out_bias(const Napi::CallbackInfo& info, GemmArgs& g, const F32Arg& a, long off_a, const F32Arg& c,
                     long off_c, double bias_offset, const char* inputs) {
  Napi::Env env = info.Env();
  if (g.lda < (g.trans_a ? g.m : g.k)) throw_range(env, "lda is smaller than the rows it must hold");
  if (g.ldc < g.n) throw_range(env, "ldc is smaller than n");
  // Overflow-safe: every factor is below 2^53; check the spans in double first.
  const double span = (static_cast<double>(g.batch) + 1) *
                      (static_cast<double>(g.m) + static_cast<double>(g.n) + static_cast<double>(g.k) + 1) *
                      (static_cast<double>(g.lda) + static_cast<double>(g.ldb) + static_cast<double>(g.ldc) +
                       static_cast<double>(g.stride_a) + static_cast<double>(g.stride_b) +
                       static_cast<double>(g.stride_c) + 1);
  if (span > 9.0e15) throw_range(env, "gemm operands span more than 2^53 elements");
  const long ea = gemm_extent_a(g), ec = gemm_extent_c(g);
  check_fits(env, "a", off_a, ea, a.length);
  check_fits(env, "out", off_c, ec, c.length);
  if (g.batch > 1 && g.m > 0 && g.n > 0 && g.stride_c < (g.m - 1) * g.ldc + g.n) {
    throw_range(env, "out batch items overlap (strideC is smaller than one m x n item)");
  }
  g.a = a.data + off_a;
  g.c = c.data + off_c;
  const std::size_t out_bytes = static_cast<std::size_t>(ec) * sizeof(float);
  if (overlaps(g.c, out_bytes, g.a, static_cast<std::size_t>(ea) * sizeof(float))) {
    throw_range(env, std::string("out must not share memory with ") + inputs);
  }
  if (!is_absent(info[3])) {
    F32Arg bias = get_f32(info, 3, "bias");
    const long off = get_int(env, bias_offset, 0, kMaxIndex, "offset of bias");
    check_fits(env, "bias", off, g.n, bias.length);
    g.bias = bias.data + off;
    if (overlaps(g.c, out_bytes, g.bias, static_cast<std::size_t>(g.n) * sizeof(float))) {
      throw_range(env, "out must not share memory with bias");
    }
  }
}

// The slots gemm and gemmWithPacked share (named alike in both blocks): m,
// A's and out's layouts, the batch, alpha and beta.
template <class P>
void read_a_and_out(ParamReader<P>& p, GemmArgs& g, long& off_a, long& off_c) {
  g.m = p.integer(P::kM, 0, kMaxIndex, "m");
  g.trans_a = p.flag(P::kTransA, "transA");
  g.lda = p.integer(P::kLda, 1, kMaxIndex, "lda");
  g.ldc = p.integer(P::kLdc, 1, kMaxIndex, "ldc");
  g.stride_a = p.integer(P::kABatchStride, 0, kMaxIndex, "strideA");
  g.stride_c = p.integer(P::kCBatchStride, 0, kMaxIndex, "strideC");
  g.batch = p.integer(P::kBatch, 0, kMaxIndex, "batch");
  g.alpha = static_cast<float>(p.number(P::kAlpha));
  g.beta = static_cast<float>(p.number(P::kBeta));
  off_a = p.integer(P::kAOffset, 0, kMaxIndex, "offset of a");
  off_c = p.integer(P::kCOffset, 0, kMaxIndex, "offset of out");
}

// gemm(a, b, out, bias | null | undefined, params)
Napi::Value gemm_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::Gemm;
  Napi::Env env = info.Env();
  F32Arg a = get_f32(info, 0, "a");
  F32Arg b = get_f32(info, 1, "b");
  F32Arg c = get_f32(info, 2, "out");
  ParamReader<P> p(info, 4);
  GemmArgs g;
  long off_a, off_c;
  read_a_and_out(p, g, off_a, off_c);
  g.n = p.integer(P::kN, 0, kMaxIndex, "n");
  g.k = p.integer(P::kK, 0, kMaxIndex, "k");
  g.trans_b = p.flag(P::kTransB, "transB");
  g.ldb = p.integer(P::kLdb, 1, kMaxIndex, "ldb");
  g.stride_b = p.integer(P::kBBatchStride, 0, kMaxIndex, "strideB");
  const long off_b = p.integer(P::kBOffset, 0, kMaxIndex, "offset of b");

  if (g.ldb < (g.trans_b ? g.k : g.n)) throw_range(env, "ldb is smaller than the rows it must hold");
  bind_a_out_bias(info, g, a, off_a, c, off_c, p.number(P::kBiasOffset), "a or b");
  const long eb = gemm_extent_b(g);
  check_fits(env, "b", off_b, eb, b.length);
  g.b = b.data + off_b;
  if (overlaps(g.c, static_cast<std::size_t>(gemm_extent_c(g)) * sizeof(float), g.b,
               static_cast<std::size_t>(eb) * sizeof(float))) {
    throw_range(env, "out must not share memory with a or b");
  }
  const KernelTable* kt = &kernels();
  return run(info, async, 4, [kt, g] { sgemm(*kt, g); });
}

// ------------------------------------------------------------ packed matrices
// A packed matrix travels to JS as a type-tagged External; its finalizer
// frees it and the packed bytes are reported to V8 as external memory.
const napi_type_tag kPackedMatrixTag = {0x8a6f1c2e5b3d4a71ULL, 0x93e0c4b7d2f16a58ULL};

// packMatrix(b, params) -> handle
Napi::Value pack_matrix_impl(const Napi::CallbackInfo& info) {
  using P = params::PackMatrix;
  Napi::Env env = info.Env();
  F32Arg b = get_f32(info, 0, "b");
  ParamReader<P> p(info, 1);
  GemmArgs g;
  g.k = p.integer(P::kK, 0, kMaxIndex, "k");
  g.n = p.integer(P::kN, 0, kMaxIndex, "n");
  g.ldb = p.integer(P::kLdb, 1, kMaxIndex, "ldb");
  g.trans_b = p.flag(P::kTransB, "transB");
  const long off = p.integer(P::kBOffset, 0, kMaxIndex, "offset of b");
  if (g.ldb < (g.trans_b ? g.k : g.n)) throw_range(env, "ldb is smaller than the rows it must hold");
  if (static_cast<double>(g.k) * static_cast<double>(g.n) > 4.0e15) throw_range(env, "b is too large");
  check_fits(env, "b", off, gemm_extent_b(g), b.length);
  PackedMatrix* pb = pack_matrix(kernels(), b.data + off, g.ldb, g.trans_b, g.k, g.n);
  const std::int64_t bytes = static_cast<std::int64_t>(pb->floats * sizeof(float));
  Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
  auto handle = Napi::External<PackedMatrix>::New(env, pb, [bytes](Napi::Env e, PackedMatrix* q) {
    Napi::MemoryManagement::AdjustExternalMemory(e, -bytes);
    delete q;
  });
  handle.TypeTag(&kPackedMatrixTag);
  return handle;
}

// gemmWithPacked(a, packed, out, bias | null | undefined, params)
Napi::Value gemm_with_packed_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::GemmWithPacked;
  Napi::Env env = info.Env();
  F32Arg a = get_f32(info, 0, "a");
  Napi::Value h = info[1];
  if (!h.IsExternal() || !h.As<Napi::Object>().CheckTypeTag(&kPackedMatrixTag)) {
    throw_type(env, "Expected a packed matrix for b but received " + describe(h));
  }
  const PackedMatrix* pb = h.As<Napi::External<PackedMatrix>>().Data();
  F32Arg c = get_f32(info, 2, "out");
  ParamReader<P> p(info, 4);
  GemmArgs g;
  g.n = pb->n;
  g.k = pb->k;
  long off_a, off_c;
  read_a_and_out(p, g, off_a, off_c);
  bind_a_out_bias(info, g, a, off_a, c, off_c, p.number(P::kBiasOffset), "a");
  return run(info, async, 4, [g, pb] { sgemm_with_packed(g, *pb); });
}

// ------------------------------------------------------------ softmax
// softmax(x, out, mask | null, params)
Napi::Value softmax_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::Softmax;
  Napi::Env env = info.Env();
  F32Arg x = get_f32(info, 0, "x");
  F32Arg y = get_f32(info, 1, "out");
  ParamReader<P> p(info, 3);
  SoftmaxArgs s;
  s.rank = static_cast<int>(p.integer(P::kRank, 1, kMaxRank, "rank"));
  const double scale = p.number(P::kScale);
  if (!std::isfinite(scale)) throw_range(env, "scale must be finite");
  s.scale = static_cast<float>(scale);
  s.causal = p.flag(P::kCausal, "causal");
  const long mask_kind = p.integer(P::kMaskKind, 0, 2, "mask kind");
  const long off_x = p.integer(P::kXOffset, 0, kMaxIndex, "offset of x");
  const long off_y = p.integer(P::kOutOffset, 0, kMaxIndex, "offset of out");
  const long off_m = p.integer(P::kMaskOffset, 0, kMaxIndex, "offset of mask");
  for (int d = 0; d < s.rank; ++d) {
    s.shape[d] = p.integer(P::kShape, d, 0, kMaxIndex, "shape");
    s.x_strides[d] = p.integer(P::kXStrides, d, 0, kMaxIndex, "x strides");
    s.y_strides[d] = p.integer(P::kOutStrides, d, 0, kMaxIndex, "out strides");
    s.m_strides[d] = p.integer(P::kMaskStrides, d, 0, kMaxIndex, "mask strides");
  }
  const int last = s.rank - 1;
  if (s.shape[last] > 1 && (s.x_strides[last] != 1 || s.y_strides[last] != 1)) {
    throw_range(env, "softmax needs the last axis of x and out to be contiguous");
  }
  if (mask_kind != 0 && s.shape[last] > 1 && s.m_strides[last] > 1) {
    throw_range(env, "softmax needs the last axis of the mask to be contiguous or broadcast");
  }
  const long ex = strided_extent(env, s.rank, s.shape, s.x_strides, "x");
  const long ey = strided_extent(env, s.rank, s.shape, s.y_strides, "out");
  check_fits(env, "x", off_x, ex, x.length);
  check_fits(env, "out", off_y, ey, y.length);
  s.x = x.data + off_x;
  s.y = y.data + off_y;
  // In place is fine when out is exactly x; any other overlap is not.
  bool same = s.x == s.y;
  for (int d = 0; d < s.rank && same; ++d) same = s.shape[d] <= 1 || s.x_strides[d] == s.y_strides[d];
  if (!same && overlaps(s.x, static_cast<std::size_t>(ex) * 4, s.y, static_cast<std::size_t>(ey) * 4)) {
    throw_range(env, "out must be x itself or not share memory with it");
  }
  if (mask_kind != 0) {
    const long em = strided_extent(env, s.rank, s.shape, s.m_strides, "mask");
    const void* m = mask_data(info, 2, mask_kind, off_m, em, "mask");
    if (mask_kind == 1) {
      s.fmask = static_cast<const float*>(m);
    } else {
      s.umask = static_cast<const std::uint8_t*>(m);
    }
  }
  const KernelTable* kt = &kernels();
  return run(info, async, 3, [kt, s] { softmax(*kt, s); });
}

// ------------------------------------------------------------ copy
// copyStrided(src, dst, params): dst's elements must be distinct (no zero or
// overlapping strides) and must not share memory with src.
Napi::Value copy_strided_impl(const Napi::CallbackInfo& info) {
  using P = params::CopyStrided;
  Napi::Env env = info.Env();
  const bool u8 = is_u8(info[0]);
  ParamReader<P> p(info, 2);
  const int rank = static_cast<int>(p.integer(P::kRank, 0, kMaxRank, "rank"));
  const long off_s = p.integer(P::kSrcOffset, 0, kMaxIndex, "offset of src");
  const long off_d = p.integer(P::kDstOffset, 0, kMaxIndex, "offset of dst");
  long shape[kMaxRank], ss[kMaxRank], ds[kMaxRank];
  double count = 1;
  for (int d = 0; d < rank; ++d) {
    shape[d] = p.integer(P::kShape, d, 0, kMaxIndex, "shape");
    ss[d] = p.integer(P::kSrcStrides, d, 0, kMaxIndex, "src strides");
    ds[d] = p.integer(P::kDstStrides, d, 0, kMaxIndex, "dst strides");
    count *= static_cast<double>(shape[d]);
  }
  if (count > static_cast<double>(kMaxIndex)) throw_range(env, "copy of more than 2^53 elements");
  // Distinct destination elements: sorted by stride, each axis must step past
  // everything the smaller axes span.
  {
    long order[kMaxRank];
    int n = 0;
    for (int d = 0; d < rank; ++d)
      if (shape[d] > 1) order[n++] = d;
    for (int i = 1; i < n; ++i)
      for (int j = i; j > 0 && ds[order[j]] < ds[order[j - 1]]; --j) std::swap(order[j], order[j - 1]);
    long span = 1;
    for (int i = 0; i < n; ++i) {
      if (ds[order[i]] < span) throw_range(env, "dst strides make elements overlap");
      span = ds[order[i]] * (shape[order[i]] - 1) + span;
    }
  }
  const long es = strided_extent(env, rank, shape, ss, "src");
  const long ed = strided_extent(env, rank, shape, ds, "dst");
  std::size_t len_s, len_d;
  void *src, *dst;
  if (u8) {
    U8Arg s = get_u8(info, 0, "src"), d = get_u8(info, 1, "dst");
    src = s.data + off_s;
    dst = d.data + off_d;
    len_s = s.length;
    len_d = d.length;
  } else {
    F32Arg s = get_f32(info, 0, "src"), d = get_f32(info, 1, "dst");
    src = s.data + off_s;
    dst = d.data + off_d;
    len_s = s.length;
    len_d = d.length;
  }
  check_fits(env, "src", off_s, es, len_s);
  check_fits(env, "dst", off_d, ed, len_d);
  const std::size_t esize = u8 ? 1 : 4;
  if (overlaps(src, static_cast<std::size_t>(es) * esize, dst, static_cast<std::size_t>(ed) * esize)) {
    throw_range(env, "dst must not share memory with src");
  }
  if (u8) {
    copy_strided_u8(rank, shape, static_cast<const std::uint8_t*>(src), ss, static_cast<std::uint8_t*>(dst), ds);
  } else {
    copy_strided_f32(rank, shape, static_cast<const float*>(src), ss, static_cast<float*>(dst), ds);
  }
  return env.Undefined();
}

// ------------------------------------------------------------ random fills
// fill(dst, params)
Napi::Value fill_impl(const Napi::CallbackInfo& info) {
  using P = params::Fill;
  Napi::Env env = info.Env();
  F32Arg d = get_f32(info, 0, "dst");
  ParamReader<P> p(info, 1);
  const long kind = p.integer(P::kDistribution, 0, 1, "kind");
  const long seed = p.integer(P::kSeed, 0, kMaxIndex, "seed");
  const double a = p.number(P::kMeanOrLow);
  const double b = p.number(P::kStdOrHigh);
  const long off = p.integer(P::kDstOffset, 0, kMaxIndex, "offset");
  const long n = p.integer(P::kCount, 0, kMaxIndex, "count");
  if (!std::isfinite(a) || !std::isfinite(b)) throw_range(env, "fill bounds must be finite");
  check_fits(env, "dst", off, n, d.length);
  if (kind == 0) {
    fill_normal(d.data + off, n, static_cast<std::uint64_t>(seed), a, b);
  } else {
    fill_uniform(d.data + off, n, static_cast<std::uint64_t>(seed), a, b);
  }
  return env.Undefined();
}

// ------------------------------------------------------------ attention
// One [batch, head, position, feature] operand with a unit feature stride:
// where it starts, how many elements it spans and their bytes.
struct View4 {
  const float* ptr = nullptr;
  long extent = 0;
  std::size_t bytes = 0;
};

// Reads the operand at argument `arg` of `shape`, its three outer strides
// (into `strides`) and its offset from the block, and checks it fits its array.
template <class Block>
View4 read_view4(const Napi::CallbackInfo& info, ParamReader<Block>& p, std::size_t arg,
                 typename Block::Slot strides_slot, typename Block::Slot offset_slot, const long (&shape)[4],
                 long* strides, const char* what) {
  Napi::Env env = info.Env();
  F32Arg t = get_f32(info, arg, what);
  for (int d = 0; d < 3; ++d) strides[d] = p.integer(strides_slot, d, 0, kMaxIndex, what);
  const long off = p.integer(offset_slot, 0, kMaxIndex, what);
  const long st[4] = {strides[0], strides[1], strides[2], 1};
  const long e = strided_extent(env, 4, shape, st, what);
  check_fits(env, what, off, e, t.length);
  return View4{t.data + off, e, static_cast<std::size_t>(e) * sizeof(float)};
}

// The batch, heads, queries and keys slots, named alike in the attention and
// additive-score blocks, into AttentionArgs or AdditiveArgs.
template <class P, class Args>
void read_positions(ParamReader<P>& p, Args& a) {
  a.batch = p.integer(P::kBatch, 0, kMaxIndex, "batch");
  a.heads = p.integer(P::kHeads, 0, kMaxIndex, "heads");
  a.sq = p.integer(P::kQueries, 0, kMaxIndex, "query length");
  a.sk = p.integer(P::kKeys, 0, kMaxIndex, "key length");
}

// The packed sequences' offsets at argument `arg`: an Int32Array of n + 1
// entries, 0 first, strictly increasing (no empty sequence), the last equal to
// `positions`. Copied, so a running job never reads an array the caller can
// still change.
std::vector<long> sequence_offsets(const Napi::CallbackInfo& info, std::size_t arg, long n, long positions) {
  Napi::Env env = info.Env();
  const I32Arg o = get_i32(info, arg, "sequenceOffsets");
  if (o.length != static_cast<std::size_t>(n) + 1) {
    throw_range(env, "Expected " + std::to_string(n + 1) + " entries in sequenceOffsets (sequences + 1) but received " +
                         std::to_string(o.length));
  }
  std::vector<long> off(o.data, o.data + o.length);
  if (off[0] != 0) throw_range(env, "sequenceOffsets[0] is " + std::to_string(off[0]) + ", expected 0");
  for (long s = 0; s < n; ++s) {
    if (off[static_cast<std::size_t>(s) + 1] <= off[static_cast<std::size_t>(s)]) {
      throw_range(env, "sequenceOffsets must increase strictly (every sequence holds a position): entry " +
                           std::to_string(s + 1) + " is " + std::to_string(off[static_cast<std::size_t>(s) + 1]) +
                           " after " + std::to_string(off[static_cast<std::size_t>(s)]));
    }
  }
  if (off.back() != positions) {
    throw_range(env, "sequenceOffsets ends at " + std::to_string(off.back()) + " but q, k, v and out hold " +
                         std::to_string(positions) + " positions");
  }
  return off;
}

// attention(q, k, v, out, mask | null, keyPadding | null, weights | null, scores | null, sequenceOffsets | null, params)
Napi::Value attention_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::Attention;
  Napi::Env env = info.Env();
  ParamReader<P> p(info, 9);
  AttentionArgs a;
  read_positions(p, a);
  a.dk = p.integer(P::kDk, 0, kMaxIndex, "key dimension");
  a.dv = p.integer(P::kDv, 0, kMaxIndex, "value dimension");
  const bool has_scores = p.flag(P::kHasScores, "scores flag");
  const bool has_weights = p.flag(P::kHasWeights, "weights flag");

  View4 q, k;
  if (!has_scores) {
    q = read_view4(info, p, 0, P::kQStrides, P::kQOffset, {a.batch, a.heads, a.sq, a.dk}, a.q_strides, "q");
    k = read_view4(info, p, 1, P::kKStrides, P::kKOffset, {a.batch, a.heads, a.sk, a.dk}, a.k_strides, "k");
  }
  const View4 v = read_view4(info, p, 2, P::kVStrides, P::kVOffset, {a.batch, a.heads, a.sk, a.dv}, a.v_strides, "v");
  const View4 o =
      read_view4(info, p, 3, P::kOutStrides, P::kOutOffset, {a.batch, a.heads, a.sq, a.dv}, a.out_strides, "out");
  if (a.sq > 1 && a.dv > 0 && a.out_strides[2] < a.dv) throw_range(env, "out rows overlap");
  a.q = q.ptr;
  a.k = k.ptr;
  a.v = v.ptr;
  a.out = const_cast<float*>(o.ptr);
  const double scale = p.number(P::kScale);
  if (!std::isfinite(scale)) throw_range(env, "scale must be finite");
  a.scale = static_cast<float>(scale);
  a.causal = p.flag(P::kCausal, "causal");

  const long mkind = p.integer(P::kMaskKind, 0, 2, "mask kind");
  std::size_t mask_bytes = 0;
  if (mkind != 0) {
    for (int d = 0; d < 4; ++d) a.mask_strides[d] = p.integer(P::kMaskStrides, d, 0, kMaxIndex, "mask strides");
    if (a.sk > 1 && a.mask_strides[3] > 1) throw_range(env, "the mask's key axis must be contiguous or broadcast");
    const long shape[4] = {a.batch, a.heads, a.sq, a.sk};
    const long e = strided_extent(env, 4, shape, a.mask_strides, "mask");
    a.mask_kind = static_cast<MaskKind>(mkind);
    a.mask = mask_data(info, 4, mkind, p.integer(P::kMaskOffset, 0, kMaxIndex, "mask offset"), e, "mask");
    mask_bytes = static_cast<std::size_t>(e) * (mkind == 1 ? 4 : 1);
  }
  const long kkind = p.integer(P::kKeyPaddingKind, 0, 2, "key padding mask kind");
  if (kkind != 0) {
    a.kpm_stride_b = p.integer(P::kKeyPaddingBatchStride, 0, kMaxIndex, "key padding mask stride");
    const long e = a.batch > 0 && a.sk > 0 ? (a.batch - 1) * a.kpm_stride_b + a.sk : 0;
    a.kpm_kind = static_cast<MaskKind>(kkind);
    a.kpm = mask_data(info, 5, kkind, p.integer(P::kKeyPaddingOffset, 0, kMaxIndex, "key padding mask offset"), e,
                      "keyPaddingMask");
  }
  const double full = static_cast<double>(a.batch) * a.heads * a.sq * a.sk;
  if (full > static_cast<double>(kMaxIndex)) throw_range(env, "attention weights would exceed 2^53 elements");
  const long wcount = static_cast<long>(full);
  if (has_weights) {
    F32Arg w = get_f32(info, 6, "weights");
    const long off = p.integer(P::kWeightsOffset, 0, kMaxIndex, "weights offset");
    check_fits(env, "weights", off, wcount, w.length);
    a.weights = w.data + off;
    const std::size_t wb = static_cast<std::size_t>(wcount) * 4;
    if (overlaps(a.weights, wb, o.ptr, o.bytes) || overlaps(a.weights, wb, v.ptr, v.bytes) ||
        overlaps(a.weights, wb, q.ptr, q.bytes) || overlaps(a.weights, wb, k.ptr, k.bytes) ||
        overlaps(a.weights, wb, a.mask, mask_bytes)) {
      throw_range(env, "weights must not share memory with the other operands");
    }
  }
  if (has_scores) {
    F32Arg s = get_f32(info, 7, "scores");
    const long off = p.integer(P::kScoresOffset, 0, kMaxIndex, "scores offset");
    check_fits(env, "scores", off, wcount, s.length);
    a.scores = s.data + off;
    if (overlaps(a.scores, static_cast<std::size_t>(wcount) * 4, o.ptr, o.bytes)) {
      throw_range(env, "out must not share memory with scores");
    }
  }
  if (overlaps(o.ptr, o.bytes, q.ptr, q.bytes) || overlaps(o.ptr, o.bytes, k.ptr, k.bytes) ||
      overlaps(o.ptr, o.bytes, v.ptr, v.bytes) || overlaps(o.ptr, o.bytes, a.mask, mask_bytes)) {
    throw_range(env, "out must not share memory with q, k, v or the mask");
  }
  const long sequences = p.integer(P::kSequences, 0, kMaxIndex, "sequences");
  std::vector<long> offsets;
  if (sequences > 0) {
    if (a.weights || a.scores || a.mask_kind != MaskKind::kNone || a.kpm_kind != MaskKind::kNone) {
      throw_range(env, "packed sequences take no mask, key padding, weights or scores");
    }
    if (a.sk != a.sq) {
      throw_range(env, "packed sequences need as many keys as queries (" + std::to_string(a.sq) + ") but received " +
                           std::to_string(a.sk));
    }
    offsets = sequence_offsets(info, 8, sequences, a.sq);
    a.sequences = sequences;
  } else if (!is_absent(info[8])) {
    throw_range(env, "sequenceOffsets was given but the sequences slot is 0");
  }
  const KernelTable* kt = &kernels();
  // Fused (flash) whenever the weights are not wanted and the scores are a dot
  // product; the explicit path builds the [queries, keys] weights.
  if (a.weights || a.scores) return run(info, async, 9, [kt, a] { attention_explicit(*kt, a); });
  return run(info, async, 9, [kt, a, offsets] {
    AttentionArgs job = a;
    job.seq_offsets = offsets.empty() ? nullptr : offsets.data();
    attention_fused(*kt, job);
  });
}

// additiveScores(pq, pk, w, bias | null | undefined, scores, params)
Napi::Value additive_scores_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::AdditiveScores;
  Napi::Env env = info.Env();
  ParamReader<P> p(info, 5);
  AdditiveArgs a;
  read_positions(p, a);
  a.hidden = p.integer(P::kHidden, 0, kMaxIndex, "hidden size");
  const View4 pq = read_view4(info, p, 0, P::kPqStrides, P::kPqOffset, {a.batch, a.heads, a.sq, a.hidden},
                              a.pq_strides, "projected queries");
  const View4 pk = read_view4(info, p, 1, P::kPkStrides, P::kPkOffset, {a.batch, a.heads, a.sk, a.hidden},
                              a.pk_strides, "projected keys");
  a.pq = pq.ptr;
  a.pk = pk.ptr;
  const std::size_t hidden_bytes = static_cast<std::size_t>(a.hidden) * sizeof(float);
  F32Arg w = get_f32(info, 2, "w");
  const long woff = p.integer(P::kWOffset, 0, kMaxIndex, "w offset");
  check_fits(env, "w", woff, a.hidden, w.length);
  a.w = w.data + woff;
  if (!is_absent(info[3])) {
    F32Arg b = get_f32(info, 3, "bias");
    const long boff = p.integer(P::kBiasOffset, 0, kMaxIndex, "bias offset");
    check_fits(env, "bias", boff, a.hidden, b.length);
    a.bias = b.data + boff;
  }
  F32Arg s = get_f32(info, 4, "scores");
  const long soff = p.integer(P::kScoresOffset, 0, kMaxIndex, "scores offset");
  const double n = static_cast<double>(a.batch) * a.heads * a.sq * a.sk;
  if (n > static_cast<double>(kMaxIndex)) throw_range(env, "scores would exceed 2^53 elements");
  check_fits(env, "scores", soff, static_cast<long>(n), s.length);
  a.scores = s.data + soff;
  const std::size_t sb = static_cast<std::size_t>(n) * sizeof(float);
  if (overlaps(a.scores, sb, pq.ptr, pq.bytes) || overlaps(a.scores, sb, pk.ptr, pk.bytes) ||
      overlaps(a.scores, sb, a.w, hidden_bytes) || overlaps(a.scores, sb, a.bias, a.bias ? hidden_bytes : 0)) {
    throw_range(env, "scores must not share memory with the inputs");
  }
  const KernelTable* kt = &kernels();
  return run(info, async, 5, [kt, a] { additive_scores(*kt, a); });
}

// l2Normalize(src, dst, params): dst contiguous.
Napi::Value l2_normalize_impl(const Napi::CallbackInfo& info) {
  using P = params::L2Normalize;
  Napi::Env env = info.Env();
  F32Arg src = get_f32(info, 0, "src");
  F32Arg dst = get_f32(info, 1, "dst");
  ParamReader<P> p(info, 2);
  const int rank = static_cast<int>(p.integer(P::kRank, 1, kMaxRank, "rank"));
  const long off_s = p.integer(P::kSrcOffset, 0, kMaxIndex, "offset of src");
  const long off_d = p.integer(P::kDstOffset, 0, kMaxIndex, "offset of dst");
  long shape[kMaxRank], strides[kMaxRank];
  double count = 1;
  for (int d = 0; d < rank; ++d) {
    shape[d] = p.integer(P::kShape, d, 0, kMaxIndex, "shape");
    strides[d] = p.integer(P::kSrcStrides, d, 0, kMaxIndex, "strides");
    count *= static_cast<double>(shape[d]);
  }
  if (count > static_cast<double>(kMaxIndex)) throw_range(env, "normalize of more than 2^53 elements");
  if (shape[rank - 1] > 1 && strides[rank - 1] != 1) throw_range(env, "the last axis of src must be contiguous");
  const double eps = p.number(P::kEps);
  if (!(eps > 0) || !std::isfinite(eps)) throw_range(env, "eps must be positive and finite");
  const long es = strided_extent(env, rank, shape, strides, "src");
  check_fits(env, "src", off_s, es, src.length);
  check_fits(env, "dst", off_d, static_cast<long>(count), dst.length);
  if (overlaps(src.data + off_s, static_cast<std::size_t>(es) * 4, dst.data + off_d, static_cast<std::size_t>(count) * 4)) {
    throw_range(env, "dst must not share memory with src");
  }
  l2_normalize(rank, shape, src.data + off_s, strides, dst.data + off_d, static_cast<float>(eps));
  return env.Undefined();
}

// toFloat32(bytes: Uint8Array, dtype: 0 F16 | 1 BF16 | 2 F64, dst: Float32Array)
// Little-endian input, any alignment.
Napi::Value to_float32_impl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  U8Arg src = get_u8(info, 0, "bytes");
  if (!info[1].IsNumber()) throw_type(env, "Expected dtype code but received " + describe(info[1]));
  const long kind = get_int(env, info[1].As<Napi::Number>().DoubleValue(), 0, 2, "dtype code");
  F32Arg dst = get_f32(info, 2, "dst");
  const std::size_t size = kind == 2 ? 8 : 2;
  if (src.length != dst.length * size) {
    throw_range(env, "Expected " + std::to_string(dst.length * size) + " bytes for " +
                         std::to_string(dst.length) + " values but received " + std::to_string(src.length));
  }
  if (overlaps(src.data, src.length, dst.data, dst.length * 4)) throw_range(env, "dst must not share memory with bytes");
  convert_to_f32(static_cast<int>(kind), src.data, static_cast<long>(dst.length), dst.data);
  return env.Undefined();
}

// ------------------------------------------------------------ runtime
Napi::Value cpu_info_impl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CpuInfo& ci = cpu_info();
  const Dispatch& d = dispatch();
  const KernelTable& kt = *d.active;
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", kt.name);
  o.Set("requestedIsa", d.requested.empty() ? std::string("auto") : d.requested);
  Napi::Array avail = Napi::Array::New(env);
  uint32_t n = 0;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon}) {
    if (kernels_for(isa, nullptr)) avail.Set(n++, isa_name(isa));
  }
  o.Set("availableIsas", avail);
  o.Set("arch", ci.arch);
  o.Set("vendor", ci.vendor);
  o.Set("model", ci.brand);
  Napi::Object f = Napi::Object::New(env);
  const CpuFeatures& cf = ci.features;
  f.Set("sse2", cf.sse2);
  f.Set("avx", cf.avx);
  f.Set("avx2", cf.avx2);
  f.Set("fma", cf.fma);
  f.Set("f16c", cf.f16c);
  f.Set("avx512f", cf.avx512f);
  f.Set("avx512bw", cf.avx512bw);
  f.Set("avx512dq", cf.avx512dq);
  f.Set("avx512vl", cf.avx512vl);
  f.Set("osYmm", cf.os_ymm);
  f.Set("osZmm", cf.os_zmm);
  f.Set("neon", cf.neon);
  o.Set("features", f);
  Napi::Object c = Napi::Object::New(env);
  c.Set("l1d", static_cast<double>(ci.cache.l1d));
  c.Set("l2", static_cast<double>(ci.cache.l2));
  c.Set("l3", static_cast<double>(ci.cache.l3));
  o.Set("caches", c);
  o.Set("threads", ThreadPool::global().size());
  o.Set("logicalCpus", ci.logical_cpus);
  o.Set("vectorWidth", kt.vector_width);
  Napi::Object gb = Napi::Object::New(env);
  GemmBlocking blk = gemm_blocking(kt);
  gb.Set("mr", kt.mr);
  gb.Set("nr", kt.nr);
  gb.Set("mc", static_cast<double>(blk.mc));
  gb.Set("kc", static_cast<double>(blk.kc));
  gb.Set("nc", static_cast<double>(blk.nc));
  o.Set("gemmBlocking", gb);
  return o;
}

Napi::Value set_num_threads_impl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value v = info[0];
  if (!v.IsNumber()) throw_type(env, "Expected integer in [1, 1024] for numThreads but received " + describe(v));
  long n = get_int(env, v.As<Napi::Number>().DoubleValue(), 1, 1024, "numThreads");
  ThreadPool::global().resize(static_cast<int>(n));
  return env.Undefined();
}

Napi::Value get_num_threads_impl(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ThreadPool::global().size());
}

// Runs the active path's FMA loop; returns the flops it did (time it in JS).
Napi::Value fma_peak_impl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw_type(env, "Expected integer for iterations but received " + describe(info[0]));
  long it = get_int(env, info[0].As<Napi::Number>().DoubleValue(), 1, 1L << 40, "iterations");
  return Napi::Number::New(env, kernels().fma_peak(it));
}

// Every block's slots read so far, by block name: { gemm: ['m', 'n', ...], ... }.
Napi::Value param_slots_read_impl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  for (int b = 0; b < params::kBlockCount; ++b) {
    const params::BlockInfo& block = params::kBlocks[b];
    const std::uint64_t bits = g_param_slots_read[b].load(std::memory_order_relaxed);
    Napi::Array names = Napi::Array::New(env);
    uint32_t n = 0;
    for (std::size_t e = 0; e < block.size; ++e) {
      if (bits >> e & 1) names.Set(n++, block.elements[e]);
    }
    o.Set(block.name, names);
  }
  return o;
}

}  // namespace

void register_ops(Napi::Env env, Napi::Object exports) {
  auto fn = [&](const char* name, Napi::Value (*f)(const Napi::CallbackInfo&)) {
    exports.Set(name, Napi::Function::New(env, f, name));
  };
  //  name                   implementation
  fn("gemm",                 [](const Napi::CallbackInfo& i) { return gemm_impl(i, false); });
  fn("gemmAsync",            [](const Napi::CallbackInfo& i) { return gemm_impl(i, true); });
  fn("packMatrix",           pack_matrix_impl);
  fn("gemmWithPacked",       [](const Napi::CallbackInfo& i) { return gemm_with_packed_impl(i, false); });
  fn("gemmWithPackedAsync",  [](const Napi::CallbackInfo& i) { return gemm_with_packed_impl(i, true); });
  fn("softmax",              [](const Napi::CallbackInfo& i) { return softmax_impl(i, false); });
  fn("softmaxAsync",         [](const Napi::CallbackInfo& i) { return softmax_impl(i, true); });
  fn("copyStrided",          copy_strided_impl);
  fn("attention",            [](const Napi::CallbackInfo& i) { return attention_impl(i, false); });
  fn("attentionAsync",       [](const Napi::CallbackInfo& i) { return attention_impl(i, true); });
  fn("additiveScores",       [](const Napi::CallbackInfo& i) { return additive_scores_impl(i, false); });
  fn("additiveScoresAsync",  [](const Napi::CallbackInfo& i) { return additive_scores_impl(i, true); });
  fn("l2Normalize",          l2_normalize_impl);
  fn("toFloat32",            to_float32_impl);
  fn("fill",                 fill_impl);
  fn("cpuInfo",              cpu_info_impl);
  fn("setNumThreads",        set_num_threads_impl);
  fn("getNumThreads",        get_num_threads_impl);
  fn("fmaPeak",              fma_peak_impl);
  fn("paramSlotsRead",       param_slots_read_impl);
}

}  // namespace addon
}  // namespace attn
