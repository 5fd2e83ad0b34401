#include "job.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../kernels/tensor_ops.h"
#include "../runtime/thread_pool.h"
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

  // Drops what the job holds when its environment is gone (its Promise and
  // references went with it). Any thread.
  void release_detached() {
    for (Block* b : blocks) b->release();
    blocks.clear();
    held.clear();
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

// Marks the job failed with message fn + suffix; without the message when
// there is no memory for it. Never throws (it runs off the main thread).
void fail_safely(Job* job, Job::Failure kind, const char* suffix) noexcept {
  try {
    job->fail(kind, job->fn + suffix);
  } catch (...) {
    if (job->failure == Job::Failure::kNone) job->failure = kind;
  }
}

void execute(napi_env, void* data) {
  Job* job = static_cast<Job*>(data);
  try {
    job->kernel();
  } catch (const std::bad_alloc&) {
    fail_safely(job, Job::Failure::kRange, ": out of memory while running the kernel");
  } catch (const std::exception& e) {
    std::string what;
    try {
      what = std::string(": ") + e.what();
    } catch (...) {
      what.clear();
    }
    fail_safely(job, Job::Failure::kError, what.empty() ? ": the kernel failed" : what.c_str());
  } catch (...) {
    fail_safely(job, Job::Failure::kError, ": the kernel failed");
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

// Queues data on libuv's pool (execute there, complete on the main thread),
// keeping the work's handle in *work; false when that cannot be done.
bool queue_on_libuv(napi_env env, void* data, napi_async_execute_callback run, napi_async_complete_callback done,
                    napi_async_work* work) {
  napi_value name;
  return napi_create_string_utf8(env, "attention-kernels", NAPI_AUTO_LENGTH, &name) == napi_ok &&
         napi_create_async_work(env, nullptr, name, run, done, data, work) == napi_ok &&
         napi_queue_async_work(env, *work) == napi_ok;
}

void chain_execute(napi_env env, void* data) {
  Chain* chain = static_cast<Chain*>(data);
  bool failed = false;
  for (Job* job : chain->jobs) {
    if (failed) {
      fail_safely(job, Job::Failure::kError, ": not run, as an earlier kernel of the same call failed");
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

bool submit_chain(napi_env env, Chain* chain);

// Queues a chain's calls as one work item; when that cannot be done, every
// call rejects. Never throws.
std::size_t queue_chain(napi_env env, std::unique_ptr<Chain> chain) {
  const std::size_t n = chain->jobs.size();
  if (n == 0) return 0;
  if (submit_chain(env, chain.get())) {
    chain.release();  // the addon's thread has it
    return n;
  }
  if (queue_on_libuv(env, chain.get(), chain_execute, chain_complete, &chain->work)) {
    chain.release();  // chain_complete owns it now
    return n;
  }
  for (Job* job : chain->jobs) fail_safely(job, Job::Failure::kError, ": cannot start the async work");
  chain_complete(env, napi_ok, chain.release());
  return 0;
}

// ------------------------------------------------------------ the addon's own async thread
//
// libuv's workers sleep between jobs, and on a virtual machine waking one
// takes tens of microseconds: on a 2-vCPU Zen 4 VM, 16-43 us from queuing a
// job to its start (means over 2000 calls), where the completion's trip back
// to the main thread took 6-28. The addon runs async work on a thread of its
// own instead, which polls for the next job as long as the pool's workers do
// (setIdleSpin) before it sleeps: a job that follows another soon starts at
// once. It takes one job (or chain) at a time; one submitted while it is busy
// goes to libuv's pool as before. The job runs its kernels as any caller does
// (this thread and the pool's workers), and completes on its environment's
// main thread through a thread-safe function, as an async work's would.

// An environment's way back to its main thread. Shared by the environment
// (instance data, and its cleanup hook) and by the jobs in flight.
struct Bridge {
  std::mutex mu;
  bool open = true;  // false once the environment is being torn down
  napi_threadsafe_function tsfn = nullptr;
  long pending = 0;  // jobs submitted, not completed (main thread only)
};

// A job or chain for the thread: run() there; finish(env) on the main thread
// (it frees the task's data); drop() instead, on any thread, when the
// environment is gone.
struct Task {
  void (*run)(void* data);
  void (*finish)(napi_env env, void* data);
  void (*drop)(void* data);
  void* data;
  std::shared_ptr<Bridge> bridge;
};

void drop_job(Job* job) {
  job->release_detached();
  delete job;
}

// Completes a task on its environment's main thread (the thread-safe
// function's callback; env is null while the environment is torn down).
void finish_task(napi_env env, napi_value, void* context, void* data) {
  std::unique_ptr<Task> task(static_cast<Task*>(data));
  Bridge* bridge = static_cast<Bridge*>(context);
  if (!env) {
    task->drop(task->data);
    return;
  }
  task->finish(env, task->data);
  if (--bridge->pending == 0) napi_unref_threadsafe_function(env, bridge->tsfn);
}

class Executor {
 public:
  // The thread, started on first use; never stopped (like the pool's workers).
  static Executor& get() {
    static Executor* e = new Executor();
    return *e;
  }

  // Takes the task if the thread is free, else returns false (and the caller keeps it).
  bool try_submit(Task* task) {
    Task* none = nullptr;
    if (!slot_.compare_exchange_strong(none, task, std::memory_order_acq_rel)) return false;
    std::lock_guard<std::mutex> lk(mu_);
    if (sleeping_) cv_.notify_one();
    return true;
  }

 private:
  Executor() { std::thread([this] { loop(); }).detach(); }

  Task* wait_for_task() {
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::microseconds(ThreadPool::global().spin_micros());
    for (;;) {
      if (Task* t = slot_.load(std::memory_order_acquire)) return t;
      if (std::chrono::steady_clock::now() >= until) break;
      std::this_thread::yield();
    }
    std::unique_lock<std::mutex> lk(mu_);
    sleeping_ = true;
    cv_.wait(lk, [&] { return slot_.load(std::memory_order_acquire) != nullptr; });
    sleeping_ = false;
    return slot_.load(std::memory_order_acquire);
  }

  void loop() {
    for (;;) {
      Task* task = wait_for_task();
      task->run(task->data);
      slot_.store(nullptr, std::memory_order_release);  // free for the next while this one goes back
      napi_status posted = napi_closing;
      {
        std::shared_ptr<Bridge> bridge = task->bridge;
        std::lock_guard<std::mutex> lk(bridge->mu);
        if (bridge->open) posted = napi_call_threadsafe_function(bridge->tsfn, task, napi_tsfn_nonblocking);
      }
      if (posted != napi_ok) {
        task->drop(task->data);
        delete task;
      }
    }
  }

  std::atomic<Task*> slot_{nullptr};
  std::mutex mu_;
  std::condition_variable cv_;
  bool sleeping_ = false;
};

void delete_bridge_ref(napi_env, void* data, void*) { delete static_cast<std::shared_ptr<Bridge>*>(data); }

// Runs before the thread-safe function's own teardown (cleanup hooks run in
// reverse order of registration): from here on the thread drops what it
// finishes instead of posting it.
void close_bridge(void* arg) {
  std::unique_ptr<std::shared_ptr<Bridge>> ref(static_cast<std::shared_ptr<Bridge>*>(arg));
  std::lock_guard<std::mutex> lk((*ref)->mu);
  (*ref)->open = false;
}

// This environment's bridge, made on first use; null if it cannot be made.
std::shared_ptr<Bridge> bridge_of(napi_env env) {
  void* data = nullptr;
  if (napi_get_instance_data(env, &data) == napi_ok && data) return *static_cast<std::shared_ptr<Bridge>*>(data);
  auto bridge = std::make_shared<Bridge>();
  napi_value name;
  if (napi_create_string_utf8(env, "attention-kernels", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, bridge.get(), finish_task,
                                      &bridge->tsfn) != napi_ok) {
    return nullptr;
  }
  napi_unref_threadsafe_function(env, bridge->tsfn);  // held while jobs are pending only
  auto* for_env = new std::shared_ptr<Bridge>(bridge);
  auto* for_hook = new std::shared_ptr<Bridge>(bridge);
  if (napi_set_instance_data(env, for_env, delete_bridge_ref, nullptr) != napi_ok) {
    delete for_env;
    delete for_hook;
    return nullptr;
  }
  if (napi_add_env_cleanup_hook(env, close_bridge, for_hook) != napi_ok) {
    delete for_hook;
    std::lock_guard<std::mutex> lk(bridge->mu);
    bridge->open = false;  // no hook to close it in time: never post through it
  }
  return bridge;
}

// Hands a task to the addon's thread when it is free; false (task untouched) otherwise.
bool submit(napi_env env, void* data, void (*run)(void*), void (*finish)(napi_env, void*), void (*drop)(void*)) {
  if (ThreadPool::global().spin_micros() == 0) return false;  // no polling: no faster than libuv's workers
  std::shared_ptr<Bridge> bridge = bridge_of(env);
  if (!bridge || !bridge->open) return false;
  auto task = std::make_unique<Task>(Task{run, finish, drop, data, bridge});
  if (!Executor::get().try_submit(task.get())) return false;
  task.release();
  // finish_task runs on this thread, so not before this: the loop stays alive while jobs are pending.
  if (bridge->pending++ == 0) napi_ref_threadsafe_function(env, bridge->tsfn);
  return true;
}

bool submit_job(napi_env env, Job* job) {
  return submit(
      env, job, [](void* d) { execute(nullptr, d); }, [](napi_env e, void* d) { complete(e, napi_ok, d); },
      [](void* d) { drop_job(static_cast<Job*>(d)); });
}

bool submit_chain(napi_env env, Chain* chain) {
  return submit(
      env, chain, [](void* d) { chain_execute(nullptr, d); }, [](napi_env e, void* d) { chain_complete(e, napi_ok, d); },
      [](void* d) {
        std::unique_ptr<Chain> c(static_cast<Chain*>(d));
        for (Job* job : c->jobs) drop_job(job);
      });
}

}  // namespace

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
  if (tl_chain) tl_chain->jobs.reserve(tl_chain->jobs.size() + 1);
  napi_value promise;
  if (napi_create_promise(env, &job_->deferred, &promise) != napi_ok) {
    throw Napi::Error::New(env, job_->fn + ": cannot start the async work");
  }
  if (tl_chain) {
    tl_chain->jobs.push_back(job_.get());  // the chain's callback queues it
  } else if (!submit_job(env, job_.get()) && !queue_on_libuv(env, job_.get(), execute, complete, &job_->work)) {
    throw Napi::Error::New(env, job_->fn + ": cannot start the async work");
  }
  job_.release();  // the chain, the addon's thread or complete() owns it now
  return Napi::Value(env, promise);
}

}  // namespace addon
}  // namespace attn
