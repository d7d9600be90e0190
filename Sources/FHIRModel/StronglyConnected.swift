/// Tarjan's strongly connected components: components come out with what they depend on first.
public enum StronglyConnected {
    /// The components of the graph of `count` nodes whose successors `edges` gives, each sorted.
    public static func components(count: Int, edges: (Int) -> Set<Int>) -> [[Int]] {
        var index = 0
        var indexes = Array(repeating: -1, count: count)
        var lowlink = Array(repeating: 0, count: count)
        var onStack = Array(repeating: false, count: count)
        var stack: [Int] = []
        var out: [[Int]] = []
        // Iterative, so deep chains do not exhaust the call stack.
        for root in 0..<count where indexes[root] < 0 {
            var work: [(node: Int, successors: [Int], next: Int)] = []
            func open(_ v: Int) {
                indexes[v] = index
                lowlink[v] = index
                index += 1
                stack.append(v)
                onStack[v] = true
                work.append((v, edges(v).sorted(), 0))
            }
            open(root)
            while !work.isEmpty {
                let top = work.count - 1
                let v = work[top].node
                if work[top].next < work[top].successors.count {
                    let w = work[top].successors[work[top].next]
                    work[top].next += 1
                    if indexes[w] < 0 {
                        open(w)
                    } else if onStack[w] {
                        lowlink[v] = min(lowlink[v], indexes[w])
                    }
                    continue
                }
                work.removeLast()
                if let parent = work.last?.node { lowlink[parent] = min(lowlink[parent], lowlink[v]) }
                if lowlink[v] == indexes[v] {
                    var component: [Int] = []
                    while let w = stack.popLast() {
                        onStack[w] = false
                        component.append(w)
                        if w == v { break }
                    }
                    out.append(component.sorted())
                }
            }
        }
        return out
    }
}
