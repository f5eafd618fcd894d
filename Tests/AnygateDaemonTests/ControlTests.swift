import AnygateControl
@testable import AnygateDaemon
import Foundation
import Logging
import Testing

/// The control protocol, answered by a daemon with no interfaces (needs no
/// privileges: only a Unix socket in a temporary directory).
@Suite("Control protocol")
struct ControlTests {
    let dir = NSTemporaryDirectory() + "anygate-control-\(UUID().uuidString.prefix(8))"

    func daemon() throws -> Daemon {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var c = DaemonConfig()
        c.controlSocket = dir + "/control.sock"
        return try Daemon(config: c, configPath: dir + "/missing.yaml", logger: Logger(label: "test"))
    }

    func ask(_ d: Daemon, _ line: String) -> [String: Any] {
        let out = d.handleControl(Array((line + "\n").utf8))
        #expect(out.last == 0x0A, "one line per response")
        return (try? JSONSerialization.jsonObject(with: Data(out.dropLast())) as? [String: Any]) ?? [:]
    }

    func ask(_ d: Daemon, _ r: ControlRequest) -> [String: Any] {
        ask(d, String(decoding: try! ControlCoding.encoder().encode(r), as: UTF8.self))
    }

    @Test("requests round-trip through JSON with lowerCamelCase keys")
    func requestCoding() throws {
        let r = ControlRequest(verb: .routeAdd, prefix: "10.2.0.0/16", via: "10.1.0.9", dev: "lan0", metric: 7)
        let text = String(decoding: try ControlCoding.encoder().encode(r), as: UTF8.self)
        #expect(text == #"{"dev":"lan0","metric":7,"prefix":"10.2.0.0/16","verb":"route-add","via":"10.1.0.9"}"#)
        #expect(try ControlCoding.decoder.decode(ControlRequest.self, from: Data(text.utf8)) == r)
        let route = RouteInfo(prefix: "10.0.0.0/8", nextHop: nil, interface: "lan0", metric: 0, origin: "connected")
        #expect(String(decoding: try ControlCoding.encoder().encode(route), as: UTF8.self)
                == #"{"interface":"lan0","metric":0,"nextHop":null,"nextHops":[],"origin":"connected","prefix":"10.0.0.0/8","weight":1}"#)
        // An ECMP member lists its set, on-link members with a null address.
        let ecmp = RouteInfo(prefix: "10.9.0.0/16", nextHop: "192.0.2.1", interface: "wan0", metric: 0, origin: "static",
                             nextHops: [.init(address: "192.0.2.1", interface: "wan0", weight: 1), .init(address: nil, interface: "gre0", weight: 2)])
        let text2 = String(decoding: try ControlCoding.encoder().encode(ecmp), as: UTF8.self)
        #expect(text2.contains(#""nextHops":[{"address":"192.0.2.1","interface":"wan0","weight":1},{"address":null,"interface":"gre0","weight":2}]"#))
        #expect(try ControlCoding.decoder.decode(RouteInfo.self, from: Data(text2.utf8)) == ecmp)
    }

    @Test("broken requests get an error answer, and the daemon keeps serving")
    func brokenRequests() throws {
        let d = try daemon()
        defer { d.shutdown() }
        for bad in ["", "not json", "{}", #"{"verb":"launch"}"#, #"{"verb":"show","what":"colours"}"#, "[1,2,3]",
                    #"{"verb":"route-add"}"#, #"{"verb":"route-add","prefix":"10.0.0.1/8","via":"10.0.0.2"}"#,
                    #"{"verb":"route-add","prefix":"10.0.0.0/8","via":"nowhere"}"#,
                    #"{"verb":"route-add","prefix":"10.0.0.0/8","dev":"eth9"}"#,
                    #"{"verb":"route-add","prefix":"10.0.0.0/8"}"#, #"{"verb":"route-del","prefix":"10.0.0.0/8"}"#,
                    #"{"verb":"address-preference","dev":"lan0","address":"10.0.0.1","preference":3}"#,
                    #"{"verb":"address-preference","dev":"lan0"}"#, #"{"verb":"explain-source"}"#,
                    #"{"verb":"explain-source","destination":"10.0.0.300"}"#, #"{"verb":"explain-source","destination":"8.8.8.8"}"#,
                    String(repeating: "x", count: 10000)] {
            let r = ask(d, bad)
            #expect(r["ok"] as? Bool == false, "accepted: \(bad.prefix(40))")
            #expect((r["error"] as? String)?.isEmpty == false)
        }
        let colours = ask(d, #"{"verb":"show","what":"colours"}"#)
        #expect((colours["error"] as? String)?.contains("choose one of interfaces") == true)
        let missing = ask(d, #"{"verb":"route-del","prefix":"10.0.0.0/8"}"#)
        #expect(missing["error"] as? String == "no such route 10.0.0.0/8")
        #expect(ask(d, ControlRequest(verb: .show, what: "routes"))["ok"] as? Bool == true)
    }

    @Test("every show topic answers with the documented shape")
    func shows() throws {
        let d = try daemon()
        defer { d.shutdown() }
        for topic in ControlRequest.showTopics {
            let r = ask(d, ControlRequest(verb: .show, what: topic))
            #expect(r["ok"] as? Bool == true, "\(topic)")
        }
        let stats = ask(d, ControlRequest(verb: .show, what: "stats"))["result"] as? [String: Any]
        #expect((stats?["counters"] as? [String: Any])?["ipForwarded"] != nil)
        #expect(stats?["poolBuffers"] as? Int == 8192 + 512, "frame buffers and super-frame buffers")
    }

    @Test("reload of a missing file is refused and reported")
    func reloadRefused() throws {
        let d = try daemon()
        defer { d.shutdown() }
        let r = ask(d, ControlRequest(verb: .reload))
        #expect(r["ok"] as? Bool == false)
        #expect((r["error"] as? String)?.contains("running config kept") == true)
    }

    @Test("a second daemon on the same socket is refused; the socket is mode 0600 and removed on shutdown")
    func socketOwnership() throws {
        let d = try daemon()
        let path = dir + "/control.sock"
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        var c = DaemonConfig()
        c.controlSocket = path
        #expect(throws: DaemonError.self) { try Daemon(config: c, configPath: "x", logger: Logger(label: "t")) }
        do { _ = try Daemon(config: c, configPath: "x", logger: Logger(label: "t")) } catch {
            #expect(error.description.contains("another anygated is running"))
        }
        d.shutdown()
        #expect(!FileManager.default.fileExists(atPath: path))
        // A stale socket file (no daemon behind it) is replaced.
        FileManager.default.createFile(atPath: path, contents: Data())
        let again = try Daemon(config: c, configPath: "x", logger: Logger(label: "t"))
        again.shutdown()
    }

    @Test("metrics text has one family per counter and a series per interface and drop reason")
    func metrics() throws {
        let d = try daemon()
        defer { d.shutdown() }
        let text = d.metricsText()
        #expect(text.contains("# TYPE anygate_drops_total counter"))
        #expect(text.contains("anygate_drops_total{reason=\"no-route\"} 0"))
        #expect(text.contains("# TYPE anygate_ip_forwarded_total counter"))
        #expect(text.contains("anygate_pool_buffers_in_use 0"))
        let http = String(decoding: d.handleMetrics(Array("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8)), as: UTF8.self)
        #expect(http.hasPrefix("HTTP/1.1 200 OK\r\n") && http.contains("text/plain; version=0.0.4"))
        #expect(String(decoding: d.handleMetrics(Array("GET / HTTP/1.1\r\n\r\n".utf8)), as: UTF8.self).hasPrefix("HTTP/1.1 404"))
        #expect(String(decoding: d.handleMetrics(Array("POST /metrics HTTP/1.1\r\n\r\n".utf8)), as: UTF8.self).hasPrefix("HTTP/1.1 405"))
    }
}
