import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// A thread of the daemon's own (a worker, or a test's producer): started
/// with a body, joined once.
public final class HostThread: @unchecked Sendable {
    public let name: String
    private var thread: pthread_t?

    /// Starts `body` on a new thread named `name`.
    public init(_ name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        self.name = name
        thread = try Sys.startThread(name, body)
    }

    /// Moves the calling thread into the network namespace at `path` (e.g.
    /// `/var/run/netns/NAME`): sockets and devices it opens afterwards
    /// belong to that namespace.
    public static func enterNetworkNamespace(_ path: String) throws(SystemError) {
        _ = try Sys.check(ag_enter_netns(path), "setns", path)
    }

    /// The CPUs this process may run on (its affinity mask): what
    /// `stack.workers: auto` starts.
    public static var usableCPUs: Int { max(1, Int(ag_usable_cpus())) }

    /// Waits for the body to return (once; later calls return at once).
    public func join() {
        guard let t = thread else { return }
        thread = nil
        Sys.joinThread(t)
    }
}
