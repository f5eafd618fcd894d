import AnygateDaemon
import AnygateStack
import AnygateWire
import Testing

@Suite("Config: the stack's TCP and the services on it")
struct StackServicesConfigTests {
    let reader = ConfigReader(file: "test.yaml")
    static let lan = """
    interfaces:
      - {name: lan0, attach: {tap: t0}, addresses: [10.1.0.1/24]}

    """

    @Test("stack: addresses, control's allow and token file, the bandwidth-test responder and stack.tcp")
    func valid() throws {
        let c = try reader.parse(Self.lan + """
        control: {listen: "stack:10.1.0.1:7000", allow: [10.1.0.0/24, 10.2.0.0/16], token-file: /etc/anygate/token}
        metrics: {listen: "stack:10.1.0.1:9100"}
        services: {bandwidth-test: {listen: "stack:10.1.0.1:5201"}}
        stack: {tcp: {msl: {loopback: 500ms, remote: 20s}, vtw: false, mslt: true, time-wait: {max: 1000}, max-connections: 64}}
        """)
        #expect(c.controlListen == StackAddress(host: .v4(IPv4Address(10, 1, 0, 1)), port: 7000))
        #expect(c.controlAllow == [IPPrefix("10.1.0.0/24")!, IPPrefix("10.2.0.0/16")!])
        #expect(c.controlTokenFile == "/etc/anygate/token")
        #expect(c.metricsListen == .stack(StackAddress(host: .v4(IPv4Address(10, 1, 0, 1)), port: 9100)))
        #expect(c.bandwidthTestListen == StackAddress(host: .v4(IPv4Address(10, 1, 0, 1)), port: 5201))
        #expect(c.tcpMSLLoopback == .milliseconds(500) && c.tcpMSLLocal == .seconds(5) && c.tcpMSLRemote == .seconds(20))
        #expect(!c.tcpVTW && c.tcpMSLT && c.tcpTimeWaitMax == 1000 && c.tcpMaxConnections == 64)
        #expect(try reader.parse("metrics: {listen: 127.0.0.1:9100}\n").metricsListen
                == .host(SocketAddress(host: IPv4Address(127, 0, 0, 1), port: 9100)))
        // IPv6: in brackets, as in a URL.
        let six = try reader.parse(Self.lan + "metrics: {listen: \"stack:[2001:db8:1::1]:9100\"}\n")
        #expect(six.metricsListen == .stack(StackAddress(host: .v6(IPv6Address("2001:db8:1::1")!), port: 9100)))
        #expect(six.metricsListen?.description == "stack:[2001:db8:1::1]:9100")
    }

    @Test("bandwidth-test peers: ADDR, ADDR:PORT, ADDR6 and [ADDR6]:PORT")
    func peers() {
        #expect(StackAddress(parsing: "10.2.0.1", defaultPort: 5201) == StackAddress(host: .v4(IPv4Address(10, 2, 0, 1)), port: 5201))
        #expect(StackAddress(parsing: "10.2.0.1:7", defaultPort: 5201)?.port == 7)
        #expect(StackAddress(parsing: "2001:db8::2", defaultPort: 5201) == StackAddress(host: .v6(IPv6Address("2001:db8::2")!), port: 5201))
        #expect(StackAddress(parsing: "[2001:db8::2]:9", defaultPort: 5201)?.port == 9)
        for bad in ["10.2.0.1:0", "10.2.0.1:x", "[2001:db8::2", "[2001:db8::2]x", "::", "0.0.0.0:1", "host:1"] {
            #expect(StackAddress(parsing: bad[...], defaultPort: 5201) == nil, "\(bad)")
        }
        #expect(StackAddress(parsing: "10.2.0.1") == nil)  // no port and no default
    }

    @Test("refused: control.listen without allow or token file, or on the host; allow without listen; a bad stack address; an MSL out of range; stack services with several workers",
          arguments: [
              "control: {listen: \"stack:10.1.0.1:7000\", token-file: /t}\n",
              "control: {listen: \"stack:10.1.0.1:7000\", allow: [10.1.0.0/24]}\n",
              "control: {listen: \"stack:10.1.0.1:7000\", allow: [], token-file: /t}\n",
              "control: {listen: \"stack:10.1.0.1:7000\", allow: [10.1.0.0/24], token-file: relative}\n",
              "control: {listen: \"10.1.0.1:7000\", allow: [10.1.0.0/24], token-file: /t}\n",
              "control: {allow: [10.1.0.0/24]}\n",
              "metrics: {listen: \"stack:0.0.0.0:9100\"}\n",
              "metrics: {listen: \"stack:10.1.0.1\"}\n",
              "metrics: {listen: \"stack:2001:db8:1::1:9100\"}\n",
              "metrics: {listen: \"stack:[::]:9100\"}\n",
              "services: {bandwidth-test: {listen: \"127.0.0.1:5201\"}}\n",
              "stack: {tcp: {msl: {local: 0s}}}\n",
              "stack: {tcp: {msl: {remote: 10m}}}\n",
              "stack: {tcp: {time-wait: {max: 2}}}\n",
              "stack: {workers: 2}\nmetrics: {listen: \"stack:10.1.0.1:9100\"}\n",
          ])
    func refused(_ text: String) {
        #expect(throws: ConfigError.self) { try reader.parse(Self.lan + text) }
    }
}
