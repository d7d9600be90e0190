/// A resource template flattened into instructions with plain payloads, for rendering rows.
///
/// Walking the `TemplateNode` tree retains and releases every node, member and key it passes (about 70 reference
/// count operations a resource in Medplum's example); walking these instructions touches no reference count. Leaves
/// and expressions, which evaluation needs as they are, stay in side tables.
final class TemplateProgram: @unchecked Sendable {
    /// One instruction. A node is one instruction (`literal`, `nothing`, `leaf`) or a run of them ending before `end`.
    enum Op {
        /// Literal JSON: `count` bytes at `start` of `bytes`.
        case literal(start: Int, count: Int)
        /// A literal that FHIR's "no empty values" prunes: writes nothing.
        case nothing
        /// `leaves[index]`.
        case leaf(Int)
        /// An object whose `member`s follow up to `end`; `condition` indexes `expressions` (-1 for none).
        case object(condition: Int, end: Int)
        /// `"key":` (bytes at `keyStart`), then its value node; `literal` when that value is fixed.
        case member(keyStart: Int, keyCount: Int, literal: Bool)
        /// An array whose item nodes (or `each`) follow up to `end`.
        case array(end: Int)
        /// `$each`: the body node that follows, once per element of `expressions[list]` bound to alias `slot`.
        case each(list: Int, slot: Int, end: Int)
    }

    // Immutable after init; read through unsafe pointers so that rendering retains nothing.
    let ops: UnsafeMutableBufferPointer<Op>
    let bytes: UnsafeMutableBufferPointer<UInt8>
    let leaves: [Leaf]
    let expressions: [CompiledExpression]

    init(_ root: TemplateNode) {
        var builder = Builder()
        builder.add(root)
        ops = .allocate(capacity: builder.ops.count)
        _ = ops.initialize(from: builder.ops)
        bytes = .allocate(capacity: max(builder.bytes.count, 1))
        _ = bytes.initialize(from: builder.bytes)
        leaves = builder.leaves
        expressions = builder.expressions
    }

    deinit {
        ops.deallocate()
        bytes.deallocate()
    }

    /// The instruction after the node that starts at `pc`.
    @inline(__always)
    func next(after pc: Int) -> Int {
        switch ops[pc] {
        case .literal, .nothing, .leaf: return pc + 1
        case .object(_, let end), .array(let end), .each(_, _, let end): return end
        case .member: preconditionFailure("a member is not a node")
        }
    }

    private struct Builder {
        var ops: [Op] = []
        var bytes: [UInt8] = []
        var leaves: [Leaf] = []
        var expressions: [CompiledExpression] = []

        mutating func add(_ node: TemplateNode) {
            switch node {
            case .literal(let value, let literal):
                if value.isPrunable {
                    ops.append(.nothing)
                } else {
                    ops.append(.literal(start: bytes.count, count: literal.count))
                    bytes.append(contentsOf: literal)
                }
            case .leaf(let leaf):
                ops.append(.leaf(leaves.count))
                leaves.append(leaf)
            case .object(let members, let condition):
                let at = ops.count
                ops.append(.nothing)  // patched below, once `end` is known
                let conditionIndex = condition.map { add($0) } ?? -1
                for member in members {
                    ops.append(.member(keyStart: bytes.count, keyCount: member.keyBytes.count, literal: member.node.isLiteral))
                    bytes.append(contentsOf: member.keyBytes)
                    add(member.node)
                }
                ops[at] = .object(condition: conditionIndex, end: ops.count)
            case .array(let items):
                let at = ops.count
                ops.append(.nothing)
                for item in items {
                    switch item {
                    case .node(let n):
                        add(n)
                    case .each(let list, let slot, let body):
                        let eachAt = ops.count
                        ops.append(.nothing)
                        let listIndex = add(list)
                        add(body)
                        ops[eachAt] = .each(list: listIndex, slot: slot, end: ops.count)
                    }
                }
                ops[at] = .array(end: ops.count)
            }
        }

        mutating func add(_ expression: CompiledExpression) -> Int {
            expressions.append(expression)
            return expressions.count - 1
        }
    }
}
