/// What an XML file holds while its record path has matched nothing: enough to say why when the file ends without a
/// record (its root, the element paths that repeat, a mysqldump's tables and their columns), in bounded memory.
///
/// Kept only until the first record: a file whose path matches pays for it on the few elements before that record.
struct XMLPathCensus {
    /// Distinct element paths counted at most; deeper or later new paths are not counted.
    static let pathLimit = 1000
    /// mysqldump tables remembered at most.
    static let tableLimit = 1000

    private(set) var root: String?
    private(set) var rootLine = 1
    private var pathIndex: [String: Int32] = [:]
    private var paths: [(path: String, count: Int, parent: Int32, hasChildren: Bool)] = []
    /// An element that would be the records' parent was met (for a one-step path: the document itself).
    var recordParentSeen = false
    /// That parent holds elements the path does not match: a mistaken path, not an empty table.
    var recordParentHasOtherChildren = false
    /// mysqldump: `<table_data name>` in document order, and each `<table_structure>`'s `<field Field>` names.
    private(set) var tables: [String] = []
    private(set) var columnsOfTable: [String: [String]] = [:]
    private var currentStructure: String?

    /// Counts an element whose parent's census path is `parent` (nil for the root element); returns its own, -1
    /// once the limit is reached (and for everything inside an element not counted).
    mutating func enter(_ local: String, parent: Int32?, line: Int) -> Int32 {
        let path: String
        if let parent {
            guard parent >= 0 else { return -1 }
            paths[Int(parent)].hasChildren = true
            path = paths[Int(parent)].path + "/" + local
        } else {
            if root == nil {
                root = local
                rootLine = line
            }
            path = "/" + local
        }
        if let id = pathIndex[path] {
            paths[Int(id)].count += 1
            return id
        }
        guard paths.count < Self.pathLimit else { return -1 }
        let id = Int32(paths.count)
        pathIndex[path] = id
        paths.append((path, 1, parent ?? -1, false))
        return id
    }

    mutating func noteTable(_ name: String) {
        if tables.count < Self.tableLimit { tables.append(name) }
    }

    mutating func enterStructure(_ name: String) {
        currentStructure = name
        if columnsOfTable[name] == nil, columnsOfTable.count < Self.tableLimit { columnsOfTable[name] = [] }
    }

    mutating func noteColumn(_ name: String) {
        guard let table = currentStructure, columnsOfTable[table] != nil else { return }
        columnsOfTable[table]!.append(name)
    }

    /// The paths met more than once, likeliest records first: elements with child elements before leaves (a record
    /// holds fields), then those that repeat most within one instance of their nearest repeating ancestor (the file,
    /// if none), then those inside fewer repeating elements, then by path.
    func repeatingPaths() -> [(path: String, count: Int)] {
        func rank(_ id: Int) -> (perEnclosing: Double, depth: Int) {
            var depth = 0
            var enclosing: Int?
            var p = paths[id].parent
            while p >= 0 {
                if paths[Int(p)].count > 1 {
                    depth += 1
                    if enclosing == nil { enclosing = paths[Int(p)].count }
                }
                p = paths[Int(p)].parent
            }
            return (Double(paths[id].count) / Double(enclosing ?? 1), depth)
        }
        return paths.indices.filter { paths[$0].count > 1 }
            .map { (id: $0, rank: rank($0)) }
            .sorted { a, b in
                if paths[a.id].hasChildren != paths[b.id].hasChildren { return paths[a.id].hasChildren }
                if a.rank.perEnclosing != b.rank.perEnclosing { return a.rank.perEnclosing > b.rank.perEnclosing }
                if a.rank.depth != b.rank.depth { return a.rank.depth < b.rank.depth }
                return paths[a.id].path < paths[b.id].path
            }
            .map { (paths[$0.id].path, paths[$0.id].count) }
    }

    /// Why a record path matched nothing, with what the file does hold.
    func noMatchMessage(recordPath: String, fileName: String) -> String {
        var message = "record path '\(recordPath)' matches no element of \(fileName)"
        if let root { message += "; its root is <\(root)>" }
        let repeating = repeatingPaths()
        if repeating.isEmpty {
            message += "; no element repeats in it"
        } else {
            let shown = repeating.prefix(5).map { "\($0.path) (\($0.count))" }
            message += "; repeating elements: " + shown.joined(separator: ", ") + (repeating.count > 5 ? ", ..." : "")
        }
        if root == "mysqldump" {
            message += tables.isEmpty ? "; it holds no table_data"
                : "; its tables: \(tables.joined(separator: ", ")) (record: \"/mysqldump/database/table_data[@name='\(tables[0])']/row\" reads one)"
        }
        return message
    }
}
