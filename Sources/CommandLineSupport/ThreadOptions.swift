import ArgumentParser
import ParallelWork

/// `--threads N`: how many threads a command may keep busy. The artifacts and findings are the same whatever N.
public struct ThreadOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Threads to use (default: the machine's cores). The output is byte-identical whatever the number; 1 runs everything on one thread.",
                               valueName: "n"))
    public var threads: Int = Cores.available

    public init() {}

    public mutating func validate() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
    }
}
