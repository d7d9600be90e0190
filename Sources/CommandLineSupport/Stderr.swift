import Foundation

/// Messages for people go to standard error; standard output carries only what a command produces.
public enum Stderr {
    public static func print(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}
