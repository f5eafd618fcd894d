#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: what was attempted, on what, and the errno.
public struct SystemError: Error, Equatable, CustomStringConvertible, Sendable {
    public var operation: String
    public var object: String
    public var errno: Int32

    public init(_ operation: String, _ object: String, errno: Int32) {
        self.operation = operation; self.object = object; self.errno = errno
    }

    /// With the errno the last failed call left.
    init(_ operation: String, _ object: String) {
        self.init(operation, object, errno: Glibc.errno)
    }

    public var description: String {
        "\(operation) \(object): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}
