/// A problem in a mapping file, located at its line and column so an editor can jump to it.
public struct MappingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    /// `file:line:column: error: message`, the format compilers use, which terminals and editors link.
    public var description: String { "\(file):\(line):\(column): error: \(message)" }
}

/// A place in the mapping file.
public struct MappingLocation: Sendable, Equatable {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }
}
