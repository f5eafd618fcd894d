public import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a control request failed before the daemon could answer it.
public enum ControlClientError: Error, CustomStringConvertible {
    case noDaemon(path: String, reason: String)
    case io(String)
    case badResponse(String)
    /// The daemon answered with an error.
    case daemon(String)

    public var description: String {
        switch self {
        case let .noDaemon(path, reason): "no anygated is listening on \(path) (\(reason))"
        case let .io(s): s
        case let .badResponse(s): "unreadable answer from anygated: \(s)"
        case let .daemon(s): s
        }
    }
}

/// Sends one request over the control socket and returns the raw response line.
public enum ControlClient {
    /// Where the daemon listens: its Unix socket, or `control.listen` on
    /// one of its stack's addresses (TCP; the request carries the token).
    public enum Endpoint: Sendable {
        case unix(String)
        case tcp(host: String, port: UInt16)
    }

    public static func exchange(_ request: ControlRequest, socketPath: String, timeoutSeconds: Int = 10) throws -> Data {
        try exchange(request, endpoint: .unix(socketPath), timeoutSeconds: timeoutSeconds)
    }

    public static func exchange(_ request: ControlRequest, endpoint: Endpoint, timeoutSeconds: Int = 10) throws -> Data {
        let fd: Int32
        switch endpoint {
        case .unix(let socketPath): fd = try connectUnix(socketPath, timeoutSeconds)
        case .tcp(let host, let port): fd = try connectTCP(host, port, timeoutSeconds)
        }
        defer { close(fd) }
        var line = try ControlCoding.encoder().encode(request)
        line.append(0x0A)
        try line.withUnsafeBytes { b in
            var off = 0
            while off < b.count {
                let n = write(fd, b.baseAddress! + off, b.count - off)
                guard n > 0 else { throw ControlClientError.io("write: \(String(cString: strerror(errno)))") }
                off += n
            }
        }
        var response = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n < 0 { throw ControlClientError.io("read: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            response.append(contentsOf: buf[0..<n])
            if response.last == 0x0A { break }
        }
        guard !response.isEmpty else { throw ControlClientError.badResponse("empty") }
        return response
    }

    private static func setTimeouts(_ fd: Int32, _ seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    private static func connectUnix(_ socketPath: String, _ timeoutSeconds: Int) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlClientError.io("socket: \(String(cString: strerror(errno)))") }
        setTimeouts(fd, timeoutSeconds)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw ControlClientError.io("socket path too long: \(socketPath)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { b in
            for (i, c) in pathBytes.enumerated() { b[i] = c }
            b[pathBytes.count] = 0
        }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ControlClientError.noDaemon(path: socketPath, reason: reason)
        }
        return fd
    }

    private static func connectTCP(_ host: String, _ port: UInt16, _ timeoutSeconds: Int) throws -> Int32 {
        var a = in_addr()
        guard inet_pton(AF_INET, host, &a) == 1 else { throw ControlClientError.io("not an IPv4 address: \(host)") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlClientError.io("socket: \(String(cString: strerror(errno)))") }
        setTimeouts(fd, timeoutSeconds)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr = a
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ControlClientError.noDaemon(path: "\(host):\(port)", reason: reason)
        }
        return fd
    }

    /// Sends `request` and decodes a successful result of type `T`.
    public static func call<T: Codable>(_ request: ControlRequest, socketPath: String, as: T.Type) throws -> T {
        try call(request, endpoint: .unix(socketPath), as: T.self)
    }

    public static func call<T: Codable>(_ request: ControlRequest, endpoint: Endpoint, as: T.Type) throws -> T {
        let data = try exchange(request, endpoint: endpoint)
        let response: ControlResponse<T>
        do {
            response = try ControlCoding.decoder.decode(ControlResponse<T>.self, from: data)
        } catch {
            // An error response carries no result; decode just the envelope.
            if let env = try? ControlCoding.decoder.decode(ControlResponse<Done>.self, from: data), !env.ok {
                throw ControlClientError.daemon(env.error ?? "failed")
            }
            throw ControlClientError.badResponse("\(error)")
        }
        guard response.ok, let result = response.result else { throw ControlClientError.daemon(response.error ?? "failed") }
        return result
    }
}
