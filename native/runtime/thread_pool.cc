#include "thread_pool.h"

#include <chrono>
#include <cstdlib>

#include "cpu.h"
#include "fp_env.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ATTN_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define ATTN_PAUSE() __asm__ __volatile__("yield")
#else
#define ATTN_PAUSE() ((void)0)
#endif

namespace attn {
namespace {

thread_local bool tl_in_job = false;
thread_local int tl_worker_index = 0;  // 1.. on the pool's workers

// Marks this thread as inside a job for its lifetime, exceptions included.
class InJob {
 public:
  InJob() : outer_(tl_in_job) { tl_in_job = true; }
  ~InJob() { tl_in_job = outer_; }
  InJob(const InJob&) = delete;
  InJob& operator=(const InJob&) = delete;

 private:
  bool outer_;
};

// The environment variable `name` when it is an integer in [lo, hi], else `fallback`.
long env_long(const char* name, long lo, long hi, long fallback) {
  if (const char* env = std::getenv(name)) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == 0 && v >= lo && v <= hi) return v;
  }
  return fallback;
}

}  // namespace

long default_spin_micros() { return env_long("ATTN_SPIN_US", 0, ThreadPool::kMaxSpinMicros, kDefaultSpinMicros); }

void ThreadPool::set_spin_micros(long us) {
  spin_us_.store(us < 0 ? 0 : (us > kMaxSpinMicros ? kMaxSpinMicros : us), std::memory_order_relaxed);
}

int default_thread_count() {
  return static_cast<int>(env_long("ATTN_NUM_THREADS", 1, 1024, cpu_info().logical_cpus));
}

ThreadPool& ThreadPool::global() {
  // Never destroyed: workers may still be parked when the process exits.
  static ThreadPool* pool = new ThreadPool(default_thread_count());
  return *pool;
}

ThreadPool::ThreadPool(int n) {
  set_spin_micros(default_spin_micros());
  start_workers(n);
}

void ThreadPool::start_workers(int n) {
  if (n < 1) n = 1;
  if (n > 1024) n = 1024;
  std::uint64_t gen;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = false;
    gen = gen_.load(std::memory_order_relaxed);
  }
  // Each worker starts from the generation of its creation, not of the moment
  // its thread first runs: a job posted in between is not missed.
  workers_.reserve(static_cast<std::size_t>(n - 1));
  for (int i = 1; i < n; ++i)
    workers_.emplace_back([this, gen, i] {
      tl_worker_index = i;
      worker_loop(gen);
    });
  size_.store(n, std::memory_order_relaxed);
}

int ThreadPool::thread_index() { return tl_worker_index; }

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    gen_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  size_.store(1, std::memory_order_relaxed);
}

void ThreadPool::resize(int n) {
  if (n < 1) n = 1;
  if (n > 1024) n = 1024;
  std::lock_guard<std::mutex> run(run_mu_);
  if (n == size()) return;
  stop_workers();
  start_workers(n);
}

void ThreadPool::drain(Job* job) {
  InJob in_job;
  for (;;) {
    long t = job->next.fetch_add(1, std::memory_order_relaxed);
    if (t >= job->ntasks) break;
    try {
      job->fn(job->ctx, t);
    } catch (...) {
      std::lock_guard<std::mutex> lk(job->error_mu);
      if (!job->error) job->error = std::current_exception();
      job->next.store(job->ntasks, std::memory_order_relaxed);  // no more tasks start
    }
  }
}

void ThreadPool::worker_loop(std::uint64_t seen) {
  for (;;) {
    // Poll for a while, then sleep until the generation moves. The polling
    // yields the CPU to any other thread that is ready to run (the caller's
    // event loop, libuv's workers): the CPU stays awake without being taken
    // from them.
    auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_.load(std::memory_order_relaxed));
    while (gen_.load(std::memory_order_acquire) == seen &&
           std::chrono::steady_clock::now() < until) {
      for (int i = 0; i < 16; ++i) ATTN_PAUSE();
      std::this_thread::yield();
    }
    Job* job = nullptr;
    {
      // stop_ is checked too: a worker that starts after the stop was
      // announced has already seen the final generation.
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || gen_.load(std::memory_order_relaxed) != seen; });
      if (stop_) return;
      seen = gen_.load(std::memory_order_relaxed);
      job = job_;
      if (job) job->refs.fetch_add(1, std::memory_order_relaxed);
    }
    if (job) {
      const FlushDenormals fp;  // as on the calling thread, for this job only
      drain(job);
      job->refs.fetch_sub(1, std::memory_order_release);
    }
  }
}

void ThreadPool::run(long ntasks, TaskFn fn, void* ctx) {
  if (ntasks <= 0) return;
  std::unique_lock<std::mutex> run(run_mu_, std::defer_lock);
  if (ntasks == 1 || tl_in_job || size() == 1 || !run.try_lock()) {
    InJob in_job;
    for (long t = 0; t < ntasks; ++t) fn(ctx, t);
    return;
  }
  Job job;
  job.fn = fn;
  job.ctx = ctx;
  job.ntasks = ntasks;
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = &job;
    gen_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  drain(&job);
  {
    // No worker can pick the job up after this; wait for those that did.
    std::lock_guard<std::mutex> lk(mu_);
    job_ = nullptr;
  }
  int spins = 0;
  while (job.refs.load(std::memory_order_acquire) != 0) {
    if (++spins < 4096) {
      ATTN_PAUSE();
    } else {
      std::this_thread::yield();
    }
  }
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace attn
