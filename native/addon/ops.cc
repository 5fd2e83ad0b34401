// The operations the TypeScript layer calls. Each one parses its arguments
// into a plain struct (checking every bound again, with overflow-checked
// arithmetic: this layer must never touch memory outside the arrays it was
// given), registers the arrays the kernel reads and writes, then runs the
// kernel now (sync) or on a worker thread (async; see job.h for how its
// memory stays valid).
// Integers and scalars come in one Float64Array per call, read by slot name
// through ParamReader (layouts: native/params.json).
#include "ops.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../kernels/attention.h"
#include "../kernels/bounds.h"
#include "../kernels/gemm.h"
#include "../kernels/layers.h"
#include "../kernels/softmax.h"
#include "../kernels/tensor_ops.h"
#include "../kernels/tuning.h"
#include "../runtime/cpu.h"
#include "../runtime/dispatch.h"
#include "../runtime/thread_pool.h"
#include "args.h"
#include "job.h"
#include "memory.h"
#include "param_reader.h"

namespace attn {
namespace addon {
namespace {

static_assert(params::kMaxRank == kMaxRank, "native/params.json's maxRank is the kernels' kMaxRank");

// ------------------------------------------------------------ shared checks
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

// Registers a mask read by the kernel (its pointer is typed by kind).
void read_mask(KernelCall& call, std::size_t arg, long kind, const void*& mask, long extent) {
  if (kind == 1) {
    const float* m = static_cast<const float*>(mask);
    call.read(arg, m, extent);
    mask = m;
  } else if (kind == 2) {
    const std::uint8_t* m = static_cast<const std::uint8_t*>(mask);
    call.read(arg, m, extent);
    mask = m;
  }
}

const char* name_of(bool async, const char* sync_name, const char* async_name) { return async ? async_name : sync_name; }

// ------------------------------------------------------------ gemm
// What gemm and gemmWithPacked check alike: A, out and the optional bias
// (argument 3, at bias_offset) fit their arrays; out's elements are distinct;
// out shares memory with neither A nor the bias. Sets g.a, g.c and g.bias;
// g's shape and strides must be set. `inputs` names the operands out must
// stay apart from, `a_name` the left operand. Returns the extents of A and out.
struct AOut {
  long ea, ec;
};
AOut bind_a_out_bias(const Napi::CallbackInfo& info, GemmArgs& g, const F32Arg& a, long off_a, const F32Arg& c,
                     long off_c, double bias_offset, const char* inputs, const char* a_name = "a") {
  Napi::Env env = info.Env();
  if (g.lda < (g.trans_a ? g.m : g.k)) throw_range(env, "lda is smaller than the rows it must hold");
  if (g.ldc < g.n) throw_range(env, "ldc is smaller than n");
  long ea, ec;
  if (!gemm_extent_a(g, &ea) || ea > kMaxIndex) throw_range(env, std::string(a_name) + ": its shape and strides span more than 2^53 elements");
  if (!gemm_extent_c(g, &ec) || ec > kMaxIndex) throw_range(env, "out: its shape and strides span more than 2^53 elements");
  check_fits(env, a_name, off_a, ea, a.length);
  check_fits(env, "out", off_c, ec, c.length);
  const long out_shape[3] = {g.batch, g.m, g.n}, out_strides[3] = {g.stride_c, g.ldc, 1};
  check_distinct(env, "out", 3, out_shape, out_strides);
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
  return AOut{ea, ec};
}

// Registers A, the bias and out of a bound gemm with the call.
void register_a_out_bias(KernelCall& call, GemmArgs& g, const AOut& e) {
  call.read(0, g.a, e.ea);
  if (g.bias) call.read(3, g.bias, g.n);
  const long shape[3] = {g.batch, g.m, g.n}, strides[3] = {g.stride_c, g.ldc, 1};
  call.write(2, g.c, e.ec, Layout::strided(3, shape, strides), "out", g.beta != 0.0f);
}

// The slots gemm and gemmWithPacked share (named alike in both blocks): m,
// A's and out's layouts, the batch, alpha, beta and streamOut.
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
  g.stream_out = p.flag(P::kStreamOut, "streamOut");
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
  const AOut e = bind_a_out_bias(info, g, a, off_a, c, off_c, p.number(P::kBiasOffset), "a or b");
  long eb;
  if (!gemm_extent_b(g, &eb) || eb > kMaxIndex) throw_range(env, "b: its shape and strides span more than 2^53 elements");
  check_fits(env, "b", off_b, eb, b.length);
  g.b = b.data + off_b;
  if (overlaps(g.c, static_cast<std::size_t>(e.ec) * sizeof(float), g.b, static_cast<std::size_t>(eb) * sizeof(float))) {
    throw_range(env, "out must not share memory with a or b");
  }
  KernelCall call(info, async, name_of(async, "gemm", "gemmAsync"));
  call.read(1, g.b, eb);
  register_a_out_bias(call, g, e);
  const KernelTable* kt = &kernels();
  return call.run([kt, g] { sgemm(*kt, g); });
}

// ------------------------------------------------------------ packed matrices
// A packed matrix travels to JS as a type-tagged External holding a shared
// pointer, so an async job can keep the matrix alive past the External; the
// packed bytes are reported to V8 as external memory (with the tile unit's
// copy on the amx path, made on first use: counted from the start).
const napi_type_tag kPackedMatrixTag = {0x8a6f1c2e5b3d4a71ULL, 0x93e0c4b7d2f16a58ULL};

// The handle for a packed matrix, or null when it cannot be made (the
// environment is going away, say). Plain Node-API: also used while settling.
napi_value packed_handle(napi_env env, std::shared_ptr<PackedMatrix> pm) {
  const std::int64_t bytes = static_cast<std::int64_t>(pm->floats * sizeof(float) + pm->amx_bytes());
  auto* holder = new (std::nothrow) std::shared_ptr<PackedMatrix>(std::move(pm));
  if (!holder) return nullptr;
  auto finalize = [](napi_env e, void* data, void* hint) {
    auto* h = static_cast<std::shared_ptr<PackedMatrix>*>(data);
    std::int64_t unused;
    napi_adjust_external_memory(e, -static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(hint)), &unused);
    delete h;
  };
  napi_value handle;
  if (napi_create_external(env, holder, finalize, reinterpret_cast<void*>(static_cast<std::intptr_t>(bytes)),
                           &handle) != napi_ok) {
    delete holder;
    return nullptr;
  }
  std::int64_t unused;
  napi_adjust_external_memory(env, bytes, &unused);
  if (napi_type_tag_object(env, handle, &kPackedMatrixTag) != napi_ok) return nullptr;
  return handle;
}

// The packed matrix behind argument i.
std::shared_ptr<PackedMatrix> packed_arg(const Napi::CallbackInfo& info, std::size_t i, const char* what) {
  Napi::Value h = info[i];
  if (!h.IsExternal() || !h.As<Napi::Object>().CheckTypeTag(&kPackedMatrixTag)) {
    throw_type(info.Env(), std::string("Expected a packed matrix for ") + what + " but received " + describe(h));
  }
  return *h.As<Napi::External<std::shared_ptr<PackedMatrix>>>().Data();
}

// packMatrix(b, params) -> handle; packMatrixAsync(b, params) -> Promise<handle>
Napi::Value pack_matrix_impl(const Napi::CallbackInfo& info, bool async) {
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
  long eb;
  if (!gemm_extent_b(g, &eb) || eb > kMaxIndex) throw_range(env, "b: its shape and strides span more than 2^53 elements");
  check_fits(env, "b", off, eb, b.length);
  const float* src = b.data + off;
  const KernelTable* kt = &kernels();
  if (!async) {
    napi_value handle = packed_handle(env, pack_matrix(*kt, src, g.ldb, g.trans_b, g.k, g.n));
    if (!handle) throw Napi::Error::New(env, "packMatrix: cannot create the handle");
    return Napi::Value(env, handle);
  }
  KernelCall call(info, true, "packMatrixAsync");
  call.read(0, src, eb);
  auto result = std::make_shared<std::shared_ptr<PackedMatrix>>();
  call.result([result](napi_env e) -> napi_value { return *result ? packed_handle(e, std::move(*result)) : nullptr; });
  return call.run([kt, src, g, result] { *result = pack_matrix(*kt, src, g.ldb, g.trans_b, g.k, g.n); });
}

// gemmWithPacked(a, packed, out, bias | null | undefined, params)
Napi::Value gemm_with_packed_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::GemmWithPacked;
  F32Arg a = get_f32(info, 0, "a");
  std::shared_ptr<PackedMatrix> pb = packed_arg(info, 1, "b");
  F32Arg c = get_f32(info, 2, "out");
  ParamReader<P> p(info, 4);
  GemmArgs g;
  g.n = pb->n;
  g.k = pb->k;
  long off_a, off_c;
  read_a_and_out(p, g, off_a, off_c);
  const AOut e = bind_a_out_bias(info, g, a, off_a, c, off_c, p.number(P::kBiasOffset), "a");
  KernelCall call(info, async, name_of(async, "gemmWithPacked", "gemmWithPackedAsync"));
  register_a_out_bias(call, g, e);
  const PackedMatrix* raw = pb.get();
  call.hold(pb);
  return call.run([g, raw] { sgemm_with_packed(g, *raw); });
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
  s.stream_out = p.flag(P::kStreamOut, "streamOut");
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
  element_count(env, "x", s.rank, s.shape);
  check_distinct(env, "out", s.rank, s.shape, s.y_strides);
  const long ex = view_extent(env, "x", s.rank, s.shape, s.x_strides);
  const long ey = view_extent(env, "out", s.rank, s.shape, s.y_strides);
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
  long em = 0;
  const void* mask = nullptr;
  if (mask_kind != 0) {
    em = view_extent(env, "mask", s.rank, s.shape, s.m_strides);
    mask = mask_data(info, 2, mask_kind, off_m, em, "mask");
  }
  KernelCall call(info, async, name_of(async, "softmax", "softmaxAsync"));
  call.read(0, s.x, ex);
  read_mask(call, 2, mask_kind, mask, em);
  call.write(1, s.y, ey, Layout::strided(s.rank, s.shape, s.y_strides), "out");
  if (mask_kind == 1) s.fmask = static_cast<const float*>(mask);
  if (mask_kind == 2) s.umask = static_cast<const std::uint8_t*>(mask);
  const KernelTable* kt = &kernels();
  return call.run([kt, s] { softmax(*kt, s); });
}

// ------------------------------------------------------------ copy
// copyStrided(src, dst, params): dst's elements must be distinct and must not
// share memory with src.
Napi::Value copy_strided_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::CopyStrided;
  Napi::Env env = info.Env();
  const bool u8 = is_u8(info[0]);
  ParamReader<P> p(info, 2);
  const int rank = static_cast<int>(p.integer(P::kRank, 0, kMaxRank, "rank"));
  const long off_s = p.integer(P::kSrcOffset, 0, kMaxIndex, "offset of src");
  const long off_d = p.integer(P::kDstOffset, 0, kMaxIndex, "offset of dst");
  const bool stream_out = p.flag(P::kStreamOut, "streamOut");
  long shape[kMaxRank], ss[kMaxRank], ds[kMaxRank];
  for (int d = 0; d < rank; ++d) {
    shape[d] = p.integer(P::kShape, d, 0, kMaxIndex, "shape");
    ss[d] = p.integer(P::kSrcStrides, d, 0, kMaxIndex, "src strides");
    ds[d] = p.integer(P::kDstStrides, d, 0, kMaxIndex, "dst strides");
  }
  element_count(env, "src", rank, shape);
  check_distinct(env, "dst", rank, shape, ds);
  const long es = view_extent(env, "src", rank, shape, ss);
  const long ed = view_extent(env, "dst", rank, shape, ds);
  std::size_t len_s, len_d;
  void *src, *dst;
  if (u8) {
    U8Arg s = get_u8(info, 0, "src"), d = get_u8(info, 1, "dst");
    src = s.data;
    dst = d.data;
    len_s = s.length;
    len_d = d.length;
  } else {
    F32Arg s = get_f32(info, 0, "src"), d = get_f32(info, 1, "dst");
    src = s.data;
    dst = d.data;
    len_s = s.length;
    len_d = d.length;
  }
  check_fits(env, "src", off_s, es, len_s);
  check_fits(env, "dst", off_d, ed, len_d);
  const std::size_t esize = u8 ? 1 : 4;
  if (es > 0) src = static_cast<char*>(src) + off_s * static_cast<long>(esize);
  if (ed > 0) dst = static_cast<char*>(dst) + off_d * static_cast<long>(esize);
  if (overlaps(src, static_cast<std::size_t>(es) * esize, dst, static_cast<std::size_t>(ed) * esize)) {
    throw_range(env, "dst must not share memory with src");
  }
  KernelCall call(info, async, name_of(async, "copyStrided", "copyStridedAsync"));
  const Layout view = Layout::strided(rank, shape, ds);
  std::array<long, kMaxRank> sh{}, sst{}, dst_st{};
  std::copy(shape, shape + rank, sh.begin());
  std::copy(ss, ss + rank, sst.begin());
  std::copy(ds, ds + rank, dst_st.begin());
  if (u8) {
    const std::uint8_t* s = static_cast<const std::uint8_t*>(src);
    std::uint8_t* d = static_cast<std::uint8_t*>(dst);
    call.read(0, s, es);
    call.write(1, d, ed, view, "dst");
    return call.run([rank, sh, sst, dst_st, s, d, stream_out] {
      copy_strided_u8(rank, sh.data(), s, sst.data(), d, dst_st.data(), stream_out);
    });
  }
  const float* s = static_cast<const float*>(src);
  float* d = static_cast<float*>(dst);
  call.read(0, s, es);
  call.write(1, d, ed, view, "dst");
  return call.run([rank, sh, sst, dst_st, s, d, stream_out] {
    copy_strided_f32(rank, sh.data(), s, sst.data(), d, dst_st.data(), stream_out);
  });
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
  if (n == 0) return env.Undefined();
  if (kind == 0) {
    fill_normal(d.data + off, n, static_cast<std::uint64_t>(seed), a, b);
  } else {
    fill_uniform(d.data + off, n, static_cast<std::uint64_t>(seed), a, b);
  }
  return env.Undefined();
}

// ------------------------------------------------------------ attention
// One [batch, head, position, feature] operand with a unit feature stride:
// where it starts and how many elements it spans.
struct View4 {
  const float* ptr = nullptr;
  long extent = 0;
  std::size_t bytes() const { return static_cast<std::size_t>(extent) * sizeof(float); }
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
  const long e = view_extent(env, what, 4, shape, st);
  check_fits(env, what, off, e, t.length);
  return View4{e > 0 ? t.data + off : t.data, e};
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

// batch · heads · queries · keys · per-pair work must stay below 2^53: bounds
// every product the kernels form (scratch sizes, offsets) and refuses calls
// that could not finish anyway (keys broadcast from one row, say).
void check_work(Napi::Env env, const char* fn, long batch, long heads, long sq, long sk, long per_pair) {
  const long dims[5] = {batch, heads, sq, sk, per_pair > 1 ? per_pair : 1};
  long n;
  if (!checked_count(5, dims, &n) || n > kMaxIndex) {
    throw_range(env, std::string(fn) + ": batch, heads, queries, keys and features multiply to more than 2^53; "
                                       "the call is too large to compute");
  }
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
  const char* fn = name_of(async, "attention", "attentionAsync");
  ParamReader<P> p(info, 9);
  AttentionArgs a;
  read_positions(p, a);
  a.dk = p.integer(P::kDk, 0, kMaxIndex, "key dimension");
  a.dv = p.integer(P::kDv, 0, kMaxIndex, "value dimension");
  const bool has_scores = p.flag(P::kHasScores, "scores flag");
  const bool has_weights = p.flag(P::kHasWeights, "weights flag");
  long dk_plus_dv;
  if (!checked_add(a.dk, a.dv, &dk_plus_dv)) throw_range(env, "dk + dv is too large");
  check_work(env, fn, a.batch, a.heads, a.sq, a.sk, dk_plus_dv);

  View4 q, k;
  if (!has_scores) {
    q = read_view4(info, p, 0, P::kQStrides, P::kQOffset, {a.batch, a.heads, a.sq, a.dk}, a.q_strides, "q");
    k = read_view4(info, p, 1, P::kKStrides, P::kKOffset, {a.batch, a.heads, a.sk, a.dk}, a.k_strides, "k");
  }
  View4 v = read_view4(info, p, 2, P::kVStrides, P::kVOffset, {a.batch, a.heads, a.sk, a.dv}, a.v_strides, "v");
  const long out_shape[4] = {a.batch, a.heads, a.sq, a.dv};
  View4 o = read_view4(info, p, 3, P::kOutStrides, P::kOutOffset, out_shape, a.out_strides, "out");
  const long out_strides[4] = {a.out_strides[0], a.out_strides[1], a.out_strides[2], 1};
  check_distinct(env, "out", 4, out_shape, out_strides);
  const double scale = p.number(P::kScale);
  if (!std::isfinite(scale)) throw_range(env, "scale must be finite");
  a.scale = static_cast<float>(scale);
  a.causal = p.flag(P::kCausal, "causal");
  a.causal_always = p.integer(P::kCausalAlways, 0, kMaxIndex, "causalAlways");

  const long mkind = p.integer(P::kMaskKind, 0, 2, "mask kind");
  long mask_extent = 0;
  if (mkind != 0) {
    for (int d = 0; d < 4; ++d) a.mask_strides[d] = p.integer(P::kMaskStrides, d, 0, kMaxIndex, "mask strides");
    if (a.sk > 1 && a.mask_strides[3] > 1) throw_range(env, "the mask's key axis must be contiguous or broadcast");
    const long shape[4] = {a.batch, a.heads, a.sq, a.sk};
    mask_extent = view_extent(env, "mask", 4, shape, a.mask_strides);
    a.mask_kind = static_cast<MaskKind>(mkind);
    a.mask = mask_data(info, 4, mkind, p.integer(P::kMaskOffset, 0, kMaxIndex, "mask offset"), mask_extent, "mask");
  }
  const std::size_t mask_bytes = static_cast<std::size_t>(mask_extent) * (mkind == 1 ? 4 : 1);
  const long kkind = p.integer(P::kKeyPaddingKind, 0, 2, "key padding mask kind");
  long kpm_extent = 0;
  if (kkind != 0) {
    a.kpm_stride_b = p.integer(P::kKeyPaddingBatchStride, 0, kMaxIndex, "key padding mask stride");
    const long shape[2] = {a.batch, a.sk}, strides[2] = {a.kpm_stride_b, 1};
    kpm_extent = view_extent(env, "keyPaddingMask", 2, shape, strides);
    a.kpm_kind = static_cast<MaskKind>(kkind);
    a.kpm = mask_data(info, 5, kkind, p.integer(P::kKeyPaddingOffset, 0, kMaxIndex, "key padding mask offset"),
                      kpm_extent, "keyPaddingMask");
  }
  const long full[4] = {a.batch, a.heads, a.sq, a.sk};
  const long wcount = element_count(env, "weights", 4, full);
  if (has_weights) {
    F32Arg w = get_f32(info, 6, "weights");
    const long off = p.integer(P::kWeightsOffset, 0, kMaxIndex, "weights offset");
    check_fits(env, "weights", off, wcount, w.length);
    a.weights = w.data + (wcount > 0 ? off : 0);
    const std::size_t wb = static_cast<std::size_t>(wcount) * 4;
    if (overlaps(a.weights, wb, o.ptr, o.bytes()) || overlaps(a.weights, wb, v.ptr, v.bytes()) ||
        overlaps(a.weights, wb, q.ptr, q.bytes()) || overlaps(a.weights, wb, k.ptr, k.bytes()) ||
        overlaps(a.weights, wb, a.mask, mask_bytes)) {
      throw_range(env, "weights must not share memory with the other operands");
    }
  }
  if (has_scores) {
    F32Arg s = get_f32(info, 7, "scores");
    const long off = p.integer(P::kScoresOffset, 0, kMaxIndex, "scores offset");
    check_fits(env, "scores", off, wcount, s.length);
    a.scores = s.data + (wcount > 0 ? off : 0);
    if (overlaps(a.scores, static_cast<std::size_t>(wcount) * 4, o.ptr, o.bytes())) {
      throw_range(env, "out must not share memory with scores");
    }
  }
  if (overlaps(o.ptr, o.bytes(), q.ptr, q.bytes()) || overlaps(o.ptr, o.bytes(), k.ptr, k.bytes()) ||
      overlaps(o.ptr, o.bytes(), v.ptr, v.bytes()) || overlaps(o.ptr, o.bytes(), a.mask, mask_bytes)) {
    throw_range(env, "out must not share memory with q, k, v or the mask");
  }
  const long sequences = p.integer(P::kSequences, 0, kMaxIndex, "sequences");
  std::vector<long> offsets;
  if (sequences > 0) {
    if (has_weights || has_scores || mkind != 0 || kkind != 0 || a.causal_always != 0) {
      throw_range(env, "packed sequences take no mask, key padding, weights, scores or always-visible keys");
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
  KernelCall call(info, async, fn);
  a.q = q.ptr;
  a.k = k.ptr;
  a.v = v.ptr;
  a.out = const_cast<float*>(o.ptr);
  if (!has_scores) {
    call.read(0, a.q, q.extent);
    call.read(1, a.k, k.extent);
  }
  call.read(2, a.v, v.extent);
  read_mask(call, 4, mkind, a.mask, mask_extent);
  read_mask(call, 5, kkind, a.kpm, kpm_extent);
  if (has_scores) call.read(7, a.scores, wcount);
  call.write(3, a.out, o.extent, Layout::strided(4, out_shape, out_strides), "out");
  if (has_weights) call.write(6, a.weights, wcount, Layout::contiguous(wcount), "weights");
  const KernelTable* kt = &kernels();
  // Fused (flash) whenever the weights are not wanted and the scores are a dot
  // product; the explicit path builds the [queries, keys] weights, or starts
  // from given scores. Packed sequences' offsets travel with the job (copied).
  if (has_weights || has_scores) return call.run([kt, a] { attention_explicit(*kt, a); });
  return call.run([kt, a, offsets] {
    AttentionArgs job = a;
    job.seq_offsets = offsets.empty() ? nullptr : offsets.data();
    attention_fused(*kt, job);
  });
}

// additiveScores(pq, pk, w, bias | null | undefined, scores, params)
Napi::Value additive_scores_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::AdditiveScores;
  Napi::Env env = info.Env();
  const char* fn = name_of(async, "additiveScores", "additiveScoresAsync");
  ParamReader<P> p(info, 5);
  AdditiveArgs a;
  read_positions(p, a);
  a.hidden = p.integer(P::kHidden, 0, kMaxIndex, "hidden size");
  check_work(env, fn, a.batch, a.heads, a.sq, a.sk, a.hidden);
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
  a.w = w.data + (a.hidden > 0 ? woff : 0);
  if (!is_absent(info[3])) {
    F32Arg b = get_f32(info, 3, "bias");
    const long boff = p.integer(P::kBiasOffset, 0, kMaxIndex, "bias offset");
    check_fits(env, "bias", boff, a.hidden, b.length);
    a.bias = b.data + (a.hidden > 0 ? boff : 0);
  }
  F32Arg s = get_f32(info, 4, "scores");
  const long soff = p.integer(P::kScoresOffset, 0, kMaxIndex, "scores offset");
  const long full[4] = {a.batch, a.heads, a.sq, a.sk};
  const long n = element_count(env, "scores", 4, full);
  check_fits(env, "scores", soff, n, s.length);
  a.scores = s.data + (n > 0 ? soff : 0);
  const std::size_t sb = static_cast<std::size_t>(n) * sizeof(float);
  if (overlaps(a.scores, sb, pq.ptr, pq.bytes()) || overlaps(a.scores, sb, pk.ptr, pk.bytes()) ||
      overlaps(a.scores, sb, a.w, hidden_bytes) || overlaps(a.scores, sb, a.bias, a.bias ? hidden_bytes : 0)) {
    throw_range(env, "scores must not share memory with the inputs");
  }
  KernelCall call(info, async, fn);
  call.read(0, a.pq, pq.extent);
  call.read(1, a.pk, pk.extent);
  call.read(2, a.w, a.hidden);
  if (a.bias) call.read(3, a.bias, a.hidden);
  call.write(4, a.scores, n, Layout::contiguous(n), "scores");
  const KernelTable* kt = &kernels();
  return call.run([kt, a] { additive_scores(*kt, a); });
}

// l2Normalize(src, dst, params): dst contiguous.
Napi::Value l2_normalize_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::L2Normalize;
  Napi::Env env = info.Env();
  F32Arg src = get_f32(info, 0, "src");
  F32Arg dst = get_f32(info, 1, "dst");
  ParamReader<P> p(info, 2);
  const int rank = static_cast<int>(p.integer(P::kRank, 1, kMaxRank, "rank"));
  const long off_s = p.integer(P::kSrcOffset, 0, kMaxIndex, "offset of src");
  const long off_d = p.integer(P::kDstOffset, 0, kMaxIndex, "offset of dst");
  std::array<long, kMaxRank> shape{}, strides{};
  for (int d = 0; d < rank; ++d) {
    shape[d] = p.integer(P::kShape, d, 0, kMaxIndex, "shape");
    strides[d] = p.integer(P::kSrcStrides, d, 0, kMaxIndex, "strides");
  }
  const long count = element_count(env, "src", rank, shape.data());
  if (shape[rank - 1] > 1 && strides[rank - 1] != 1) throw_range(env, "the last axis of src must be contiguous");
  const double eps = p.number(P::kEps);
  if (!(eps > 0) || !std::isfinite(eps)) throw_range(env, "eps must be positive and finite");
  const long es = view_extent(env, "src", rank, shape.data(), strides.data());
  check_fits(env, "src", off_s, es, src.length);
  check_fits(env, "dst", off_d, count, dst.length);
  const float* s = src.data + (es > 0 ? off_s : 0);
  float* d = dst.data + (count > 0 ? off_d : 0);
  if (overlaps(s, static_cast<std::size_t>(es) * 4, d, static_cast<std::size_t>(count) * 4)) {
    throw_range(env, "dst must not share memory with src");
  }
  KernelCall call(info, async, name_of(async, "l2Normalize", "l2NormalizeAsync"));
  call.read(0, s, es);
  call.write(1, d, count, Layout::contiguous(count), "dst");
  const float e = static_cast<float>(eps);
  return call.run([rank, shape, strides, s, d, e] { l2_normalize(rank, shape.data(), s, strides.data(), d, e); });
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
  if (dst.length > static_cast<std::size_t>(kMaxIndex) || src.length != dst.length * size) {
    throw_range(env, "Expected " + std::to_string(dst.length * size) + " bytes for " +
                         std::to_string(dst.length) + " values but received " + std::to_string(src.length));
  }
  if (overlaps(src.data, src.length, dst.data, dst.length * 4)) throw_range(env, "dst must not share memory with bytes");
  if (dst.length > 0) convert_to_f32(static_cast<int>(kind), src.data, static_cast<long>(dst.length), dst.data);
  return env.Undefined();
}

// ------------------------------------------------------------ transformer layers
// A strided operand of `rank` dimensions over `shape`, read from the block:
// its strides and offset, checked to fit its array; the last axis must be
// contiguous (stride 1) unless it has at most one element.
struct RowView {
  float* ptr = nullptr;
  long strides[kMaxRank] = {};
  long extent = 0;
};

template <class P>
RowView read_rows(Napi::Env env, ParamReader<P>& p, const F32Arg& arr, int rank, const long* shape,
                  typename P::Slot strides_slot, typename P::Slot offset_slot, const char* what) {
  RowView v;
  for (int d = 0; d < rank; ++d) v.strides[d] = p.integer(strides_slot, d, 0, kMaxIndex, what);
  if (shape[rank - 1] > 1 && v.strides[rank - 1] != 1) {
    throw_range(env, std::string("the last axis of ") + what + " must be contiguous (stride 1)");
  }
  const long off = p.integer(offset_slot, 0, kMaxIndex, what);
  v.extent = view_extent(env, what, rank, shape, v.strides);
  check_fits(env, what, off, v.extent, arr.length);
  v.ptr = arr.data + off;
  return v;
}

// An output `out` that shares memory with input `in` without being exactly
// it (the same elements in the same layout: in place).
bool clashes(const RowView& out, const RowView& in, int rank, const long* shape) {
  if (!in.ptr || !overlaps(out.ptr, static_cast<std::size_t>(out.extent) * 4, in.ptr, static_cast<std::size_t>(in.extent) * 4)) {
    return false;
  }
  if (out.ptr != in.ptr) return true;
  for (int d = 0; d < rank; ++d)
    if (shape[d] > 1 && out.strides[d] != in.strides[d]) return true;
  return false;
}

// One row of `cols` floats at argument i (or nothing when it is absent).
const float* optional_row(const Napi::CallbackInfo& info, std::size_t i, double offset, long cols, const char* what) {
  if (is_absent(info[i])) return nullptr;
  F32Arg t = get_f32(info, i, what);
  const long off = get_int(info.Env(), offset, 0, kMaxIndex, what);
  check_fits(info.Env(), what, off, cols, t.length);
  return t.data + off;
}

// The rank and shape slots of a block, with the element count below 2^53.
template <class P>
int read_shape(Napi::Env env, ParamReader<P>& p, long* shape) {
  const int rank = static_cast<int>(p.integer(P::kRank, 1, kMaxRank, "rank"));
  for (int d = 0; d < rank; ++d) shape[d] = p.integer(P::kShape, d, 0, kMaxIndex, "shape");
  element_count(env, "x", rank, shape);
  return rank;
}

// layerNorm(x, residual | null, shift | null, weight | null, bias | null, out, sum | null, params)
// out and sum may each be x or the residual exactly (same layout); otherwise
// they share no memory with any input, nor with each other.
Napi::Value layer_norm_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::LayerNorm;
  Napi::Env env = info.Env();
  F32Arg x = get_f32(info, 0, "x");
  F32Arg out = get_f32(info, 5, "out");
  ParamReader<P> p(info, 7);
  LayerNormArgs a;
  a.rank = read_shape(env, p, a.shape);
  a.stream_out = p.flag(P::kStreamOut, "streamOut");
  const int rank = a.rank;
  const long cols = a.shape[rank - 1];
  const RowView xv = read_rows(env, p, x, rank, a.shape, P::kXStrides, P::kXOffset, "x");
  const RowView ov = read_rows(env, p, out, rank, a.shape, P::kOutStrides, P::kOutOffset, "out");
  check_distinct(env, "out", rank, a.shape, ov.strides);
  RowView rv;
  if (!is_absent(info[1])) rv = read_rows(env, p, get_f32(info, 1, "residual"), rank, a.shape, P::kResidualStrides,
                                          P::kResidualOffset, "residual");
  RowView sv;
  if (!is_absent(info[6])) {
    sv = read_rows(env, p, get_f32(info, 6, "sum"), rank, a.shape, P::kSumStrides, P::kSumOffset, "sum");
    check_distinct(env, "sum", rank, a.shape, sv.strides);
  }
  a.shift = optional_row(info, 2, p.number(P::kShiftOffset), cols, "shift");
  a.gamma = optional_row(info, 3, p.number(P::kWeightOffset), cols, "weight");
  a.beta = optional_row(info, 4, p.number(P::kBiasOffset), cols, "bias");
  const double eps = p.number(P::kEps);
  if (!std::isfinite(eps) || eps < 0) throw_range(env, "Expected finite non-negative number for eps but received " + std::to_string(eps));
  a.eps = static_cast<float>(eps);
  const std::size_t row = static_cast<std::size_t>(cols) * 4;
  for (const RowView* o : {&ov, static_cast<const RowView*>(&sv)}) {
    if (!o->ptr) continue;
    const std::size_t ob = static_cast<std::size_t>(o->extent) * 4;
    if (clashes(*o, xv, rank, a.shape) || clashes(*o, rv, rank, a.shape) ||
        overlaps(o->ptr, ob, a.shift, a.shift ? row : 0) || overlaps(o->ptr, ob, a.gamma, a.gamma ? row : 0) ||
        overlaps(o->ptr, ob, a.beta, a.beta ? row : 0)) {
      throw_range(env, std::string(o == &ov ? "out" : "sum") +
                           " must be x or the residual itself, or share no memory with the inputs");
    }
  }
  if (sv.ptr && overlaps(ov.ptr, static_cast<std::size_t>(ov.extent) * 4, sv.ptr, static_cast<std::size_t>(sv.extent) * 4)) {
    throw_range(env, "out and sum must not share memory");
  }
  a.x = xv.ptr;
  for (int d = 0; d < rank; ++d) {
    a.x_strides[d] = xv.strides[d];
    a.y_strides[d] = ov.strides[d];
    a.r_strides[d] = rv.strides[d];
    a.sum_strides[d] = sv.strides[d];
  }
  a.residual = rv.ptr;
  a.y = ov.ptr;
  a.sum = sv.ptr;
  KernelCall call(info, async, name_of(async, "layerNorm", "layerNormAsync"));
  call.read(0, a.x, xv.extent);
  if (a.residual) call.read(1, a.residual, rv.extent);
  if (a.shift) call.read(2, a.shift, cols);
  if (a.gamma) call.read(3, a.gamma, cols);
  if (a.beta) call.read(4, a.beta, cols);
  call.write(5, a.y, ov.extent, Layout::strided(rank, a.shape, a.y_strides), "out");
  if (a.sum) call.write(6, a.sum, sv.extent, Layout::strided(rank, a.shape, a.sum_strides), "sum");
  const KernelTable* kt = &kernels();
  return call.run([kt, a] { layer_norm(*kt, a); });
}

// activation(x, out, params): out may be x itself (same layout) or share no memory with it.
Napi::Value activation_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::Activation;
  Napi::Env env = info.Env();
  F32Arg x = get_f32(info, 0, "x");
  F32Arg out = get_f32(info, 1, "out");
  ParamReader<P> p(info, 2);
  ActivationArgs a;
  a.act = static_cast<int>(p.integer(P::kKind, 1, kActivationCount - 1, "activation kind"));
  a.stream_out = p.flag(P::kStreamOut, "streamOut");
  a.rank = read_shape(env, p, a.shape);
  const RowView xv = read_rows(env, p, x, a.rank, a.shape, P::kXStrides, P::kXOffset, "x");
  const RowView ov = read_rows(env, p, out, a.rank, a.shape, P::kOutStrides, P::kOutOffset, "out");
  check_distinct(env, "out", a.rank, a.shape, ov.strides);
  if (clashes(ov, xv, a.rank, a.shape)) throw_range(env, "out must be x itself or share no memory with it");
  a.x = xv.ptr;
  a.y = ov.ptr;
  for (int d = 0; d < a.rank; ++d) {
    a.x_strides[d] = xv.strides[d];
    a.y_strides[d] = ov.strides[d];
  }
  KernelCall call(info, async, name_of(async, "activation", "activationAsync"));
  call.read(0, a.x, xv.extent);
  call.write(1, a.y, ov.extent, Layout::strided(a.rank, a.shape, a.y_strides), "out");
  const KernelTable* kt = &kernels();
  return call.run([kt, a] { activation(*kt, a); });
}

// linear(x, weight | packed, out, bias | null, params): out = act(x W^T + bias).
Napi::Value linear_impl(const Napi::CallbackInfo& info, bool async) {
  using P = params::Linear;
  Napi::Env env = info.Env();
  F32Arg x = get_f32(info, 0, "x");
  std::shared_ptr<PackedMatrix> pm;
  F32Arg w;
  if (info[1].IsExternal()) {
    pm = packed_arg(info, 1, "weight");
  } else {
    w = get_f32(info, 1, "weight");
  }
  F32Arg c = get_f32(info, 2, "out");
  ParamReader<P> p(info, 4);
  GemmArgs g;
  g.m = p.integer(P::kM, 0, kMaxIndex, "m");
  g.n = p.integer(P::kN, 0, kMaxIndex, "n");
  g.k = p.integer(P::kK, 0, kMaxIndex, "k");
  g.lda = p.integer(P::kLda, 1, kMaxIndex, "lda");
  g.ldc = p.integer(P::kLdc, 1, kMaxIndex, "ldc");
  g.act = static_cast<int>(p.integer(P::kActivation, 0, kActivationCount - 1, "activation"));
  const long off_x = p.integer(P::kXOffset, 0, kMaxIndex, "offset of x");
  const long off_c = p.integer(P::kOutOffset, 0, kMaxIndex, "offset of out");
  long off_w = 0;
  if (pm) {
    if (pm->k != g.k || pm->n != g.n) {
      throw_range(env, "the packed weight is [" + std::to_string(pm->k) + ", " + std::to_string(pm->n) + "], expected [" +
                           std::to_string(g.k) + ", " + std::to_string(g.n) + "]");
    }
  } else {
    g.ldb = p.integer(P::kLdw, 1, kMaxIndex, "ldw");
    g.trans_b = !p.flag(P::kWTransposed, "wTransposed");  // [n, k] rows are columns of B
    off_w = p.integer(P::kWOffset, 0, kMaxIndex, "offset of weight");
    if (g.ldb < (g.trans_b ? g.k : g.n)) throw_range(env, "ldw is smaller than the rows it must hold");
  }
  const AOut e = bind_a_out_bias(info, g, x, off_x, c, off_c, p.number(P::kBiasOffset), "x or the weight", "x");
  KernelCall call(info, async, name_of(async, "linear", "linearAsync"));
  if (pm) {
    register_a_out_bias(call, g, e);
    const PackedMatrix* raw = pm.get();
    call.hold(pm);
    return call.run([g, raw] { sgemm_with_packed(g, *raw); });
  }
  long ew;
  if (!gemm_extent_b(g, &ew) || ew > kMaxIndex) throw_range(env, "weight: its shape and strides span more than 2^53 elements");
  check_fits(env, "weight", off_w, ew, w.length);
  g.b = w.data + off_w;
  if (overlaps(g.c, static_cast<std::size_t>(e.ec) * 4, g.b, static_cast<std::size_t>(ew) * 4)) {
    throw_range(env, "out must not share memory with x or the weight");
  }
  call.read(1, g.b, ew);
  register_a_out_bias(call, g, e);
  const KernelTable* kt = &kernels();
  return call.run([kt, g] { sgemm(*kt, g); });
}

// ------------------------------------------------------------ memory
// allocate(bytes, zero) -> ArrayBuffer over addon-owned memory, or undefined
// when this runtime refuses external ArrayBuffers.
Napi::Value allocate_impl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw_type(env, "Expected byte count for bytes but received " + describe(info[0]));
  const long bytes = get_int(env, info[0].As<Napi::Number>().DoubleValue(), 1, kMaxIndex, "bytes");
  if (!info[1].IsBoolean()) throw_type(env, "Expected boolean for zero but received " + describe(info[1]));
  Napi::Value ab = allocate_array_buffer(env, static_cast<std::size_t>(bytes), info[1].As<Napi::Boolean>().Value());
  return ab.IsEmpty() ? env.Undefined() : ab;
}

// isOwned(typedArray) -> whether its memory is the addon's.
Napi::Value is_owned_impl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) throw_type(env, "Expected typed array for array but received " + describe(info[0]));
  return Napi::Boolean::New(env, owned_block(env, info[0]) != nullptr);
}

// memoryStats() -> the block cache's counters.
Napi::Value memory_stats_impl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BlockStats s = block_stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cachedBytes", static_cast<double>(s.cached_bytes));
  o.Set("liveBytes", static_cast<double>(s.live_bytes));
  o.Set("reused", static_cast<double>(s.reused));
  o.Set("allocated", static_cast<double>(s.allocated));
  return o;
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
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAmx, Isa::kNeon}) {
    if (kernels_for(isa, nullptr)) avail.Set(n++, isa_name(isa));
  }
  o.Set("availableIsas", avail);
  o.Set("arch", ci.arch);
  o.Set("vendor", ci.vendor);
  o.Set("model", ci.brand);
  o.Set("family", cpu_family_name(ci.family_id));
  Napi::Object id = Napi::Object::New(env);
  id.Set("family", ci.family);
  id.Set("model", ci.model);
  id.Set("stepping", ci.stepping);
  o.Set("cpuid", id);
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
  f.Set("amxTile", cf.amx_tile);
  f.Set("amxBf16", cf.amx_bf16);
  f.Set("osAmx", cf.os_amx);
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
  gb.Set("ncL2", static_cast<double>(blk.nc_l2));
  o.Set("gemmBlocking", gb);
  const Tuning& tu = tuning();
  Napi::Object tn = Napi::Object::New(env);
  tn.Set("family", cpu_family_name(tu.family));
  tn.Set("prefetchPanels", tu.prefetch_panels);
  tn.Set("streamPanels", tu.stream_panels);
  tn.Set("minParallelFlops", tu.min_parallel_flops);
  tn.Set("basis", tu.basis);
  o.Set("tuning", tn);
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

Napi::Value set_idle_spin_impl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value v = info[0];
  if (!v.IsNumber()) {
    throw_type(env, "Expected integer in [0, " + std::to_string(ThreadPool::kMaxSpinMicros) +
                        "] for microseconds but received " + describe(v));
  }
  long us = get_int(env, v.As<Napi::Number>().DoubleValue(), 0, ThreadPool::kMaxSpinMicros, "microseconds");
  ThreadPool::global().set_spin_micros(us);
  return env.Undefined();
}

Napi::Value get_idle_spin_impl(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(ThreadPool::global().spin_micros()));
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

// Runs a binding. The TypeErrors and RangeErrors it throws go to JavaScript
// as they are; any other C++ exception becomes a JavaScript error instead of
// escaping into Node: out of memory a RangeError, anything else an Error
// naming the call.
Napi::Value guarded(const char* name, const Napi::CallbackInfo& info, Napi::Value (*f)(const Napi::CallbackInfo&)) {
  try {
    return f(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + ": out of memory");
  } catch (const std::length_error&) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + ": out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string(name) + ": " + e.what());
  }
}

}  // namespace

void register_ops(Napi::Env env, Napi::Object exports) {
  using Fn = Napi::Value (*)(const Napi::CallbackInfo&);
  auto fn = [&](const char* name, Fn f) {
    exports.Set(name, Napi::Function::New(env, [name, f](const Napi::CallbackInfo& i) { return guarded(name, i, f); }, name));
  };
  //  name                   implementation
  fn("gemm",                 [](const Napi::CallbackInfo& i) { return gemm_impl(i, false); });
  fn("gemmAsync",            [](const Napi::CallbackInfo& i) { return gemm_impl(i, true); });
  fn("packMatrix",           [](const Napi::CallbackInfo& i) { return pack_matrix_impl(i, false); });
  fn("packMatrixAsync",      [](const Napi::CallbackInfo& i) { return pack_matrix_impl(i, true); });
  fn("gemmWithPacked",       [](const Napi::CallbackInfo& i) { return gemm_with_packed_impl(i, false); });
  fn("gemmWithPackedAsync",  [](const Napi::CallbackInfo& i) { return gemm_with_packed_impl(i, true); });
  fn("softmax",              [](const Napi::CallbackInfo& i) { return softmax_impl(i, false); });
  fn("softmaxAsync",         [](const Napi::CallbackInfo& i) { return softmax_impl(i, true); });
  fn("copyStrided",          [](const Napi::CallbackInfo& i) { return copy_strided_impl(i, false); });
  fn("copyStridedAsync",     [](const Napi::CallbackInfo& i) { return copy_strided_impl(i, true); });
  fn("attention",            [](const Napi::CallbackInfo& i) { return attention_impl(i, false); });
  fn("attentionAsync",       [](const Napi::CallbackInfo& i) { return attention_impl(i, true); });
  fn("additiveScores",       [](const Napi::CallbackInfo& i) { return additive_scores_impl(i, false); });
  fn("additiveScoresAsync",  [](const Napi::CallbackInfo& i) { return additive_scores_impl(i, true); });
  fn("l2Normalize",          [](const Napi::CallbackInfo& i) { return l2_normalize_impl(i, false); });
  fn("l2NormalizeAsync",     [](const Napi::CallbackInfo& i) { return l2_normalize_impl(i, true); });
  fn("layerNorm",            [](const Napi::CallbackInfo& i) { return layer_norm_impl(i, false); });
  fn("layerNormAsync",       [](const Napi::CallbackInfo& i) { return layer_norm_impl(i, true); });
  fn("activation",           [](const Napi::CallbackInfo& i) { return activation_impl(i, false); });
  fn("activationAsync",      [](const Napi::CallbackInfo& i) { return activation_impl(i, true); });
  fn("linear",               [](const Napi::CallbackInfo& i) { return linear_impl(i, false); });
  fn("linearAsync",          [](const Napi::CallbackInfo& i) { return linear_impl(i, true); });
  fn("chain",                chain_impl);
  fn("toFloat32",            to_float32_impl);
  fn("fill",                 fill_impl);
  fn("allocate",             allocate_impl);
  fn("isOwned",              is_owned_impl);
  fn("memoryStats",          memory_stats_impl);
  fn("cpuInfo",              cpu_info_impl);
  fn("setNumThreads",        set_num_threads_impl);
  fn("getNumThreads",        get_num_threads_impl);
  fn("setIdleSpin",          set_idle_spin_impl);
  fn("getIdleSpin",          get_idle_spin_impl);
  fn("fmaPeak",              fma_peak_impl);
  fn("paramSlotsRead",       param_slots_read_impl);
}

}  // namespace addon
}  // namespace attn
