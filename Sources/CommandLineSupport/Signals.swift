#if canImport(Glibc)
import Glibc
#endif

/// Signals the commands handle themselves.
public enum HandledSignals {
    /// Unblocks `signals` in the calling thread. The signal mask is inherited: a parent that started the command with
    /// SIGINT or SIGTERM blocked would otherwise keep them pending until the work was done and reported as a success.
    public static func unblock(_ signals: [Int32] = [SIGINT, SIGTERM]) {
        var set = sigset_t()
        sigemptyset(&set)
        for number in signals { sigaddset(&set, number) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}
