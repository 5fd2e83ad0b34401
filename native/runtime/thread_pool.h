// One persistent, process-wide pool. The calling thread takes part in every
// job. A call made from inside a job, or while another thread's job holds the
// pool, runs serially on the caller: never nested, never deadlocked, and
// (because kernels split work the same way whatever runs it) never different.
// A task that throws stops the job: no further tasks start, and the first
// exception is rethrown to the caller of run() once every thread has left the
// job.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace attn {

class ThreadPool {
 public:
  using TaskFn = void (*)(void* ctx, long task);

  static ThreadPool& global();

  // Threads that work on a job, the caller included (>= 1).
  int size() const { return size_.load(std::memory_order_relaxed); }
  // Waits for the running job, then replaces the workers. n is clamped to [1, 1024].
  void resize(int n);
  // How long (microseconds) an idle worker keeps polling for the next job
  // before it sleeps; clamped to [0, kMaxSpinMicros]. A worker that slept
  // wakes in microseconds, but on a virtual machine its CPU, handed to
  // others meanwhile, then often runs it late or slowly for a while: a job
  // soon after a sleep can take longer on two threads than on one.
  void set_spin_micros(long us);
  long spin_micros() const { return spin_us_.load(std::memory_order_relaxed); }
  static constexpr long kMaxSpinMicros = 1000000;
  // Runs fn(ctx, t) for every t in [0, ntasks) and returns when all are done,
  // or rethrows the first exception a task threw (after the others stopped).
  void run(long ntasks, TaskFn fn, void* ctx);

  // The calling thread's place in the pool: i for worker i (1 .. size - 1),
  // 0 for any other thread. A worker keeps its index while the pool keeps its
  // size, and usually its core too, so work split by index lands where that
  // thread's caches held it last time.
  static int thread_index();

  template <class F>
  void parallel_for(long ntasks, F&& f) {
    using Fn = std::remove_reference_t<F>;
    run(ntasks, [](void* ctx, long t) { (*static_cast<Fn*>(ctx))(t); },
        const_cast<void*>(static_cast<const void*>(&f)));
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  struct Job {
    TaskFn fn;
    void* ctx;
    long ntasks;
    std::atomic<long> next{0};
    std::atomic<int> refs{0};
    std::mutex error_mu;
    std::exception_ptr error;  // the first exception a task threw
  };

  explicit ThreadPool(int n);
  void start_workers(int n);
  void stop_workers();
  void worker_loop(std::uint64_t seen);
  static void drain(Job* job);

  std::mutex run_mu_;  // held by the thread whose job owns the pool
  std::mutex mu_;      // guards job_, gen_ changes and stop_
  std::condition_variable cv_;
  Job* job_ = nullptr;
  std::atomic<std::uint64_t> gen_{0};
  bool stop_ = false;
  std::vector<std::thread> workers_;
  std::atomic<int> size_{1};
  std::atomic<long> spin_us_{0};
};

// Threads the pool starts with: ATTN_NUM_THREADS when set to a positive
// integer, else the CPUs this process may run on.
int default_thread_count();
// The idle spin the pool starts with: ATTN_SPIN_US when set to an integer in
// [0, ThreadPool::kMaxSpinMicros], else kDefaultSpinMicros.
long default_spin_micros();
constexpr long kDefaultSpinMicros = 10000;

template <class F>
inline void parallel_for(long ntasks, F&& f) {
  ThreadPool::global().parallel_for(ntasks, static_cast<F&&>(f));
}

// Tasks for n items that cost `work` units in all: one per `per_task` units,
// at least 1 and at most n (or 1 when n is 0).
inline long task_count(long n, long work, long per_task) {
  const long t = work / per_task;
  return t < 1 ? 1 : (t > n ? n : t);
}

// Threads that run `tasks` tasks of parallel_ranges: at most the pool's.
inline long threads_for_tasks(long tasks) {
  const long pool = ThreadPool::global().size();
  return tasks > 1 ? (tasks < pool ? tasks : pool) : 1;
}

// Runs f(begin, end) over [0, n) cut into `tasks` contiguous ranges (range t
// is [n t / tasks, n (t + 1) / tasks)): on the pool when tasks > 1, else on
// the calling thread. The ranges depend on n and tasks only.
template <class F>
inline void parallel_ranges(long n, long tasks, F&& f) {
  if (tasks > 1) {
    parallel_for(tasks, [&](long t) { f(n * t / tasks, n * (t + 1) / tasks); });
  } else {
    f(0L, n);
  }
}

// [0, units) cut into `parts` contiguous shares (at most kMax), each taken a
// unit at a time through its own cursor. for_each(home, f) runs f on units of
// share `home` (mod parts) first, then on what is left of the others, in
// turn: every unit is taken exactly once, by whichever thread claims it.
class ShareCursors {
 public:
  static constexpr long kMax = 64;
  ShareCursors(long units, long parts) : parts_(parts < 1 ? 1 : (parts > kMax ? kMax : parts)) {
    for (long i = 0; i <= parts_; ++i) at_[i] = units * i / parts_;
    for (long i = 0; i < parts_; ++i) next_[i].store(at_[i], std::memory_order_relaxed);
  }
  template <class F>
  void for_each(long home, F&& f) {
    for (long d = 0; d < parts_; ++d) {
      const long s = (home + d) % parts_;
      for (long u = next_[s].fetch_add(1, std::memory_order_relaxed); u < at_[s + 1];
           u = next_[s].fetch_add(1, std::memory_order_relaxed))
        f(u);
    }
  }

 private:
  long parts_;
  long at_[kMax + 1];
  std::atomic<long> next_[kMax];
};

}  // namespace attn
