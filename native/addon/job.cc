#include "job.h"

#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "../kernels/tensor_ops.h"
#include "args.h"
#include "memory.h"

namespace attn {
namespace addon {

Layout Layout::contiguous(long n) {
  Layout l;
  l.rank = 1;
  l.shape[0] = n;
  l.strides[0] = 1;
  return l;
}

Layout Layout::strided(int rank, const long* shape, const long* strides) {
  Layout l;
  l.rank = rank;
  for (int d = 0; d < rank; ++d) {
    l.shape[d] = shape[d];
    l.strides[d] = strides[d];
  }
  return l;
}

// An output the job writes into a private copy, to be copied back.
struct WriteBack {
  napi_ref array = nullptr;  // the typed array (kept from collection)
  std::size_t offset = 0;    // bytes from the typed array's first byte to the output's first element
  std::size_t bytes = 0;     // bytes from there the output spans
  void* staged = nullptr;
  std::size_t elem = 4;
  Layout view;
  std::string what;
};

struct Job {
  std::string fn;
  std::function<void()> kernel;
  std::function<napi_value(napi_env)> result;  // what the Promise resolves with, when set
  std::vector<Block*> blocks;  // one reference each
  std::vector<std::shared_ptr<const void>> held;
  std::vector<WriteBack> writes;
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  enum class Failure { kNone, kRange, kError } failure = Failure::kNone;
  std::string message;

  void fail(Failure f, std::string m) {
    if (failure != Failure::kNone) return;
    failure = f;
    message = std::move(m);
  }

  // Drops every reference and handle; safe during environment teardown.
  void release(napi_env env) {
    for (WriteBack& w : writes) {
      if (w.array) napi_delete_reference(env, w.array);
      w.array = nullptr;
    }
    for (Block* b : blocks) b->release();
    blocks.clear();
    held.clear();
    if (work) napi_delete_async_work(env, work);
    work = nullptr;
  }
};

namespace {

// The async calls of a chain's callback, in order; owned here until queued,
// then by the chain's work.
struct Chain {
  std::vector<Job*> jobs;
  napi_async_work work = nullptr;
};

// The chain whose callback is running on this thread (each environment runs
// its JavaScript on a thread of its own).
thread_local Chain* tl_chain = nullptr;

void execute(napi_env, void* data) {
  Job* job = static_cast<Job*>(data);
  try {
    job->kernel();
  } catch (const std::bad_alloc&) {
    job->fail(Job::Failure::kRange, job->fn + ": out of memory while running the kernel");
  } catch (const std::exception& e) {
    job->fail(Job::Failure::kError, job->fn + ": " + e.what());
  } catch (...) {
    job->fail(Job::Failure::kError, job->fn + ": the kernel failed");
  }
}

// Copies each staged output back into its typed array, if that still holds
// the output's bytes.
void write_back(napi_env env, Job* job) {
  for (WriteBack& w : job->writes) {
    napi_value array;
    if (napi_get_reference_value(env, w.array, &array) != napi_ok || array == nullptr) continue;  // collected
    napi_typedarray_type type;
    std::size_t length = 0;
    void* data = nullptr;
    if (napi_get_typedarray_info(env, array, &type, &length, &data, nullptr, nullptr) != napi_ok) continue;
    const std::size_t have = length * w.elem;
    if (data == nullptr || have < w.offset || have - w.offset < w.bytes) {
      job->fail(Job::Failure::kRange, job->fn + ": " + w.what +
                                          " was detached or shrunk while the call ran; its result was discarded");
      continue;
    }
    char* dst = static_cast<char*>(data) + w.offset;
    if (w.elem == 1) {
      copy_strided_u8(w.view.rank, w.view.shape, static_cast<const std::uint8_t*>(w.staged), w.view.strides,
                      reinterpret_cast<std::uint8_t*>(dst), w.view.strides);
    } else {
      copy_strided_f32(w.view.rank, w.view.shape, static_cast<const float*>(w.staged), w.view.strides,
                       reinterpret_cast<float*>(dst), w.view.strides);
    }
  }
}

// Resolves or rejects the Promise. Every step may fail while the environment
// is torn down; then nobody can observe the Promise, and there is nothing to do.
void settle(napi_env env, Job* job, napi_status status) {
  if (status == napi_cancelled) job->fail(Job::Failure::kError, job->fn + ": cancelled");
  if (job->failure == Job::Failure::kNone) {
    napi_value value = nullptr;
    if (job->result) {
      value = job->result(env);
      if (!value) job->fail(Job::Failure::kError, job->fn + ": cannot create the result");
    } else if (napi_get_undefined(env, &value) != napi_ok) {
      value = nullptr;
    }
    if (value) {
      napi_resolve_deferred(env, job->deferred, value);
      return;
    }
    if (job->failure == Job::Failure::kNone) return;
  }
  napi_value msg, error;
  if (napi_create_string_utf8(env, job->message.c_str(), job->message.size(), &msg) != napi_ok) return;
  const napi_status made = job->failure == Job::Failure::kRange ? napi_create_range_error(env, nullptr, msg, &error)
                                                                : napi_create_error(env, nullptr, msg, &error);
  if (made == napi_ok) napi_reject_deferred(env, job->deferred, error);
}

void complete(napi_env env, napi_status status, void* data) {
  std::unique_ptr<Job> job(static_cast<Job*>(data));
  try {
    if (status == napi_ok && job->failure == Job::Failure::kNone) write_back(env, job.get());
    settle(env, job.get(), status);
  } catch (...) {
    // Out of memory building a message: the Promise stays pending; the job
    // still releases everything below.
  }
  job->release(env);
}

void chain_execute(napi_env env, void* data) {
  Chain* chain = static_cast<Chain*>(data);
  bool failed = false;
  for (Job* job : chain->jobs) {
    if (failed) {
      job->fail(Job::Failure::kError, job->fn + ": not run, as an earlier kernel of the same call failed");
      continue;
    }
    execute(env, job);
    failed = job->failure != Job::Failure::kNone;
  }
}

// Settles every call of the chain, in order, and frees the chain.
void chain_complete(napi_env env, napi_status status, void* data) {
  std::unique_ptr<Chain> chain(static_cast<Chain*>(data));
  if (chain->work) napi_delete_async_work(env, chain->work);
  chain->work = nullptr;
  for (Job* job : chain->jobs) complete(env, status, job);
  chain->jobs.clear();
}

// Queues a chain's calls as one work item; when that cannot be done, every
// call rejects. Never throws.
std::size_t queue_chain(napi_env env, std::unique_ptr<Chain> chain) {
  const std::size_t n = chain->jobs.size();
  if (n == 0) return 0;
  napi_value name;
  if (napi_create_string_utf8(env, "attention-kernels", NAPI_AUTO_LENGTH, &name) == napi_ok &&
      napi_create_async_work(env, nullptr, name, chain_execute, chain_complete, chain.get(), &chain->work) == napi_ok &&
      napi_queue_async_work(env, chain->work) == napi_ok) {
    chain.release();  // chain_complete owns it now
    return n;
  }
  for (Job* job : chain->jobs) {
    try {
      job->fail(Job::Failure::kError, job->fn + ": cannot start the async work");
    } catch (...) {
      // no memory for the message: the Promise stays pending, as in complete()
    }
  }
  chain_complete(env, napi_ok, chain.release());
  return 0;
}

}  // namespace

bool KernelCall::chaining() { return tl_chain != nullptr; }

Napi::Value chain_impl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    throw Napi::TypeError::New(env, "chain: callback must be a function; received " + describe(info[0]));
  }
  if (tl_chain) {
    // Inside another chain's callback: the calls join that chain, which queues them.
    info[0].As<Napi::Function>().Call(env.Undefined(), {});
    return Napi::Number::New(env, 0);
  }
  std::unique_ptr<Chain> chain = std::make_unique<Chain>();
  // Whatever the callback does, the chain closes and what it holds is queued.
  tl_chain = chain.get();
  std::exception_ptr thrown;
  try {
    info[0].As<Napi::Function>().Call(env.Undefined(), {});
  } catch (...) {
    thrown = std::current_exception();
  }
  tl_chain = nullptr;
  const std::size_t queued = queue_chain(env, std::move(chain));
  if (thrown) std::rethrow_exception(thrown);
  return Napi::Number::New(env, static_cast<double>(queued));
}

KernelCall::KernelCall(const Napi::CallbackInfo& info, bool async, const char* fn) : info_(info) {
  if (async) {
    job_ = std::make_unique<Job>();
    job_->fn = fn;
  }
}

KernelCall::~KernelCall() {
  if (job_) job_->release(info_.Env());  // never queued
}

void KernelCall::hold(std::shared_ptr<const void> object) {
  if (job_) job_->held.push_back(std::move(object));
}

void KernelCall::result(std::function<napi_value(napi_env)> make) {
  if (job_) job_->result = std::move(make);
}

void KernelCall::stage(std::size_t arg, void*& p, long extent, std::size_t elem, const Layout* view,
                       const char* what, bool copy_in) {
  if (!job_ || p == nullptr || extent <= 0) return;
  napi_env env = info_.Env();
  napi_value array = info_[arg];
  job_->blocks.reserve(job_->blocks.size() + 1);
  if (Block* owned = owned_block(env, array)) {
    owned->retain();
    job_->blocks.push_back(owned);
    return;
  }
  if (view && tl_chain) {
    throw Napi::TypeError::New(env, std::string(job_->fn) + ": " + what +
                                        ": a call inside chain() writes only the addon's memory (from allocate); received " +
                                        describe(Napi::Value(env, array)));
  }
  // Not the addon's memory: work on a private copy.
  const std::size_t bytes = static_cast<std::size_t>(extent) * elem;
  Block* copy = Block::create(bytes, false);
  job_->blocks.push_back(copy);
  if (copy_in) std::memcpy(copy->data(), p, bytes);
  if (view) {
    void* base = nullptr;
    napi_status s = napi_get_typedarray_info(env, array, nullptr, nullptr, &base, nullptr, nullptr);
    if (s != napi_ok || base == nullptr) throw Napi::Error::New(info_.Env(), std::string(what) + " is not a typed array");
    WriteBack w;
    w.offset = static_cast<std::size_t>(static_cast<char*>(p) - static_cast<char*>(base));
    w.bytes = bytes;
    w.staged = copy->data();
    w.elem = elem;
    w.view = *view;
    w.what = what;
    job_->writes.reserve(job_->writes.size() + 1);
    if (napi_create_reference(env, array, 1, &w.array) != napi_ok) {
      throw Napi::Error::New(info_.Env(), std::string(what) + ": cannot keep a reference to the array");
    }
    job_->writes.push_back(std::move(w));
  }
  p = copy->data();
}

Napi::Value KernelCall::run(std::function<void()> kernel) {
  Napi::Env env = info_.Env();
  if (!job_) {
    kernel();
    return env.Undefined();
  }
  job_->kernel = std::move(kernel);
  if (tl_chain) {
    napi_value promise;
    tl_chain->jobs.reserve(tl_chain->jobs.size() + 1);
    if (napi_create_promise(env, &job_->deferred, &promise) != napi_ok) {
      throw Napi::Error::New(env, job_->fn + ": cannot start the async work");
    }
    tl_chain->jobs.push_back(job_.release());  // the chain owns it now
    return Napi::Value(env, promise);
  }
  napi_value promise, name;
  if (napi_create_promise(env, &job_->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "attention-kernels", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, nullptr, name, execute, complete, job_.get(), &job_->work) != napi_ok) {
    throw Napi::Error::New(env, job_->fn + ": cannot start the async work");
  }
  if (napi_queue_async_work(env, job_->work) != napi_ok) {
    throw Napi::Error::New(env, job_->fn + ": cannot queue the async work");
  }
  job_.release();  // complete() owns it now
  return Napi::Value(env, promise);
}

}  // namespace addon
}  // namespace attn
