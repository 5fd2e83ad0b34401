// Dynamic batching for services: requests of their own lengths wait briefly in
// a queue, their tokens are packed one after another into one [totalTokens, E]
// batch, the module runs once over the batch (off the event loop, with the
// sequence lengths so that attention stays within each request), and each
// caller gets its own rows back.
import { MultiHeadAttention } from './multihead';
import { Tensor, allocateStorage, checkTensor } from './tensor';
import { checkInteger, checkOptions, describe, expected } from './validate';

/** The options a Batcher passes with each packed batch. */
export interface PackedOptions {
  /** The lengths of the batch's sequences, in order; they sum to the batch's token count. */
  sequenceLengths: Int32Array;
}

/** What a module returns for a packed batch: the packed output, or `{ output }` (MultiHeadAttention). */
export type PackedResult = Tensor | { output: Tensor };

/** A function that runs one packed batch x [totalTokens, E], off the event loop, to its packed output [totalTokens, outDim]. */
export type PackedForward = (x: Tensor, options: PackedOptions) => Promise<PackedResult>;

/**
 * A module a Batcher runs: `forwardAsync(x, { sequenceLengths })` over packed
 * tokens [totalTokens, E], resolving to the packed output [totalTokens,
 * outDim] (or `{ output }`). `embedDim` (or `dModel`) is E, the feature size
 * of a request's rows.
 */
export interface PackedModule {
  forwardAsync(x: Tensor, options: PackedOptions): Promise<PackedResult>;
  embedDim?: number;
  dModel?: number;
}

export interface BatcherOptions {
  /** Tokens per batch (default 8192). A single request longer than this runs alone. */
  maxBatchTokens?: number;
  /** How long the first request of an idle batcher waits for others to join it, in ms (default 1; 0: the next turn of the event loop). */
  maxDelayMs?: number;
  /** Requests allowed to wait; one more is rejected at once with code 'ERR_BATCHER_QUEUE_FULL' (default Infinity). */
  maxQueue?: number;
  /** The feature size E of a request's rows (default: the module's embedDim or dModel). */
  embedDim?: number;
}

export interface BatcherRunOptions {
  /** Aborting removes the request if its batch has not started; either way the Promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface BatcherStats {
  /** Batches the module has finished (successfully or not). */
  batches: number;
  /** Requests in those batches, and their tokens. */
  requests: number;
  tokens: number;
  /** Requests waiting for a batch, and their tokens. */
  queueDepth: number;
  queuedTokens: number;
  /** Requests in the batch that is running now (0 when idle). */
  running: number;
  /** Requests and tokens per finished batch, on average (0 before the first). */
  meanBatchRequests: number;
  meanBatchTokens: number;
  /** Batches whose module call failed (each of their requests rejected). */
  failedBatches: number;
  /** Requests rejected by run() for a bad argument, a full queue, or a closed batcher. */
  rejected: number;
  /** Requests whose signal aborted them. */
  aborted: number;
}

/** The errors of the batcher itself (not of a request's arguments or of the module). */
export class BatcherError extends Error {
  /** 'ERR_BATCHER_QUEUE_FULL': maxQueue requests are waiting; 'ERR_BATCHER_CLOSED': close() was called. */
  readonly code: 'ERR_BATCHER_QUEUE_FULL' | 'ERR_BATCHER_CLOSED';

  constructor(code: BatcherError['code'], message: string) {
    super(message);
    this.name = 'BatcherError';
    this.code = code;
  }
}

type RequestState = 'queued' | 'running' | 'settled';

interface Request {
  x: Tensor | null;
  tokens: number;
  state: RequestState;
  resolve: (t: Tensor) => void;
  reject: (e: unknown) => void;
  signal: AbortSignal | undefined;
}

const OPTIONS = ['maxBatchTokens', 'maxDelayMs', 'maxQueue', 'embedDim'] as const;

/** The module as one function, and its feature size when it has one. */
function forwardOf(module: unknown): { forward: PackedForward; dim: unknown } {
  if (module instanceof MultiHeadAttention) {
    return { forward: (x, o) => module.forwardAsync(x, undefined, undefined, o), dim: module.embedDim };
  }
  if (typeof module === 'function') return { forward: module as PackedForward, dim: undefined };
  if (module !== null && typeof module === 'object' && typeof (module as PackedModule).forwardAsync === 'function') {
    const m = module as PackedModule;
    return { forward: (x, o) => m.forwardAsync(x, o), dim: m.embedDim ?? m.dModel };
  }
  throw new TypeError(
    expected('MultiHeadAttention, a module with forwardAsync(x, { sequenceLengths }), or a function (x, { sequenceLengths }) => Promise', 'module', module),
  );
}

/**
 * Packs concurrent requests into batches for a module that takes packed
 * variable-length input (MultiHeadAttention self-attention today; any module
 * with `forwardAsync(x, { sequenceLengths })`, or a function). One batch runs
 * at a time; requests that arrive while it runs, or within maxDelayMs of the
 * first request of an idle batcher, go into the next one, up to
 * maxBatchTokens, in arrival order.
 */
export class Batcher {
  readonly maxBatchTokens: number;
  readonly maxDelayMs: number;
  readonly maxQueue: number;
  /** The feature size of a request's rows. */
  readonly embedDim: number;

  private readonly forward: PackedForward;
  /** Waiting requests from `head` on (settled ones are skipped when reached). */
  private queue: Request[] = [];
  private head = 0;
  private queued = 0;
  private queuedTokens = 0;
  private runningCount = 0;
  private running: Promise<void> | null = null;
  /** Cancels the pending start of a batch, when one is pending. */
  private timer: (() => void) | null = null;
  private closed = false;
  /** The signals of waiting and running requests, each with its one listener. */
  private readonly signals = new Map<AbortSignal, { requests: Set<Request>; onAbort: () => void }>();
  /** The packed input of the last batch, reused while batches fit in it. */
  private input: Float32Array<ArrayBufferLike> = new Float32Array(0);
  private readonly counts = { batches: 0, requests: 0, tokens: 0, failedBatches: 0, rejected: 0, aborted: 0 };

  constructor(module: MultiHeadAttention | PackedModule | PackedForward, options?: BatcherOptions) {
    const { forward, dim } = forwardOf(module);
    const opts = checkOptions<BatcherOptions>('Batcher', options, OPTIONS);
    this.forward = forward;
    this.maxBatchTokens = opts.maxBatchTokens === undefined ? 8192 : checkInteger('maxBatchTokens', opts.maxBatchTokens, 1);
    this.maxDelayMs = opts.maxDelayMs === undefined ? 1 : checkInteger('maxDelayMs', opts.maxDelayMs, 0, 2 ** 31 - 1);
    this.maxQueue = opts.maxQueue === undefined || opts.maxQueue === Infinity ? Infinity : checkInteger('maxQueue', opts.maxQueue, 1);
    if (opts.embedDim !== undefined) {
      this.embedDim = checkInteger('embedDim', opts.embedDim, 1);
    } else if (typeof dim === 'number' && Number.isInteger(dim) && dim >= 1) {
      this.embedDim = dim;
    } else {
      throw new TypeError(expected('embedDim in the Batcher options (the module has no embedDim or dModel)', 'embedDim', undefined));
    }
  }

  /**
   * Queues x [S, embedDim] (float32, S ≥ 1) and resolves to its rows of the
   * batch's output, [S, outDim]: a copy of its own, which later batches never
   * touch. x must not change until the Promise settles. A bad x, a full queue
   * or a closed batcher rejects this request alone, at once.
   */
  run(x: Tensor, options?: BatcherRunOptions): Promise<Tensor> {
    let request!: Request;
    const promise = new Promise<Tensor>((resolve, reject) => {
      request = { x: null, tokens: 0, state: 'queued', resolve, reject, signal: undefined };
    });
    try {
      this.admit(request, x, options);
    } catch (err) {
      this.counts.rejected++;
      this.settle(request, undefined, err);
    }
    return promise;
  }

  /** Checks a request and queues it (or rejects it when its signal has aborted already); throws why not. */
  private admit(r: Request, x: unknown, options: unknown): void {
    const X = checkTensor('x', x, 'float32');
    if (X.rank !== 2 || X.shape[1] !== this.embedDim || X.shape[0] < 1) {
      throw new RangeError(expected(`Tensor [tokens ≥ 1, ${this.embedDim}]`, 'x', X));
    }
    const opts = checkOptions<BatcherRunOptions>('Batcher.run', options, ['signal']);
    const signal = opts.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError(expected('AbortSignal', 'signal', signal));
    if (this.closed) throw new BatcherError('ERR_BATCHER_CLOSED', 'Batcher is closed: no new requests');
    if (signal?.aborted) {
      this.counts.aborted++;
      this.settle(r, undefined, signal.reason);
      return;
    }
    if (this.queued >= this.maxQueue) {
      throw new BatcherError('ERR_BATCHER_QUEUE_FULL', `Batcher queue is full: ${this.maxQueue} requests are waiting (maxQueue); retry later`);
    }
    r.x = X;
    r.tokens = X.shape[0];
    if (signal) this.watch(r, signal);
    this.queue.push(r);
    this.queued++;
    this.queuedTokens += r.tokens;
    this.schedule();
  }

  /**
   * Aborts r when its signal does. One listener per signal, however many
   * requests share it (a server's shutdown signal, say), removed with its
   * last request.
   */
  private watch(r: Request, signal: AbortSignal): void {
    r.signal = signal;
    let watched = this.signals.get(signal);
    if (!watched) {
      const requests = new Set<Request>();
      const onAbort = () => {
        for (const q of [...requests]) this.abort(q);
      };
      watched = { requests, onAbort };
      this.signals.set(signal, watched);
      signal.addEventListener('abort', onAbort, { once: true });
    }
    watched.requests.add(r);
  }

  /** An aborted request: out of the queue if it waits there, and rejected either way. */
  private abort(r: Request): void {
    if (r.state === 'settled') return;
    if (r.state === 'queued') {
      this.queued--;
      this.queuedTokens -= r.tokens;
    }
    this.counts.aborted++;
    this.settle(r, undefined, r.signal!.reason);
  }

  private settle(r: Request, value: Tensor | undefined, error?: unknown): void {
    if (r.state === 'settled') return;
    r.state = 'settled';
    r.x = null;
    const signal = r.signal;
    r.signal = undefined;
    const watched = signal && this.signals.get(signal);
    if (watched) {
      watched.requests.delete(r);
      if (watched.requests.size === 0) {
        signal!.removeEventListener('abort', watched.onAbort);
        this.signals.delete(signal!);
      }
    }
    if (value) r.resolve(value);
    else r.reject(error);
  }

  /** Starts a batch now (a full one), or after maxDelayMs; nothing while one runs (it starts the next). */
  private schedule(): void {
    if (this.running || this.closed || this.queued === 0) return;
    if (this.queuedTokens >= this.maxBatchTokens) {
      this.cancelStart();
      this.startBatch();
    } else if (!this.timer) {
      this.startAfter(this.maxDelayMs);
    }
  }

  /** Starts a batch after `ms` (0: on the next turn of the event loop, after pending I/O and microtasks). */
  private startAfter(ms: number): void {
    const fire = () => {
      this.timer = null;
      if (!this.running) this.startBatch();
    };
    if (ms > 0) {
      const t = setTimeout(fire, ms);
      this.timer = () => clearTimeout(t);
    } else {
      const t = setImmediate(fire);
      this.timer = () => clearImmediate(t);
    }
  }

  private cancelStart(): void {
    this.timer?.();
    this.timer = null;
  }

  /** The next waiting requests, in order, up to maxBatchTokens (at least one). */
  private take(): Request[] {
    const batch: Request[] = [];
    let tokens = 0;
    while (this.head < this.queue.length) {
      const r = this.queue[this.head];
      if (r.state !== 'queued') {
        this.head++;
        continue;
      }
      if (batch.length > 0 && tokens + r.tokens > this.maxBatchTokens) break;
      this.head++;
      r.state = 'running';
      batch.push(r);
      tokens += r.tokens;
    }
    this.queued -= batch.length;
    this.queuedTokens -= tokens;
    // Drop what has been taken once it is most of the array.
    if (this.head > 64 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return batch;
  }

  /** The batch's tokens packed one request after another, [tokens, embedDim]. */
  private pack(batch: Request[], tokens: number): Tensor {
    const E = this.embedDim;
    const only = batch[0].x!;
    if (batch.length === 1 && only.isContiguous()) return only;
    const n = tokens * E;
    // One buffer for every batch up to maxBatchTokens (the module has finished
    // with it: one batch runs at a time); a longer request gets one of its own.
    // The addon's memory: the module's async kernels read it where it is,
    // instead of first copying what they take of it.
    const owned = (count: number) => allocateStorage('float32', count, false, [count / E, E], 'owned') as Float32Array<ArrayBufferLike>;
    let buffer: Float32Array<ArrayBufferLike>;
    if (tokens > this.maxBatchTokens) {
      buffer = owned(n);
    } else {
      if (this.input.length < n) this.input = owned(Math.min(this.maxBatchTokens * E, Math.max(n, 2 * this.input.length)));
      buffer = this.input;
    }
    const packed = new Tensor(buffer.subarray(0, n), [tokens, E]);
    let row = 0;
    for (const r of batch) {
      const x = r.x!;
      if (x.isContiguous()) {
        buffer.set(x.data.subarray(x.offset, x.offset + r.tokens * E) as Float32Array, row * E);
      } else {
        packed.narrow(0, row, r.tokens).assign(x);
      }
      row += r.tokens;
    }
    return packed;
  }

  private startBatch(): void {
    const batch = this.take();
    if (batch.length === 0) return;
    this.running = this.runBatch(batch).finally(() => {
      this.running = null;
      this.runningCount = 0;
      // Requests that arrived meanwhile have waited already: their batch
      // starts on the next turn, once the callers just answered have had the
      // chance to send their next request.
      if (this.queued > 0 && !this.closed) {
        this.cancelStart();
        this.startAfter(0);
      }
    });
  }

  private async runBatch(batch: Request[]): Promise<void> {
    let tokens = 0;
    const lengths = new Int32Array(batch.length);
    batch.forEach((r, i) => {
      lengths[i] = r.tokens;
      tokens += r.tokens;
    });
    this.runningCount = batch.length;
    let output: Tensor;
    try {
      const x = this.pack(batch, tokens);
      const result = await this.forward(x, { sequenceLengths: lengths });
      output = outputOf(result, tokens);
    } catch (err) {
      this.count(batch.length, tokens, true);
      for (const r of batch) this.settle(r, undefined, err);
      return;
    }
    this.count(batch.length, tokens, false);
    const contiguous = output.isContiguous();
    const width = output.shape[1];
    let row = 0;
    for (const r of batch) {
      if (r.state === 'running') {
        const start = output.offset + row * width;
        const n = r.tokens * width;
        // Each caller's rows in a copy of their own, in the addon's recycled
        // memory: a plain array of this size (a request's rows are often
        // 100 KiB or more) faults in fresh pages on every batch.
        let own: Tensor;
        if (contiguous) {
          const data = allocateStorage('float32', n, false, [r.tokens, width], 'owned') as Float32Array;
          data.set((output.data as Float32Array).subarray(start, start + n));
          own = new Tensor(data, [r.tokens, width]);
        } else {
          own = output.narrow(0, row, r.tokens).clone();
        }
        this.settle(r, own);
      }
      row += r.tokens;
    }
  }

  private count(requests: number, tokens: number, failed: boolean): void {
    this.counts.batches++;
    this.counts.requests += requests;
    this.counts.tokens += tokens;
    if (failed) this.counts.failedBatches++;
  }

  /** Counters since the batcher was made, and what waits and runs now. */
  stats(): BatcherStats {
    const { batches, requests, tokens } = this.counts;
    return {
      ...this.counts,
      queueDepth: this.queued,
      queuedTokens: this.queuedTokens,
      running: this.runningCount,
      meanBatchRequests: batches > 0 ? requests / batches : 0,
      meanBatchTokens: batches > 0 ? tokens / batches : 0,
    };
  }

  /**
   * Refuses new requests and rejects every waiting one with a BatcherError
   * (code 'ERR_BATCHER_CLOSED'); the batch that is running finishes and
   * answers its requests. Resolves once it has.
   */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.cancelStart();
      const waiting = this.queue.slice(this.head);
      this.queue = [];
      this.head = 0;
      for (const r of waiting) {
        if (r.state !== 'queued') continue;
        this.queued--;
        this.queuedTokens -= r.tokens;
        this.settle(r, undefined, new BatcherError('ERR_BATCHER_CLOSED', 'Batcher was closed before this request ran'));
      }
    }
    return this.running ? this.running.then(() => undefined) : Promise.resolve();
  }
}

/** The module's result as the packed output [tokens, outDim], or an error that says what came back. */
function outputOf(result: unknown, tokens: number): Tensor {
  const t = result instanceof Tensor ? result : result !== null && typeof result === 'object' ? (result as { output?: unknown }).output : undefined;
  if (!(t instanceof Tensor) || t.rank !== 2 || t.shape[0] !== tokens || t.dtype !== 'float32') {
    throw new TypeError(
      `Batcher: the module returned ${describe(t ?? result)} for a batch of ${tokens} tokens; expected a float32 Tensor [${tokens}, features] or { output } holding one`,
    );
  }
  return t;
}
