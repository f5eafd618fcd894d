#if canImport(Glibc)
import Glibc
#endif

/// An exclusive advisory lock on a file (`flock`), held until `release` or
/// the process ends: one daemon per state directory.
public final class FileLock {
    public let path: String
    private var fd: Int32

    /// Takes the lock, creating the file (mode 0644). Returns nil when
    /// another process holds it; throws when the file cannot be opened.
    public static func acquire(_ path: String) throws(SystemError) -> FileLock? {
        let fd = try Sys.open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o644)
        do {
            guard try Sys.flock(fd, LOCK_EX | LOCK_NB, path) else {
                Sys.close(fd)
                return nil
            }
        } catch {
            Sys.close(fd)
            throw error
        }
        return FileLock(path: path, fd: fd)
    }

    private init(path: String, fd: Int32) { self.path = path; self.fd = fd }

    public func release() {
        guard fd >= 0 else { return }
        Sys.close(fd)
        fd = -1
    }

    deinit { release() }
}
