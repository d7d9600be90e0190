/// The rule every reader of NDJSON here shares for lines that hold nothing.
///
/// A line of only JSON whitespace (spaces, tabs, a carriage return) is skipped like an empty one, and still counts
/// for line numbers: it holds no resource to lose, editors and `\r\n` files leave such lines (a trailing blank line
/// is the common case), and the FHIR bulk data format asks for one resource per line without forbidding them. A
/// line with anything else that is not one resource is an error.
public enum NDJSONLine {
    // Inlinable: called for every line read, and unspecialized across modules it fetched generic metadata each time.
    @inlinable
    public static func isBlank<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        bytes.allSatisfy(isSpace)
    }

    /// The white space a line may have around its JSON value: space, tab, carriage return.
    @inlinable @inline(__always)
    public static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D }
}
