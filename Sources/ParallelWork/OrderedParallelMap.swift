import Dispatch
import Foundation
import Synchronization

/// Work done on worker threads and handed back in the order it was asked for: a pipeline stage that keeps the
/// artifacts' byte order whatever the number of threads.
///
/// The inputs come from `produce`, called on one worker at a time, under a lock, in order: it may read a file
/// sequentially (and hash it as it goes) because no two calls overlap. Each input is then turned into an output by
/// `work` on whichever worker took it, and `next()` returns the outputs in input order. At most `window` outputs
/// wait ahead of the consumer, so memory is bounded by the window, not by the input.
///
/// The threading promises are the compiler's: inputs, outputs and the work are `Sendable`, the source lives in a
/// `Mutex`, and the consumer side is only `next()` and `cancel()`. The workers hold the map until they end: a
/// consumer reads every output or calls `cancel()`.
public final class OrderedParallelMap<Input: Sendable, Output: Sendable>: Sendable {
    private struct Results {
        var waiting: [Int: Output] = [:]
        /// The index of the first input `produce` did not give (set when it returned nil).
        var end: Int?
        var consumed = 0
    }

    private struct Feed<Source: ~Copyable>: ~Copyable {
        var source: Source
        var nextIndex = 0
        var exhausted = false
    }

    private let results = Mutex(Results())
    private let cancelled = Atomic<Bool>(false)
    /// Signalled when an output (or the end) is stored; `next()` waits on it and looks again.
    private let arrived = DispatchSemaphore(value: 0)
    /// One permit per output that may wait ahead of the consumer.
    private let space: DispatchSemaphore
    private let finished = DispatchGroup()
    private let threads: Int

    /// Starts `threads` workers. `produce` gives the inputs in order (nil: no more); `work` turns each into its output.
    public convenience init<Source: ~Copyable>(threads: Int, window: Int, source: consuming sending Source,
                                               produce: @escaping @Sendable (inout Source) -> Input?,
                                               work: @escaping @Sendable (Input) -> Output) {
        self.init(threads: threads, window: window, source: source, produce: produce, workerState: {}, work: { _, input in work(input) })
    }

    /// The same, where each worker thread has state of its own, made by `workerState` on that thread and passed to
    /// each of its `work` calls: buffers to reuse, or copies of shared tables (see `StructureTables.r4Copy`).
    public init<Source: ~Copyable, WorkerState>(threads: Int, window: Int, source: consuming sending Source,
                                                produce: @escaping @Sendable (inout Source) -> Input?,
                                                workerState: @escaping @Sendable () -> WorkerState,
                                                work: @escaping @Sendable (inout WorkerState, Input) -> Output) {
        self.threads = max(1, threads)
        space = DispatchSemaphore(value: max(window, self.threads))
        let feed = Mutex(Feed(source: source))
        let box = FeedBox(feed)
        for _ in 0..<self.threads {
            finished.enter()
            let thread = Thread { [self] in
                defer { finished.leave() }
                var state = workerState()
                while true {
                    space.wait()
                    if cancelled.load(ordering: .relaxed) { break }
                    let taken: (Int, Input)? = box.feed.withLock { feed in
                        guard !feed.exhausted else { return nil }
                        guard let input = produce(&feed.source) else {
                            feed.exhausted = true
                            let end = feed.nextIndex
                            results.withLock { $0.end = end }
                            return nil
                        }
                        defer { feed.nextIndex += 1 }
                        return (feed.nextIndex, input)
                    }
                    guard let (index, input) = taken else { break }
                    let output = work(&state, input)
                    results.withLock { _ = $0.waiting.updateValue(output, forKey: index) }
                    arrived.signal()
                }
                space.signal()  // lets the next worker see the end too
                arrived.signal()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    private enum Look { case output(Output), end, wait }

    /// The next output in input order, waiting for it; nil after the last one (or once cancelled).
    public func next() -> Output? {
        while true {
            if cancelled.load(ordering: .relaxed) { return nil }
            let look: Look = results.withLock { r in
                if let output = r.waiting.removeValue(forKey: r.consumed) {
                    r.consumed += 1
                    return .output(output)
                }
                if let end = r.end, r.consumed >= end { return .end }
                return .wait
            }
            switch look {
            case .output(let output):
                space.signal()
                return output
            case .end:
                return nil
            case .wait:
                arrived.wait()
            }
        }
    }

    /// Stops the workers after the inputs they hold, and waits for them (a `produce` that waits for its input must
    /// be woken first: `ValidationWhileWriting` ends its feed instead).
    public func cancel() {
        cancelled.store(true, ordering: .relaxed)
        for _ in 0..<threads { space.signal() }
        arrived.signal()
        finished.wait()
    }

    deinit {
        cancelled.store(true, ordering: .relaxed)
        for _ in 0..<threads { space.signal() }
    }
}

/// Holds the feed's mutex in a class, so the worker closures share one.
private final class FeedBox<Feed: ~Copyable>: Sendable {
    let feed: Mutex<Feed>
    init(_ feed: consuming sending Mutex<Feed>) { self.feed = feed }
}

extension OrderedParallelMap where Input == Int {
    /// `work(0)`, `work(1)`, … `work(count - 1)`, in that order.
    public convenience init(threads: Int, window: Int, count: Int, work: @escaping @Sendable (Int) -> Output) {
        self.init(threads: threads, window: window, count: count, workerState: {}, work: { _, i in work(i) })
    }

    /// The same, with state of each worker's own (see `init(threads:window:source:produce:workerState:work:)`).
    public convenience init<WorkerState>(threads: Int, window: Int, count: Int, workerState: @escaping @Sendable () -> WorkerState,
                                         work: @escaping @Sendable (inout WorkerState, Int) -> Output) {
        self.init(threads: threads, window: window, source: 0, produce: { next in
            guard next < count else { return nil }
            defer { next += 1 }
            return next
        }, workerState: workerState, work: work)
    }
}

/// The machine's cores: the default of `--threads`.
public enum Cores {
    public static var available: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }
}
