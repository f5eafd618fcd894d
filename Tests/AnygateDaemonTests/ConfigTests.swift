import AnygateDaemon
import AnygateStack
import AnygateWire
import Foundation
import Testing

@Suite("Config: reading and rejecting")
struct ConfigTests {
    let reader = ConfigReader(file: "test.yaml")

    static let minimal = """
    interfaces:
      - name: lan0
        attach: {tap: ag-lan0}
        addresses: [10.1.0.1/24]
      - name: wan0
        attach: {packet: eth1}
        mac: 02:00:00:00:00:02
        mtu: 1400
        addresses:
          - {address: 192.0.2.1/24, preference: 10}
    routes:
      - {to: 0.0.0.0/0, via: 192.0.2.254, interface: wan0, metric: 10}
      - {to: 10.9.0.0/16, interface: lan0}
    """

    @Test("a valid file reads into typed values with defaults")
    func valid() throws {
        let c = try reader.parse(Self.minimal)
        #expect(c.interfaces.count == 2)
        #expect(c.interfaces[0].attach == .tap("ag-lan0") && c.interfaces[0].mtu == 1500)
        #expect(c.interfaces[1].attach == .packet("eth1") && c.interfaces[1].mtu == 1400)
        #expect(c.interfaces[1].addresses == [AddressConfig(address: try IPv4InterfaceAddress("192.0.2.1/24"), preference: 10)])
        #expect(c.routes[0] == RouteConfig(to: .any, via: IPv4Address(192, 0, 2, 254), interface: "wan0", metric: 10))
        #expect(c.controlSocket == "/run/anygate/control.sock" && c.metricsListen == nil)
        #expect(c.logLevel == .info && c.logFormat == .text && c.arpMaxEntries == 4096)
        // Without a configured MAC the daemon generates one (StateDirectoryTests).
        #expect(c.interfaces[0].mac == nil && c.stateDirectory == "/var/lib/anygate")
        #expect(try reader.parse("state: {directory: /srv/ag}\n").stateDirectory == "/srv/ag")
        #expect(throws: ConfigError.self) { try reader.parse("state: {directory: relative}\n") }
    }

    @Test("forwarding keys: rpf, ecmp-hash, pmtu-discovery, route weights; tunnels default to strict rpf and PMTU discovery")
    func forwardingKeys() throws {
        let c = try reader.parse("""
        ecmp-hash: l3
        interfaces:
          - name: wan0
            attach: {tap: t0}
            rpf: loose
            addresses: [192.0.2.1/24]
        tunnels:
          - {name: gre0, local: 192.0.2.1, remote: 198.51.100.1, addresses: [172.16.0.1/30]}
          - {name: gre1, local: 192.0.2.1, remote: 198.51.100.2, rpf: off, pmtu-discovery: false}
        routes:
          - {to: 10.9.0.0/16, via: 192.0.2.7, weight: 3}
          - {to: 10.9.0.0/16, via: 172.16.0.2}
        """)
        #expect(c.ecmpHash == .l3 && c.interfaces[0].rpf == .loose)
        #expect(c.tunnels[0].tunnel.rpf == .strict && c.tunnels[0].tunnel.pmtuDiscovery)
        #expect(c.tunnels[1].tunnel.rpf == .off && !c.tunnels[1].tunnel.pmtuDiscovery)
        #expect(c.routes.map(\.weight) == [3, 1])
        #expect(try reader.parse("interfaces:\n  - {name: a, attach: {tap: t}}\n").interfaces[0].rpf == .off)
    }

    @Test("source-selection policies")
    func sourceSelection() throws {
        let c = try reader.parse("""
        stack: {source-selection: {default: [same-category, common-prefix-len, preference]}}
        interfaces:
          - name: a
            attach: {tap: t0}
            source-selection: [preference, index]
          - name: b
            attach: {tap: t1}
            source-selection: []
        """)
        #expect(c.sourcePolicy?.description == "same-category,common-prefix-len,preference")
        #expect(c.interfaces[0].sourcePolicy?.description == "preference,index")
        #expect(c.interfaces[1].sourcePolicy == nil)
    }

    @Test("what a config asks of the host: TUN for TAPs, NET_RAW and the sysctls for shared host interfaces, NET_RAW for host tunnels")
    func hostRequirements() throws {
        // Comments naming other attachments do not count: the parsed config decides.
        let tapOnly = try reader.parse("""
        interfaces:
          - name: lan0
            attach: {tap: t0}   # or {packet: eth1}
            addresses: [10.1.0.1/24]
        """)
        #expect(tapOnly.hostRequirements == ["NET_ADMIN", "/dev/net/tun"])
        let mirror = try reader.parse("interfaces:\n  - name: wan0\n    attach: {mirror: eth0}\n")
        #expect(mirror.hostRequirements == ["NET_ADMIN", "NET_RAW", "sysctl:net.ipv4.ip_forward=0", "sysctl:net.ipv4.conf.all.send_redirects=0"])
        let hostTunnel = try reader.parse("""
        interfaces:
          - name: lan0
            attach: {tap: t0}
            addresses: [10.1.0.1/24]
        tunnels:
          - {name: gre0, backend: host, local: 192.0.2.1, remote: 198.51.100.7}
        """)
        #expect(hostTunnel.hostRequirements == ["NET_ADMIN", "NET_RAW", "/dev/net/tun"])
    }

    @Test("a stack tunnel may start from an address a mirrored interface will learn from the host")
    func tunnelOnMirror() throws {
        let c = try reader.parse("""
        interfaces:
          - name: wan0
            attach: {mirror: eth0}
        tunnels:
          - {name: gre0, local: 198.51.100.10, remote: 203.0.113.2, addresses: [172.16.0.1/30]}
        """)
        #expect(c.tunnels.first?.tunnel.local == .v4(IPv4Address(198, 51, 100, 10)))
    }

    @Test("a tunnel with every key")
    func tunnels() throws {
        let c = try reader.parse("""
        interfaces:
          - name: wan0
            attach: {tap: t0}
            addresses: [192.0.2.1/24]
        tunnels:
          - name: gre0
            encapsulation: gre-in-udp
            backend: stack
            local: 192.0.2.1
            remote: 198.51.100.7
            key: 42
            sequence: true
            ttl: inherit
            tos: 16
            mtu: 1400
            mss-clamp: auto
            keepalive: {interval: 5s, retries: 4}
            addresses: [172.16.0.1/30]
        routes:
          - {to: 10.2.0.0/16, via: 172.16.0.2}
        """)
        let t = try #require(c.tunnels.first)
        #expect(t.tunnel.encapsulation == .greInUDP && t.tunnel.backend == .stack && t.tunnel.key == 42 && t.tunnel.sequence)
        #expect(t.tunnel.ttl == nil && t.tunnel.tos == 16 && t.tunnel.mtu == 1400 && t.tunnel.mssClamp == .auto)
        #expect(t.tunnel.keepalive == TunnelKeepalive(interval: .seconds(5), retries: 4))
        #expect(t.addresses.map(\.address.description) == ["172.16.0.1/30"])
        #expect(c.routes.count == 1, "a next hop on the tunnel's subnet is on-link")
    }

    @Test("ipflow keys and durations")
    func ipflow() throws {
        let c = try reader.parse("stack: {ipflow: {enabled: false, max-flows: 1024, idle-timeout: 5m}}")
        #expect(c.ipflowEnabled == false && c.ipflowMaxFlows == 1024 && c.ipflowIdleTimeout == .seconds(300))
        let d = try reader.parse("stack: {ipflow: {idle-timeout: 1500ms}}")
        #expect(d.ipflowEnabled && d.ipflowMaxFlows == 65536 && d.ipflowIdleTimeout == .milliseconds(1500))
    }

    @Test("the shipped example config is valid")
    func shippedExample() throws {
        let c = try ConfigReader.load(path: #filePath.replacingOccurrences(of: "Tests/AnygateDaemonTests/ConfigTests.swift",
                                                                            with: "etc/anygate/anygate.yaml"))
        #expect(c.interfaces.count == 2)
    }

    @Test("every example under etc/anygate/examples is valid")
    func examples() throws {
        let dir = #filePath.replacingOccurrences(of: "Tests/AnygateDaemonTests/ConfigTests.swift", with: "etc/anygate/examples")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }
        #expect(files.count >= 2)
        for f in files { _ = try ConfigReader.load(path: dir + "/" + f) }
    }

    /// Each rejection: the YAML, the key path it must name, the line, and words the reason must contain.
    static let rejections: [(String, String, Int?, String)] = [
        ("interfaces: [", "", 2, "not valid YAML"),  // the parser notices at the end of input
        ("", "", nil, "empty"),
        ("- 1\n- 2", "", 1, "expected a mapping"),
        ("colour: blue", "colour", 1, "unknown key"),
        ("log: {level: chatty}", "log.level", 1, "is not one of"),
        ("log: {format: xml}", "log.format", 1, "is not one of"),
        ("control: {socket: run/x.sock}", "control.socket", 1, "absolute path"),
        ("metrics: {listen: localhost}", "metrics.listen", 1, "IPV4:PORT"),
        ("stack: {arp: {max-entries: lots}}", "stack.arp.max-entries", 1, "expected a whole number"),
        ("stack: {arp: {pending-per-neighbor: 0}}", "stack.arp.pending-per-neighbor", 1, "out of range"),
        ("stack: {source-selection: {default: [index, fastest]}}", "stack.source-selection.default[1]", 1, "unknown scorer \"fastest\""),
        ("stack: {source-selection: {default: [index, index, index, index, index, index, index, index, index]}}",
         "stack.source-selection.default", 1, "at most 8"),
        ("stack: {source-selection: {default: index}}", "stack.source-selection.default", 1, "expected a list of scorers"),
        ("stack: {source-selection: {per-interface: []}}", "stack.source-selection.per-interface", 1, "unknown key"),
        ("stack: {ipflow: {enabled: maybe}}", "stack.ipflow.enabled", 1, "expected true or false"),
        ("stack: {ipflow: {idle-timeout: soon}}", "stack.ipflow.idle-timeout", 1, "not a duration"),
        ("stack: {ipflow: {idle-timeout: 10ms}}", "stack.ipflow.idle-timeout", 1, "at least 1s"),
        ("stack: {ipflow: {max-flows: -1}}", "stack.ipflow.max-flows", 1, "out of range"),
        ("stack: {ipflow: {buckets: 64}}", "stack.ipflow.buckets", 1, "unknown key"),
        ("tunnels: {name: x}", "tunnels", 1, "expected a list of tunnels"),
        ("tunnels:\n  - {name: gre0, local: 192.0.2.1}", "tunnels[0]", 2, "needs remote"),
        ("tunnels:\n  - {name: gre0, local: 192.0.2.1, remote: 224.0.0.1, backend: host}", "tunnels[0].remote", 2, "not a unicast"),
        ("tunnels:\n  - {name: gre0, local: 192.0.2.1, remote: 198.51.100.7, encapsulation: vxlan}", "tunnels[0].encapsulation", 2, "not one of gre, gre-in-udp"),
        ("tunnels:\n  - {name: gre0, local: 192.0.2.1, remote: 198.51.100.7, backend: kernel}", "tunnels[0].backend", 2, "not one of stack, host"),
        ("tunnels:\n  - {name: gre0, local: 192.0.2.1, remote: 198.51.100.7}", "tunnels[0].local", 2, "not an address of any interface"),
        ("tunnels:\n  - {name: gre0, local: 192.0.2.1, remote: 198.51.100.7, backend: host, ttl: 0}", "tunnels[0].ttl", 2, "out of range"),
        ("tunnels:\n  - {name: gre0, local: 192.0.2.1, remote: 198.51.100.7, backend: host, mss-clamp: tiny}", "tunnels[0].mss-clamp", 2, "off, auto or a number"),
        ("tunnels:\n  - {name: gre0, local: 192.0.2.1, remote: 198.51.100.7, backend: host, keepalive: {interval: 100ms}}", "tunnels[0].keepalive.interval", 2, "at least 1s"),
        ("tunnels:\n  - {name: gre0, local: 192.0.2.1, remote: 198.51.100.7, backend: host, colour: red}", "tunnels[0].colour", 2, "unknown key"),
        ("interfaces:\n  - name: gre0\n    attach: {tap: t0}\ntunnels:\n  - {name: gre0, local: 192.0.2.1, remote: 198.51.100.7, backend: host}", "tunnels[0].name", 5, "duplicate interface name"),
        ("mirror: {routes: {table: nowhere}}", "mirror.routes.table", 1, "is not main, local, default or a table number"),
        ("mirror: {routes: {protocols: [bird, carrier-pigeon]}}", "mirror.routes.protocols[1]", 1, "not a routing protocol"),
        ("mirror: {routes: {exclude: [10.0.0.1/8]}}", "mirror.routes.exclude[0]", 1, "host bits set"),
        ("mirror: {links: true}", "mirror.links", 1, "unknown key"),
        ("interfaces: {name: x}", "interfaces", 1, "expected a list"),
        ("interfaces:\n  - attach: {tap: t0}", "interfaces[0]", 2, "needs a name"),
        ("interfaces:\n  - name: this-name-is-far-too-long\n    attach: {tap: t0}", "interfaces[0].name", 2, "1 to 15"),
        ("interfaces:\n  - name: a\n", "interfaces[0]", 2, "needs attach"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0, packet: eth0}", "interfaces[0].attach", 3, "exactly one"),
        ("interfaces:\n  - name: a\n    attach: {mirror: eth0}\n    addresses: [10.0.0.1/24]", "interfaces[0].addresses", 4, "takes its addresses from the host"),
        ("interfaces:\n  - name: a\n    attach: {mirror: eth0}\n    mtu: 1400", "interfaces[0].mtu", 4, "takes its MTU from the host"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    source-selection: [index, bogus]", "interfaces[0].source-selection[1]", 4, "unknown scorer"),
        ("interfaces:\n  - name: a\n    attach: {bridge: br0}", "interfaces[0].attach.bridge", 3, "unknown key"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    mac: 01:00:5e:00:00:01", "interfaces[0].mac", 4, "unicast"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    mac: 02:00:00:zz:00:01", "interfaces[0].mac", 4, "not a MAC"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    mtu: 20", "interfaces[0].mtu", 4, "out of range"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    mtu: big", "interfaces[0].mtu", 4, "whole number"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    addresses: [10.1.0.1]", "interfaces[0].addresses[0]", 4, "missing /length"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    addresses: [10.1.0.300/24]", "interfaces[0].addresses[0]", 4, "not an IPv4 address"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n  - name: a\n    attach: {tap: t1}", "interfaces[1].name", 4, "duplicate interface name"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n  - name: b\n    attach: {tap: t0}", "interfaces[1].attach", 4, "attached twice"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    addresses: [10.0.0.1/24]\n  - name: b\n    attach: {tap: t1}\n    addresses: [10.0.0.1/24]",
         "interfaces[1].addresses[0]", 5, "configured twice"),
        ("routes:\n  - {to: 10.0.0.1/8, interface: x}", "routes[0].to", 2, "host bits set"),
        ("routes:\n  - {to: 10.0.0.0/8}", "routes[0]", 2, "needs via"),
        ("routes:\n  - {to: 10.0.0.0/8, via: 10.1.0.300}", "routes[0].via", 2, "not an IPv4 address"),
        ("routes:\n  - {to: 10.0.0.0/8, interface: nowhere}", "routes[0].interface", 2, "no interface named nowhere"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    addresses: [10.1.0.1/24]\nroutes:\n  - {to: 0.0.0.0/0, via: 192.0.2.1}",
         "routes[0].via", 6, "not on a connected subnet"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    addresses: [10.1.0.1/24]\nroutes:\n  - {to: 0.0.0.0/0, via: 10.1.0.9}\n  - {to: 0.0.0.0/0, via: 10.1.0.9}",
         "routes[1]", 7, "duplicate route"),
        ("routes:\n  - {to: 10.0.0.0/8, via: 10.0.0.1, weight: 0}", "routes[0].weight", 2, "1...64"),
        ("routes:\n  - {to: 10.0.0.0/8, via: 10.0.0.1, cost: 3}", "routes[0].cost", 2, "unknown key"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    rpf: paranoid", "interfaces[0].rpf", 4, "strict, loose, off"),
        ("ecmp-hash: l7", "ecmp-hash", 1, "l3, l4"),
        ("stack: {ecmp-hash: l3}", "stack.ecmp-hash", 1, "unknown key"),
        ("tunnels:\n  - {name: g, local: 10.0.0.1, remote: 10.0.0.2, backend: host, pmtu-discovery: maybe}",
         "tunnels[0].pmtu-discovery", 2, "true or false"),
        ("state: {directory: var/lib}", "state.directory", 1, "absolute path"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    ipv6: {addresses: [2001:db8::1]}", "interfaces[0].ipv6.addresses[0]", 4, "missing /length"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    ipv6: {addresses: [ff02::1/64]}", "interfaces[0].ipv6.addresses[0]", 4, "cannot be an interface address"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    ipv6: {router-advertisements: {interval: 1s}}",
         "interfaces[0].ipv6.router-advertisements.interval", 4, "4s to 1800s"),
        ("interfaces:\n  - name: a\n    attach: {mirror: eth0}\n    ipv6: {}", "interfaces[0].ipv6", 4, "from the host"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\nroutes:\n  - {to: 2001:db8::/32, via: fe80::1}", "routes[0]", 5, "needs interface"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\nroutes:\n  - {to: 2001:db8::/32, via: fe80::1, interface: a}",
         "routes[0].interface", 5, "has no ipv6"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    ipv6: {}\nroutes:\n  - {to: 10.0.0.0/8, interface: a}\n  - {to: 2001:db8::/32, via: ff02::2, interface: a}",
         "routes[1].via", 7, "not a unicast IPv6 address"),
        ("tunnels:\n  - {name: t, local: 192.0.2.1, remote: 2001:db8::2, backend: host}", "tunnels[0].remote", 2, "different families"),
        ("tunnels:\n  - {name: t, local: fe80::1, remote: 2001:db8::2}", "tunnels[0].local", 2, "global IPv6"),
        ("interfaces:\n  - name: a\n    attach: {tap: t0}\n    ipv6: {addresses: [2001:db8::1/64]}\ntunnels:\n  - {name: t, local: 2001:db8::9, remote: 2001:db8::2}",
         "tunnels[0].local", 6, "not an address of any interface"),
        ("tunnels:\n  - {name: t, local: 192.0.2.1, remote: 192.0.2.2, backend: host, ipv6: {router-advertisements: {}}}",
         "tunnels[0].ipv6.router-advertisements", 2, "no hosts"),
    ]

    @Test("IPv6 and tunnels: an IPv6 underlay, IPv6 inside, and IPv6 routes into a tunnel")
    func tunnels6() throws {
        let c = try reader.parse("""
        interfaces:
          - name: wan0
            attach: {tap: ag-wan0}
            addresses: [198.51.100.1/24]
            ipv6: {addresses: [2001:db8:ff01::1/64]}
        tunnels:
          - {name: gre4, local: 198.51.100.1, remote: 203.0.113.2, ipv6: {addresses: [fd00:16::1/64]}}
          - {name: gre6, local: 2001:db8:ff01::1, remote: 2001:db8:ff02::2, encapsulation: gre-in-udp, addresses: [172.16.6.1/30]}
        routes:
          - {to: 2001:db8:2::/48, interface: gre4}
          - {to: 10.2.0.0/16, via: 172.16.6.2}
        """)
        #expect(c.tunnels[0].tunnel.remote == .v4(IPv4Address(203, 0, 113, 2)) && c.tunnels[0].ipv6?.addresses.count == 1)
        #expect(c.tunnels[1].tunnel.local == .v6(IPv6Address("2001:db8:ff01::1")!) && c.tunnels[1].tunnel.underlay6)
        #expect(c.tunnels[1].tunnel.overhead == 40 + 4 + 8 && c.tunnels[1].ipv6 == nil)
        #expect(c.routes6.map(\.interface) == ["gre4"] && c.routes.count == 1)
    }

    @Test("IPv6: interface addresses and router advertisements, and routes with IPv6 prefixes beside IPv4 ones")
    func ipv6() throws {
        let c = try reader.parse("""
        interfaces:
          - name: lan0
            attach: {tap: ag-lan0}
            addresses: [10.1.0.1/24]
            ipv6: {addresses: [2001:db8:1::1/64, {address: 2001:db8:1::2/64, preference: 5}], router-advertisements: {interval: 60s, lifetime: 600, mtu: 1480}}
          - name: lan1
            attach: {tap: ag-lan1}
            ipv6: {}
        routes:
          - {to: 10.9.0.0/16, interface: lan0}
          - {to: 2001:db8:99::/48, via: fe80::2, interface: lan1, metric: 5}
        """)
        #expect(c.interfaces[0].ipv6?.addresses == [try IPv6InterfaceAddress("2001:db8:1::1/64"), try IPv6InterfaceAddress("2001:db8:1::2/64")])
        #expect(c.interfaces[0].ipv6?.preferences == [IPv6Address("2001:db8:1::2")!: 5])
        let ra = try #require(c.interfaces[0].ipv6?.routerAdvertisements)
        #expect(ra.interval == .seconds(60) && ra.lifetime == 600 && ra.mtu == 1480 && ra.prefixes.isEmpty)
        #expect(c.interfaces[1].ipv6 == IPv6InterfaceConfig() && c.interfaces[1].ipv6?.routerAdvertisements == nil)
        #expect(c.routes.count == 1)
        #expect(c.routes6 == [Route6Config(to: try IPv6Prefix("2001:db8:99::/48"), via: IPv6Address("fe80::2"), interface: "lan1", metric: 5)])
    }

    @Test("each rejection names the file, key path, line and reason", arguments: ConfigTests.rejections.indices)
    func rejection(_ k: Int) {
        let (yaml, path, line, words) = Self.rejections[k]
        do {
            let c = try reader.parse(yaml)
            Issue.record("accepted: \(yaml) -> \(c)")
        } catch {
            #expect(error.file == "test.yaml")
            #expect(error.keyPath == path, "for: \(yaml)")
            #expect(error.line == line, "for: \(yaml)")
            #expect(error.reason.contains(words), "reason was: \(error.reason)")
            #expect(error.description.hasPrefix("test.yaml"))
        }
    }

    @Test("a missing file is a config error naming it")
    func missingFile() {
        #expect(throws: ConfigError.self) { try ConfigReader.load(path: "/nonexistent/anygate.yaml") }
        do { _ = try ConfigReader.load(path: "/nonexistent/anygate.yaml") } catch {
            #expect(error.description.hasPrefix("/nonexistent/anygate.yaml: cannot read"))
        }
    }
}
