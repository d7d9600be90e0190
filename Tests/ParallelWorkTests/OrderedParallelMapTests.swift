import Foundation
import ParallelWork
import Synchronization
import Testing

/// The pipeline stage behind `--threads`: outputs in input order whatever the workers' speed, never more than the
/// window ahead of the consumer, inputs produced one at a time in order, and a cancel that returns.
struct OrderedParallelMapTests {
    @Test(arguments: [1, 2, 8])
    func outputsComeInInputOrderWhateverTheWorkersSpeed(threads: Int) {
        let map = OrderedParallelMap<Int, Int>(threads: threads, window: 4, count: 500) { i in
            // Uneven work: later inputs often finish first.
            usleep(UInt32((i * 7919) % 300))
            return i * i
        }
        var outputs: [Int] = []
        while let output = map.next() { outputs.append(output) }
        #expect(outputs == (0..<500).map { $0 * $0 })
        #expect(map.next() == nil)
    }

    @Test func eachWorkerHasStateOfItsOwnMadeOnItsThread() {
        // The state records the thread that made it; every call that gets it must run on that thread.
        struct Owned {
            let thread = pthread_self()
            var calls = 0
        }
        let made = Atomic<Int>(0)
        let map = OrderedParallelMap<Int, Bool>(threads: 3, window: 6, count: 300, workerState: { () -> Owned in
            made.add(1, ordering: .relaxed)
            return Owned()
        }) { state, i in
            state.calls += 1
            usleep(UInt32((i * 31) % 200))
            return pthread_equal(state.thread, pthread_self()) != 0
        }
        var outputs: [Bool] = []
        while let output = map.next() { outputs.append(output) }
        #expect(outputs.count == 300)
        #expect(outputs.allSatisfy { $0 })
        #expect(made.load(ordering: .relaxed) <= 3)
    }

    @Test func inputsAreProducedInOrderOneAtATime() {
        // `produce` reads a sequence (here, a counter checked for overlap), as a file is read in chunks.
        let busy = Atomic<Int>(0)
        let overlaps = Atomic<Int>(0)
        let map = OrderedParallelMap<Int, Int>(threads: 4, window: 8, source: 0, produce: { next in
            if busy.add(1, ordering: .relaxed).newValue > 1 { overlaps.add(1, ordering: .relaxed) }
            defer { _ = busy.subtract(1, ordering: .relaxed) }
            guard next < 200 else { return nil }
            defer { next += 1 }
            return next
        }, work: { $0 + 1 })
        var outputs: [Int] = []
        while let output = map.next() { outputs.append(output) }
        #expect(outputs == Array(1...200))
        #expect(overlaps.load(ordering: .relaxed) == 0)
    }

    @Test func workersStayWithinTheWindowOfTheConsumer() {
        let started = Atomic<Int>(0)
        let map = OrderedParallelMap<Int, Int>(threads: 4, window: 6, count: 100) { i in
            started.add(1, ordering: .relaxed)
            return i
        }
        usleep(100_000)  // a consumer that has not started reading
        #expect(started.load(ordering: .relaxed) <= 6)
        var n = 0
        while map.next() != nil { n += 1 }
        #expect(n == 100)
    }

    @Test func cancelStopsTheWorkersAndReturns() {
        let done = Atomic<Int>(0)
        let map = OrderedParallelMap<Int, Int>(threads: 2, window: 4, count: 1_000_000) { i in
            done.add(1, ordering: .relaxed)
            return i
        }
        #expect(map.next() == 0)
        map.cancel()
        let after = done.load(ordering: .relaxed)
        usleep(50_000)
        #expect(done.load(ordering: .relaxed) == after)
        #expect(after < 1_000)
        #expect(map.next() == nil)
    }

    @Test func anEmptyInputGivesNoOutput() {
        let map = OrderedParallelMap<Int, Int>(threads: 3, window: 2, count: 0) { $0 }
        #expect(map.next() == nil)
    }
}
