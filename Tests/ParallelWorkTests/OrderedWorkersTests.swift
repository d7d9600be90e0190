import Foundation
import ParallelWork
import Synchronization
import Testing

/// The workers behind a parallel conversion: outputs in the order the inputs were pushed whatever the workers'
/// speed, each worker with state of its own, nothing pending once every output is taken, and no hang when the
/// pool goes away with work in flight.
struct OrderedWorkersTests {
    @Test(arguments: [1, 2, 8])
    func outputsComeInTheOrderTheInputsWerePushed(threads: Int) {
        let workers = OrderedWorkers<Int, Int>(threads: threads, workerState: {}) { _, i in
            usleep(UInt32((i * 7919) % 300))  // uneven work: later inputs often finish first
            return i * i
        }
        var outputs: [Int] = []
        // Pushed while taken, a few ahead, as the conversion does.
        for i in 0..<500 {
            workers.submit(i)
            if workers.pending > 6, let output = workers.next() { outputs.append(output) }
        }
        while let output = workers.next() { outputs.append(output) }
        workers.close()
        #expect(outputs == (0..<500).map { $0 * $0 })
        #expect(workers.pending == 0 && workers.next() == nil)
    }

    @Test func eachWorkerHasStateOfItsOwnMadeOnItsThread() {
        struct Owned {
            let thread = pthread_self()
        }
        let made = Atomic<Int>(0)
        let workers = OrderedWorkers<Int, Bool>(threads: 3, workerState: { () -> Owned in
            made.add(1, ordering: .relaxed)
            return Owned()
        }) { state, i in
            usleep(UInt32((i * 31) % 200))
            return pthread_equal(state.thread, pthread_self()) != 0
        }
        for i in 0..<300 { workers.submit(i) }
        var outputs: [Bool] = []
        while let output = workers.next() { outputs.append(output) }
        workers.close()
        #expect(outputs.count == 300 && outputs.allSatisfy { $0 })
        #expect(made.load(ordering: .relaxed) == 3)
    }

    @Test func aPoolDroppedWithWorkInFlightLetsItsWorkersEnd() {
        let done = Atomic<Int>(0)
        do {
            let workers = OrderedWorkers<Int, Int>(threads: 2, workerState: {}) { _, i in
                usleep(2000)
                done.add(1, ordering: .relaxed)
                return i
            }
            for i in 0..<10 { workers.submit(i) }
            _ = workers.next()
        }
        // The workers finish what was pushed and end; nothing waits for a consumer that is gone.
        var waited = 0
        while done.load(ordering: .relaxed) < 10 && waited < 500 {
            usleep(10_000)
            waited += 1
        }
        #expect(done.load(ordering: .relaxed) == 10)
    }
}
