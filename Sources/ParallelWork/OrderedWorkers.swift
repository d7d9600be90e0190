import Dispatch
import Foundation
import Synchronization

/// Worker threads that take inputs pushed by one thread and hand the outputs back to it in the order it pushed
/// them: the push-driven twin of `OrderedParallelMap`, for a consumer that is also the producer.
///
/// The conversion reads a source on its own thread (libxml2's error and entity-loader settings are per thread, and
/// reading is cheap), pushes batches of rows to the workers, which evaluate them, and writes the outputs in row
/// order. The consumer bounds the work in flight itself: `submit` never blocks, `next()` waits for the oldest
/// output. The threading promises are the compiler's: inputs, outputs and the work are `Sendable`, the shared state
/// lives in a `Mutex`, and each worker's state is made on its thread and never leaves it.
///
/// The workers hold only the shared state, not this object: when it goes away (or `close()` is called) they end
/// after the inputs already pushed.
public final class OrderedWorkers<Input: Sendable, Output: Sendable>: Sendable {
    private struct Queue {
        var inputs: [(Int, Input)] = []
        /// The first input in `inputs` not yet taken by a worker.
        var head = 0
        var outputs: [Int: Output] = [:]
        var submitted = 0
        var taken = 0
        var closed = false
    }

    /// What the workers share with the consumer.
    private final class Shared: Sendable {
        let queue = Mutex(Queue())
        /// One permit per input pushed (and one per worker at the end).
        let inputReady = DispatchSemaphore(value: 0)
        /// Signalled when an output is stored; `next()` waits on it and looks again.
        let outputReady = DispatchSemaphore(value: 0)
        let finished = DispatchGroup()
    }

    private let shared = Shared()
    private let threads: Int

    /// Starts `threads` workers, each with state of its own made by `workerState` on its thread (buffers to reuse,
    /// evaluators), passed to each of its `work` calls.
    public init<WorkerState>(threads: Int, workerState: @escaping @Sendable () -> WorkerState,
                             work: @escaping @Sendable (inout WorkerState, Input) -> Output) {
        self.threads = max(1, threads)
        let shared = self.shared
        for _ in 0..<self.threads {
            shared.finished.enter()
            let thread = Thread {
                defer { shared.finished.leave() }
                var state = workerState()
                while true {
                    shared.inputReady.wait()
                    let taken: (Int, Input)? = shared.queue.withLock { q in
                        guard q.head < q.inputs.count else { return nil }  // closed, nothing left
                        defer {
                            q.head += 1
                            if q.head > 64 && q.head * 2 > q.inputs.count {
                                q.inputs.removeFirst(q.head)
                                q.head = 0
                            }
                        }
                        return q.inputs[q.head]
                    }
                    guard let (index, input) = taken else { break }
                    let output = work(&state, input)
                    shared.queue.withLock { _ = $0.outputs.updateValue(output, forKey: index) }
                    shared.outputReady.signal()
                }
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// The inputs pushed whose outputs `next()` has not returned yet.
    public var pending: Int { shared.queue.withLock { $0.submitted - $0.taken } }

    /// Pushes an input; never waits.
    public func submit(_ input: Input) {
        let accepted = shared.queue.withLock { q -> Bool in
            guard !q.closed else { return false }
            q.inputs.append((q.submitted, input))
            q.submitted += 1
            return true
        }
        precondition(accepted, "an input submitted after close()")
        shared.inputReady.signal()
    }

    /// The output of the oldest input whose output has not been returned, waiting for it; nil when there is none.
    public func next() -> Output? {
        while true {
            let look: (output: Output?, none: Bool) = shared.queue.withLock { q in
                guard q.taken < q.submitted else { return (nil, true) }
                guard let output = q.outputs.removeValue(forKey: q.taken) else { return (nil, false) }
                q.taken += 1
                return (output, false)
            }
            if look.none { return nil }
            if let output = look.output { return output }
            shared.outputReady.wait()
        }
    }

    /// Lets the workers end once the inputs pushed so far are done, and waits for them.
    public func close() {
        stop()
        shared.finished.wait()
    }

    private func stop() {
        let first = shared.queue.withLock { q -> Bool in
            defer { q.closed = true }
            return !q.closed
        }
        if first { for _ in 0..<threads { shared.inputReady.signal() } }
    }

    deinit { stop() }
}
