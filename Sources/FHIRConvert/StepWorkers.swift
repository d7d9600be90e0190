import FHIRMapping
import FHIRSources
import ParallelWork

/// What the conversion of a step does next, in row order: convert a row (or a group's rows), or file a reject found
/// before evaluation (by the reader, `group.where` or the grouping). Rejects travel with the rows so that
/// `rejects.ndjson` lists them in the same order whatever the number of threads.
enum StepItem: Sendable {
    /// A row, or a group's rows: `first`, and all of them in `group` (empty in steps that do not group).
    case rows(first: SourceRecord, group: [SourceRecord])
    case reject(line: Int, reason: String, value: String?)
}

/// A step item after evaluation: a row's outcome, with its resources' positions in the batch's `RenderedRows`.
enum EvaluatedItem: Sendable {
    case rows(first: SourceRecord, group: [SourceRecord], outcome: RowOutcome, resources: Range<Int>)
    case reject(line: Int, reason: String, value: String?)
}

/// Evaluates a step's rows on worker threads, in batches, and hands them back in row order: the converter thread
/// keeps reading, checking, bundling, hashing and writing (what must happen in row order), the workers do the rest.
///
/// Each worker has an evaluator of its own, over a mapping of its own (`compiledAgain()`; lookup tables are shared:
/// they are immutable and hold few references). A step whose templates
/// call `occurrence()` is not evaluated here: its values depend on the rows before.
struct StepWorkers {
    /// A batch of evaluated items and their rendered resources.
    struct Batch: Sendable {
        var items: [EvaluatedItem] = []
        var rendered = RenderedRows()
    }

    /// What one worker thread owns.
    private struct Worker {
        let evaluator: StepEvaluator
        let rows = RowResources()
    }

    /// Rows per batch: enough that handing a batch over costs little next to evaluating it.
    static let batchRows = 256

    private let workers: OrderedWorkers<[StepItem], Batch>
    /// Batches evaluated or being evaluated ahead of the writer: bounds memory whatever the file's size.
    private let window: Int
    private var pending: [StepItem] = []
    private var pendingRows = 0

    init(mapping: CompiledMapping, stepIndex: Int, lookups: LookupTables, threads: Int) {
        window = 2 * threads + 2
        workers = OrderedWorkers(threads: threads, workerState: {
            Worker(evaluator: StepEvaluator(mapping: mapping.compiledAgain(), stepIndex: stepIndex, lookups: lookups))
        }) { worker, items in
            var batch = Batch()
            batch.items.reserveCapacity(items.count)
            for item in items {
                switch item {
                case .rows(let first, let group):
                    let outcome = worker.evaluator.convert(first.values, group: group.map(\.values), into: worker.rows)
                    let resources = outcome == .produced ? batch.rendered.append(worker.rows) : 0..<0
                    batch.items.append(.rows(first: first, group: group, outcome: outcome, resources: resources))
                case .reject(let line, let reason, let value):
                    batch.items.append(.reject(line: line, reason: reason, value: value))
                }
            }
            return batch
        }
    }

    /// Adds an item; when the window is full, hands the oldest evaluated batch to `write` first.
    mutating func add(_ item: StepItem, write: (Batch) throws -> Void) rethrows {
        if case .rows(_, let group) = item { pendingRows += max(1, group.count) }
        pending.append(item)
        guard pendingRows >= Self.batchRows else { return }
        submit()
        while workers.pending > window, let batch = workers.next() { try write(batch) }
    }

    /// Hands every batch still in flight to `write`, in order.
    mutating func finish(write: (Batch) throws -> Void) rethrows {
        if !pending.isEmpty { submit() }
        while let batch = workers.next() { try write(batch) }
        workers.close()
    }

    private mutating func submit() {
        workers.submit(pending)
        pending = []
        pendingRows = 0
    }
}
