import AnygateIKE
import AnygateNetlink
import AnygateStack
import AnygateWire
import Foundation
import Yams

/// Reads and validates a `DaemonConfig` from YAML text. Every rejection
/// names the key path and line; unknown keys and keys of features this
/// build does not have are rejected rather than ignored.
public struct ConfigReader {
    public let file: String

    public init(file: String) { self.file = file }

    /// Reads the file at `file`.
    public static func load(path: String) throws(ConfigError) -> DaemonConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(file: path, keyPath: "", line: nil, reason: "cannot read: \((error as NSError).localizedDescription)")
        }
        return try ConfigReader(file: path).parse(text)
    }

    public func parse(_ text: String) throws(ConfigError) -> DaemonConfig {
        let root: Node?
        do {
            // Scalars stay text (the basic resolver): the reader parses each
            // value itself, by what its key means, so YAML 1.1's implicit
            // types (yes as true, 010 as octal, 1:20 as sexagesimal) never
            // apply, and no key lookup runs the default resolver's regular
            // expressions.
            root = try Yams.compose(yaml: text, .basic)
        } catch let e as YamlError {
            throw ConfigError(file: file, keyPath: "", line: yamlLine(e), reason: "not valid YAML: \(yamlProblem(e))")
        } catch {
            throw ConfigError(file: file, keyPath: "", line: nil, reason: "not valid YAML: \(error)")
        }
        guard let root else { throw fail("", nil, "the file is empty") }
        var c = DaemonConfig()
        let top = try mapping(root, "")
        try checkKeys(top, "", allowed: ["control", "metrics", "log", "state", "stack", "ecmp-hash", "interfaces", "routes", "tunnels", "mirror",
                                       "ipsec", "host-twins", "punt", "services"])
        if let e = top["ecmp-hash"] {
            let text = try string(e, "ecmp-hash")
            guard let v = StackConfiguration.ECMPHash(rawValue: text) else { throw fail("ecmp-hash", e, "\"\(text)\" is not one of l3, l4") }
            c.ecmpHash = v
        }
        if let n = top["control"] {
            let m = try mapping(n, "control")
            try checkKeys(m, "control", allowed: ["socket", "listen", "allow", "token-file"])
            if let s = m["socket"] {
                c.controlSocket = try string(s, "control.socket")
                guard c.controlSocket.hasPrefix("/") else { throw fail("control.socket", s, "must be an absolute path") }
            }
            if let l = m["listen"] {
                guard case .stack(let a) = try serviceAddress(l, "control.listen") else {
                    throw fail("control.listen", l, "must name a stack address (stack:ADDR:PORT); on the host, use control.socket")
                }
                c.controlListen = a
                guard let t = m["token-file"] else { throw fail("control", n, "control.listen needs token-file: a file of mode 0600 holding the token") }
                c.controlTokenFile = try string(t, "control.token-file")
                guard c.controlTokenFile!.hasPrefix("/") else { throw fail("control.token-file", t, "must be an absolute path") }
                guard let allow = m["allow"], case .sequence(let seq) = allow, !seq.isEmpty else {
                    throw fail("control", n, "control.listen needs allow: a list of the prefixes that may connect")
                }
                for (k, item) in seq.enumerated() {
                    let text = try string(item, "control.allow[\(k)]")
                    guard let p = IPPrefix(text) else { throw fail("control.allow[\(k)]", item, "\"\(text)\" is not a prefix") }
                    c.controlAllow.append(p)
                }
            } else if m["allow"] != nil || m["token-file"] != nil {
                throw fail("control", n, "allow and token-file go with listen: stack:ADDR:PORT")
            }
        }
        if let n = top["services"] {
            let m = try mapping(n, "services")
            try checkKeys(m, "services", allowed: ["bandwidth-test"])
            if let b = m["bandwidth-test"] {
                let bm = try mapping(b, "services.bandwidth-test")
                try checkKeys(bm, "services.bandwidth-test", allowed: ["listen"])
                guard let l = bm["listen"] else { throw fail("services.bandwidth-test", b, "needs listen: stack:ADDR:PORT") }
                guard case .stack(let a) = try serviceAddress(l, "services.bandwidth-test.listen") else {
                    throw fail("services.bandwidth-test.listen", l, "must name a stack address (stack:ADDR:PORT)")
                }
                c.bandwidthTestListen = a
            }
        }
        if let n = top["state"] {
            let m = try mapping(n, "state")
            try checkKeys(m, "state", allowed: ["directory"])
            if let d = m["directory"] {
                c.stateDirectory = try string(d, "state.directory")
                guard c.stateDirectory.hasPrefix("/") else { throw fail("state.directory", d, "must be an absolute path") }
            }
        }
        if let n = top["metrics"] {
            let m = try mapping(n, "metrics")
            try checkKeys(m, "metrics", allowed: ["listen"])
            guard let l = m["listen"] else { throw fail("metrics", n, "needs listen: HOST:PORT or stack:ADDR:PORT") }
            c.metricsListen = try serviceAddress(l, "metrics.listen")
        }
        if let n = top["log"] {
            let m = try mapping(n, "log")
            try checkKeys(m, "log", allowed: ["level", "format"])
            if let l = m["level"] { c.logLevel = try choice(l, "log.level") }
            if let f = m["format"] { c.logFormat = try choice(f, "log.format") }
        }
        if let n = top["stack"] {
            let m = try mapping(n, "stack")
            try checkKeys(m, "stack", allowed: ["arp", "icmp", "ipflow", "source-selection", "workers", "tcp"])
            if let t = m["tcp"] {
                let tm = try mapping(t, "stack.tcp")
                try checkKeys(tm, "stack.tcp", allowed: ["msl", "mslt", "vtw", "time-wait", "max-connections"])
                if let v = tm["msl"] {
                    let mm = try mapping(v, "stack.tcp.msl")
                    try checkKeys(mm, "stack.tcp.msl", allowed: ["loopback", "local", "remote"])
                    func msl(_ key: String) throws(ConfigError) -> Interval? {
                        guard let x = mm[key] else { return nil }
                        let d = try duration(x, "stack.tcp.msl.\(key)")
                        guard d >= .milliseconds(100) && d <= .seconds(240) else { throw fail("stack.tcp.msl.\(key)", x, "must be 100ms to 240s") }
                        return d
                    }
                    if let d = try msl("loopback") { c.tcpMSLLoopback = d }
                    if let d = try msl("local") { c.tcpMSLLocal = d }
                    if let d = try msl("remote") { c.tcpMSLRemote = d }
                }
                if let v = tm["mslt"] { c.tcpMSLT = try bool(v, "stack.tcp.mslt") }
                if let v = tm["vtw"] { c.tcpVTW = try bool(v, "stack.tcp.vtw") }
                if let v = tm["time-wait"] {
                    let wm = try mapping(v, "stack.tcp.time-wait")
                    try checkKeys(wm, "stack.tcp.time-wait", allowed: ["max"])
                    if let x = wm["max"] { c.tcpTimeWaitMax = try int(x, "stack.tcp.time-wait.max", 4...16_000_000) }
                }
                if let v = tm["max-connections"] { c.tcpMaxConnections = try int(v, "stack.tcp.max-connections", 1...1_000_000) }
            }
            if let w = m["workers"] {
                if case .scalar(let sc) = w, sc.string == "auto" { c.workers = nil } else {
                    c.workers = try int(w, "stack.workers", 1...256)
                }
            }
            if let a = m["arp"] {
                let am = try mapping(a, "stack.arp")
                try checkKeys(am, "stack.arp", allowed: ["max-entries", "pending-per-neighbor"])
                if let v = am["max-entries"] { c.arpMaxEntries = try int(v, "stack.arp.max-entries", 1...1_000_000) }
                if let v = am["pending-per-neighbor"] { c.arpPendingPerNeighbor = try int(v, "stack.arp.pending-per-neighbor", 1...255) }
            }
            if let sel = m["source-selection"] {
                let sm = try mapping(sel, "stack.source-selection")
                try checkKeys(sm, "stack.source-selection", allowed: ["default"])
                if let d = sm["default"] { c.sourcePolicy = try policy(d, "stack.source-selection.default") }
            }
            if let f = m["ipflow"] {
                let fm = try mapping(f, "stack.ipflow")
                try checkKeys(fm, "stack.ipflow", allowed: ["enabled", "max-flows", "idle-timeout"])
                if let v = fm["enabled"] { c.ipflowEnabled = try bool(v, "stack.ipflow.enabled") }
                if let v = fm["max-flows"] { c.ipflowMaxFlows = try int(v, "stack.ipflow.max-flows", 0...16_777_216) }
                if let v = fm["idle-timeout"] {
                    c.ipflowIdleTimeout = try duration(v, "stack.ipflow.idle-timeout")
                    guard c.ipflowIdleTimeout >= .seconds(1) else { throw fail("stack.ipflow.idle-timeout", v, "must be at least 1s") }
                }
            }
            if let i = m["icmp"] {
                let im = try mapping(i, "stack.icmp")
                try checkKeys(im, "stack.icmp", allowed: ["errors-per-second"])
                if let v = im["errors-per-second"] { c.icmpErrorsPerSecond = try int(v, "stack.icmp.errors-per-second", 0...1_000_000) }
            }
        }
        if let n = top["interfaces"] {
            guard case .sequence(let seq) = n else { throw fail("interfaces", n, "expected a list of interfaces") }
            for (k, item) in seq.enumerated() { c.interfaces.append(try interface(item, "interfaces[\(k)]")) }
        }
        if let n = top["mirror"] {
            let m = try mapping(n, "mirror")
            try checkKeys(m, "mirror", allowed: ["routes"])
            if let r = m["routes"] {
                let rm = try mapping(r, "mirror.routes")
                try checkKeys(rm, "mirror.routes", allowed: ["table", "protocols", "exclude"])
                var mr = MirrorRoutesConfig()
                if let t = rm["table"] {
                    let text = try string(t, "mirror.routes.table")
                    if let v = RouteTables.byName[text] { mr.table = v } else if let v = UInt32(text), v > 0 { mr.table = v } else {
                        throw fail("mirror.routes.table", t, "\"\(text)\" is not main, local, default or a table number")
                    }
                }
                if let p = rm["protocols"] {
                    guard case .sequence(let seq) = p else { throw fail("mirror.routes.protocols", p, "expected a list of protocols") }
                    var set = Set<UInt8>()
                    for (k, item) in seq.enumerated() {
                        let text = try string(item, "mirror.routes.protocols[\(k)]")
                        if let v = RouteProtocols.byName[text] { set.insert(v) } else if let v = UInt8(text) { set.insert(v) } else {
                            throw fail("mirror.routes.protocols[\(k)]", item, "\"\(text)\" is not a routing protocol name or number")
                        }
                    }
                    mr.protocols = set
                }
                if let x = rm["exclude"] {
                    guard case .sequence(let seq) = x else { throw fail("mirror.routes.exclude", x, "expected a list of prefixes") }
                    for (k, item) in seq.enumerated() {
                        let text = try string(item, "mirror.routes.exclude[\(k)]")
                        if text.contains(":") {
                            do { mr.exclude6.insert(try IPv6Prefix(text)) } catch { throw fail("mirror.routes.exclude[\(k)]", item, "\(error)") }
                        } else {
                            do { mr.exclude.insert(try IPv4Prefix(text)) } catch { throw fail("mirror.routes.exclude[\(k)]", item, error.description) }
                        }
                    }
                }
                c.mirrorRoutes = mr
            }
        }
        if let n = top["tunnels"] {
            guard case .sequence(let seq) = n else { throw fail("tunnels", n, "expected a list of tunnels") }
            for (k, item) in seq.enumerated() { c.tunnels.append(try tunnel(item, "tunnels[\(k)]")) }
        }
        if let n = top["ipsec"] {
            guard case .sequence(let seq) = n else { throw fail("ipsec", n, "expected a list of policy-based IPsec links") }
            for (k, item) in seq.enumerated() { c.tunnels.append(try ipsecLink(item, "ipsec[\(k)]")) }
        }
        if let n = top["routes"] {
            guard case .sequence(let seq) = n else { throw fail("routes", n, "expected a list of routes") }
            for (k, item) in seq.enumerated() {
                if ConfigReader.isIPv6Route(item) { c.routes6.append(try route6(item, "routes[\(k)]")) } else {
                    c.routes.append(try route(item, "routes[\(k)]"))
                }
            }
        }
        if let n = top["host-twins"] {
            guard try string(n, "host-twins") == "all" else { throw fail("host-twins", n, "the only value is all (or set host-twin: on each)") }
            let twin = { (name: String) in String(("tw-" + name).prefix(15)) }
            for k in c.interfaces.indices where c.interfaces[k].hostTwin == nil { c.interfaces[k].hostTwin = twin(c.interfaces[k].name) }
            for k in c.tunnels.indices where c.tunnels[k].hostTwin == nil { c.tunnels[k].hostTwin = twin(c.tunnels[k].name) }
        }
        if let n = top["punt"] {
            guard case .sequence(let seq) = n else { throw fail("punt", n, "expected a list: ospf, bgp, bfd, rip, pim, all-unclaimed") }
            var set: PuntSet = []
            for (k, item) in seq.enumerated() {
                let text = try string(item, "punt[\(k)]")
                guard let p = PuntSet(name: text) else {
                    throw fail("punt[\(k)]", item, "\"\(text)\" is not one of \(PuntSet.names.map(\.0).joined(separator: ", "))")
                }
                set.insert(p)
            }
            c.punt = set
        }
        try validate(c, top)
        return c
    }

    // MARK: Sections

    func interface(_ node: Node, _ path: String) throws(ConfigError) -> InterfaceConfig {
        let m = try mapping(node, path)
        try checkKeys(m, path, allowed: ["name", "attach", "mac", "mtu", "addresses", "source-selection", "rpf", "offloads", "ipv6", "host-twin"])
        guard let nameNode = m["name"] else { throw fail(path, node, "needs a name") }
        let name = try string(nameNode, path + ".name")
        guard !name.isEmpty, name.count <= 15, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw fail(path + ".name", nameNode, "must be 1 to 15 letters, digits, '-', '_' or '.'")
        }
        guard let attachNode = m["attach"] else { throw fail(path, node, "needs attach: {tap: NAME} or {packet: NAME}") }
        let am = try mapping(attachNode, path + ".attach")
        try checkKeys(am, path + ".attach", allowed: ["tap", "packet", "mirror"], laterPrefix: "interfaces[].attach")
        guard am.count == 1, let (kindNode, hostNode) = am.first, let kind = kindNode.string else {
            throw fail(path + ".attach", attachNode, "give exactly one of tap, packet or mirror")
        }
        let host = try string(hostNode, path + ".attach.\(kind)")
        guard !host.isEmpty, host.count <= 15, !host.contains("/"), !host.contains(" ") else {
            throw fail(path + ".attach.\(kind)", hostNode, "must be a Linux interface name (1 to 15 characters, no '/' or spaces)")
        }
        var i = InterfaceConfig(name: name, attach: kind == "tap" ? .tap(host) : kind == "packet" ? .packet(host) : .mirror(host))
        if let macNode = m["mac"] {
            let text = try string(macNode, path + ".mac")
            guard let mac = MACAddress(text) else { throw fail(path + ".mac", macNode, "\"\(text)\" is not a MAC address") }
            guard !mac.isMulticast, mac != .zero else { throw fail(path + ".mac", macNode, "must be a unicast, non-zero MAC address") }
            i.mac = mac
        }
        if let mtuNode = m["mtu"] { i.mtu = try int(mtuNode, path + ".mtu", 68...9000) }
        if let r = m["rpf"] { i.rpf = try rpf(r, path + ".rpf") }
        if let o = m["offloads"] { i.offloads = try bool(o, path + ".offloads") }
        if let sel = m["source-selection"] { i.sourcePolicy = try policy(sel, path + ".source-selection") }
        if let v6 = m["ipv6"] {
            if case .mirror = i.attach { throw fail(path + ".ipv6", v6, "a mirrored interface takes its addresses from the host") }
            i.ipv6 = try ipv6(v6, path + ".ipv6")
        }
        if case .mirror = i.attach, let list = m["addresses"] {
            throw fail(path + ".addresses", list, "a mirrored interface takes its addresses from the host")
        }
        if case .mirror = i.attach, let mtu = m["mtu"] {
            throw fail(path + ".mtu", mtu, "a mirrored interface takes its MTU from the host")
        }
        if case .mirror = i.attach, let macNode = m["mac"] {
            throw fail(path + ".mac", macNode, "a mirrored interface takes its MAC from the host")
        }
        if let list = m["addresses"] {
            guard case .sequence(let seq) = list else { throw fail(path + ".addresses", list, "expected a list of addresses") }
            for (k, a) in seq.enumerated() {
                let ap = "\(path).addresses[\(k)]"
                if case .mapping(let am) = a {
                    try checkKeys(am, ap, allowed: ["address", "preference"])
                    guard let addrNode = am["address"] else { throw fail(ap, a, "needs address: A.B.C.D/LEN") }
                    var ac = AddressConfig(address: try interfaceAddress(addrNode, ap + ".address"))
                    if let p = am["preference"] { ac.preference = Int16(try int(p, ap + ".preference", -32768...32767)) }
                    i.addresses.append(ac)
                } else {
                    i.addresses.append(AddressConfig(address: try interfaceAddress(a, ap)))
                }
            }
        }
        if let n = m["host-twin"] { i.hostTwin = try twinName(n, path + ".host-twin") }
        return i
    }

    /// A host interface name for a twin: 1 to 15 characters, no '/' or space.
    func twinName(_ n: Node, _ path: String) throws(ConfigError) -> String {
        let text = try string(n, path)
        guard !text.isEmpty, text.utf8.count <= 15, text.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw fail(path, n, "\"\(text)\" is not a host interface name (1 to 15 letters, digits, '-', '_' or '.')")
        }
        return text
    }

    /// `ipv6: {addresses: [2001:db8::1/64, ...]}`; `ipv6: {}` is the link-local address alone.
    func ipv6(_ node: Node, _ path: String) throws(ConfigError) -> IPv6InterfaceConfig {
        let m = try mapping(node, path)
        try checkKeys(m, path, allowed: ["addresses", "router-advertisements"])
        var c = IPv6InterfaceConfig()
        if let ra = m["router-advertisements"] { c.routerAdvertisements = try routerAdvertisements(ra, path + ".router-advertisements") }
        if let list = m["addresses"] {
            guard case .sequence(let seq) = list else { throw fail(path + ".addresses", list, "expected a list of addresses") }
            for (k, item) in seq.enumerated() {
                var ap = "\(path).addresses[\(k)]"
                var a = item
                var preference: Int16 = 0
                // ADDR/LEN, or {address: ADDR/LEN, preference: N} as for IPv4.
                if case .mapping(let am) = item {
                    try checkKeys(am, ap, allowed: ["address", "preference"])
                    guard let addrNode = am["address"] else { throw fail(ap, item, "needs address: ADDR/LEN") }
                    if let p = am["preference"] { preference = Int16(try int(p, ap + ".preference", -32768...32767)) }
                    a = addrNode
                    ap += ".address"
                }
                let text = try string(a, ap)
                let parsed: IPv6InterfaceAddress
                do { parsed = try IPv6InterfaceAddress(text) } catch { throw fail(ap, a, "\(error)") }
                if preference != 0 { c.preferences[parsed.address] = preference }
                guard !parsed.address.isMulticast, !parsed.address.isUnspecified, !parsed.address.isLoopback else {
                    throw fail(ap, a, "\(parsed.address) cannot be an interface address")
                }
                guard !c.addresses.contains(where: { $0.address == parsed.address }) else {
                    throw fail(ap, a, "address \(parsed.address) is configured twice")
                }
                c.addresses.append(parsed)
            }
        }
        return c
    }

    /// `router-advertisements: {prefixes: [P/64, ...], interval: 200s, lifetime: 1800, mtu: 1500}`, each optional.
    func routerAdvertisements(_ node: Node, _ path: String) throws(ConfigError) -> RouterAdvertisements {
        let m = try mapping(node, path)
        try checkKeys(m, path, allowed: ["prefixes", "interval", "lifetime", "mtu"])
        var r = RouterAdvertisements()
        if let list = m["prefixes"] {
            guard case .sequence(let seq) = list else { throw fail(path + ".prefixes", list, "expected a list of prefixes") }
            for (k, n) in seq.enumerated() {
                let text = try string(n, "\(path).prefixes[\(k)]")
                do { r.prefixes.append(try IPv6Prefix(text)) } catch { throw fail("\(path).prefixes[\(k)]", n, "\(error)") }
            }
        }
        if let n = m["interval"] {
            r.interval = try duration(n, path + ".interval")
            guard r.interval.nanoseconds >= 4_000_000_000, r.interval.nanoseconds <= 1_800_000_000_000 else {
                throw fail(path + ".interval", n, "must be 4s to 1800s (RFC 4861 MaxRtrAdvInterval)")
            }
        }
        if let n = m["lifetime"] { r.lifetime = UInt16(try int(n, path + ".lifetime", 0...9000)) }
        if let n = m["mtu"] { r.mtu = UInt32(try int(n, path + ".mtu", 1280...65535)) }
        return r
    }

    func tunnel(_ node: Node, _ path: String) throws(ConfigError) -> TunnelConfig {
        let m = try mapping(node, path)
        try checkKeys(m, path, allowed: ["name", "encapsulation", "backend", "local", "remote", "key", "sequence", "ttl", "tos",
                                         "mtu", "mss-clamp", "keepalive", "addresses", "rpf", "pmtu-discovery", "ipv6", "protection",
                                         "host-twin"])
        guard let nameNode = m["name"] else { throw fail(path, node, "needs a name") }
        let name = try string(nameNode, path + ".name")
        guard !name.isEmpty, name.count <= 15, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw fail(path + ".name", nameNode, "must be 1 to 15 letters, digits, '-', '_' or '.'")
        }
        // The underlay: IPv4 addresses, or IPv6 ones (GRE over IPv6, RFC 7676).
        func address(_ key: String) throws(ConfigError) -> IPAddress {
            guard let n = m[key] else { throw fail(path, node, "needs \(key): ADDRESS") }
            let t = try string(n, path + "." + key)
            if let a = IPv4Address(t), !a.isUnspecified, !a.isMulticast, !a.isLimitedBroadcast { return .v4(a) }
            if let a = IPv6Address(t), !a.isUnspecified, !a.isMulticast, !a.isLoopback, !a.isLinkLocal { return .v6(a) }
            throw fail(path + "." + key, n, "\"\(t)\" is not a unicast IPv4 or global IPv6 address")
        }
        var t = TunnelConfiguration(name: name, local: try address("local"), remote: try address("remote"))
        guard t.local.isIPv6 == t.remote.isIPv6 else {
            throw fail(path + ".remote", m["remote"], "\(t.remote) and local \(t.local) are of different families")
        }
        if let e = m["encapsulation"] {
            let text = try string(e, path + ".encapsulation")
            guard let v = TunnelEncapsulation(rawValue: text), v != .ipsec else {
                throw fail(path + ".encapsulation", e, "\"\(text)\" is not one of gre, gre-in-udp (policy-based IPsec links go under ipsec:)")
            }
            t.encapsulation = v
        }
        if let b = m["backend"] {
            let text = try string(b, path + ".backend")
            guard let v = SocketBackend(rawValue: text) else { throw fail(path + ".backend", b, "\"\(text)\" is not one of stack, host") }
            t.backend = v
        }
        if let k = m["key"] { t.key = UInt32(try int(k, path + ".key", 0...Int(UInt32.max))) }
        if let sq = m["sequence"] { t.sequence = try bool(sq, path + ".sequence") }
        if let r = m["rpf"] { t.rpf = try rpf(r, path + ".rpf") }
        if let d = m["pmtu-discovery"] { t.pmtuDiscovery = try bool(d, path + ".pmtu-discovery") }
        if let n = m["ttl"] { t.ttl = try inheritOr(n, path + ".ttl", 1...255).map { UInt8($0) } }
        if let n = m["tos"] { t.tos = try inheritOr(n, path + ".tos", 0...255).map { UInt8($0) } }
        if let n = m["mtu"] { t.mtu = try int(n, path + ".mtu", 68...9000) }
        if let n = m["mss-clamp"] {
            let text = try string(n, path + ".mss-clamp")
            switch text {
            case "off": t.mssClamp = .off
            case "auto": t.mssClamp = .auto
            default:
                guard let v = Int(text), (536...65535).contains(v) else {
                    throw fail(path + ".mss-clamp", n, "expected off, auto or a number 536...65535")
                }
                t.mssClamp = .fixed(UInt16(v))
            }
        }
        if let n = m["keepalive"] {
            let km = try mapping(n, path + ".keepalive")
            try checkKeys(km, path + ".keepalive", allowed: ["interval", "retries"])
            var ka = TunnelKeepalive(interval: .seconds(10), retries: 3)
            if let i = km["interval"] {
                ka.interval = try duration(i, path + ".keepalive.interval")
                guard ka.interval >= .seconds(1) else { throw fail(path + ".keepalive.interval", i, "must be at least 1s") }
            }
            if let r = km["retries"] { ka.retries = try int(r, path + ".keepalive.retries", 1...255) }
            t.keepalive = ka
        }
        var tc = TunnelConfig(tunnel: t)
        if let n = m["protection"] {
            // GRE over IPsec: ESP in transport mode around the GRE packets.
            guard t.encapsulation == .gre else {
                throw fail(path + ".protection", n, "protection carries GRE inside ESP: it needs encapsulation: gre (ESP itself goes in UDP for NATs)")
            }
            let pm = try mapping(n, path + ".protection")
            try checkKeys(pm, path + ".protection", allowed: ConfigReader.ikeKeys)
            let (ike, esp, auto) = try ikePeer(pm, node: n, path + ".protection")
            tc.tunnel.protection = TunnelProtection(encapsulation: esp, auto: auto)
            tc.ike = ike
        }
        if let v6 = m["ipv6"] {
            let c = try ipv6(v6, path + ".ipv6")
            if c.routerAdvertisements != nil {
                throw fail(path + ".ipv6.router-advertisements", v6, "a tunnel has no hosts to advertise to")
            }
            tc.ipv6 = c
        }
        if let list = m["addresses"] {
            guard case .sequence(let seq) = list else { throw fail(path + ".addresses", list, "expected a list of addresses") }
            for (k, a) in seq.enumerated() {
                tc.addresses.append(AddressConfig(address: try interfaceAddress(a, "\(path).addresses[\(k)]")))
            }
        }
        if let n = m["host-twin"] { tc.hostTwin = try twinName(n, path + ".host-twin") }
        return tc
    }

    static let ikeKeys: Set<String> = ["local-id", "remote-id", "psk-file", "ike-proposals", "esp-proposals", "encapsulation", "start", "dpd",
                                        "rekey", "ike-rekey", "lifetime-bytes"]

    /// The IKE settings shared by `tunnels[].protection` and `ipsec[]`, and
    /// how ESP travels (`encapsulation: udp` — RFC 3948, the default — or `esp`).
    func ikePeer(_ m: Node.Mapping, node: Node, _ path: String) throws(ConfigError) -> (IKEPeerConfig, ESPEncapsulation, Bool) {
        func text(_ key: String) throws(ConfigError) -> String {
            guard let n = m[key] else { throw fail(path, node, "needs \(key)") }
            let s = try string(n, path + "." + key)
            guard !s.isEmpty else { throw fail(path + "." + key, n, "must not be empty") }
            return s
        }
        let pskFile = try text("psk-file")
        let pskNode = m["psk-file"]
        guard pskFile.hasPrefix("/") else { throw fail(path + ".psk-file", pskNode, "must be an absolute path") }
        var st = stat()
        guard stat(pskFile, &st) == 0 else { throw fail(path + ".psk-file", pskNode, "cannot read \(pskFile): \(String(cString: strerror(errno)))") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw fail(path + ".psk-file", pskNode, "\(pskFile) is not a regular file") }
        guard st.st_mode & 0o077 == 0 else {
            throw fail(path + ".psk-file", pskNode,
                       "\(pskFile) is readable by its group or by others (mode \(String(st.st_mode & 0o777, radix: 8))): chmod 600 it")
        }
        var ike = IKEPeerConfig(localID: try text("local-id"), remoteID: try text("remote-id"), pskFile: pskFile)
        /// A non-empty list of proposals, each read by `parse`.
        func proposals<T>(_ key: String, _ parse: (String) throws(IKEConfigError) -> T) throws(ConfigError) -> [T]? {
            guard let n = m[key] else { return nil }
            guard case .sequence(let seq) = n, !seq.isEmpty else { throw fail(path + "." + key, n, "expected a list of proposals") }
            var out: [T] = []
            for (k, item) in seq.enumerated() {
                let p = "\(path).\(key)[\(k)]"
                let text = try string(item, p)
                do throws(IKEConfigError) { out.append(try parse(text)) } catch { throw fail(p, item, error.description) }
            }
            return out
        }
        if let v = try proposals("ike-proposals", { (s: String) throws(IKEConfigError) in try IKESuite(parsing: s) }) { ike.ikeProposals = v }
        if let v = try proposals("esp-proposals", { (s: String) throws(IKEConfigError) in try ESPSuite(parsing: s) }) { ike.espProposals = v }
        if let n = m["start"] {
            let s = try string(n, path + ".start")
            guard let v = IKEPeerConfig.Start(rawValue: s) else { throw fail(path + ".start", n, "\"\(s)\" is not one of initiate, respond") }
            ike.start = v
        }
        if let n = m["dpd"] {
            let s = try string(n, path + ".dpd")
            if s == "off" { ike.dpd = nil } else { ike.dpd = Int(try duration(n, path + ".dpd").nanoseconds / 1_000_000_000) }
        }
        if let n = m["rekey"] {
            let d = try duration(n, path + ".rekey")
            guard d >= .seconds(2) else { throw fail(path + ".rekey", n, "must be at least 2s") }
            ike.rekey = Int(d.nanoseconds / 1_000_000_000)
        }
        if let n = m["lifetime-bytes"] {
            ike.lifetimeBytes = UInt64(try int(n, path + ".lifetime-bytes", 1_000_000...Int.max))
        }
        if let n = m["ike-rekey"] {
            let d = try duration(n, path + ".ike-rekey")
            guard d >= .seconds(2) else { throw fail(path + ".ike-rekey", n, "must be at least 2s") }
            ike.ikeRekey = Int(d.nanoseconds / 1_000_000_000)
        }
        var esp = ESPEncapsulation.natTraversal, auto = false
        if let n = m["encapsulation"] {
            switch try string(n, path + ".encapsulation") {
            case "udp": esp = .natTraversal
            case "esp": esp = .esp
            case "auto": esp = .natTraversal; auto = true
            case let s: throw fail(path + ".encapsulation", n, "\"\(s)\" is not one of udp, esp, auto")
            }
        }
        return (ike, esp, auto)
    }

    /// A policy-based IPsec link: ESP tunnel mode between subnets, on an
    /// interface named after it that routes to the remote subnets while the
    /// SA is up.
    func ipsecLink(_ node: Node, _ path: String) throws(ConfigError) -> TunnelConfig {
        let m = try mapping(node, path)
        try checkKeys(m, path, allowed: ConfigReader.ikeKeys.union(["name", "local", "remote", "local-subnets", "remote-subnets", "backend",
                                                                     "mss-clamp", "addresses"]))
        // The name, the underlay addresses, the backend and MSS clamping read as a tunnel's do.
        var tm = Node.Mapping([])
        for (k, v) in m where ["name", "local", "remote", "backend", "mss-clamp", "addresses"].contains(k.string ?? "") { tm[k] = v }
        var tc = try tunnel(.mapping(tm), path)
        tc.tunnel.encapsulation = .ipsec
        let (ike, esp, auto) = try ikePeer(m, node: node, path)
        func subnets(_ key: String) throws(ConfigError) -> [IPPrefix] {
            guard let n = m[key], case .sequence(let seq) = n, !seq.isEmpty else { throw fail(path, node, "needs \(key): a list of prefixes") }
            guard seq.count <= 8 else { throw fail(path + "." + key, n, "at most 8 subnets") }
            var out: [IPPrefix] = []
            for (k, item) in seq.enumerated() {
                let s = try string(item, "\(path).\(key)[\(k)]")
                guard let p = IPPrefix(s) else { throw fail("\(path).\(key)[\(k)]", item, "\"\(s)\" is not an IPv4 or IPv6 prefix") }
                out.append(p)
            }
            return out
        }
        tc.tunnel.protection = TunnelProtection(encapsulation: esp, localSubnets: try subnets("local-subnets"),
                                                remoteSubnets: try subnets("remote-subnets"), auto: auto)
        tc.ike = ike
        return tc
    }

    func rpf(_ node: Node, _ path: String) throws(ConfigError) -> ReversePathFilter {
        let text = try string(node, path)
        guard let v = ReversePathFilter(rawValue: text) else { throw fail(path, node, "\"\(text)\" is not one of strict, loose, off") }
        return v
    }

    /// "inherit" (nil) or a number in `range`.
    func inheritOr(_ node: Node, _ path: String, _ range: ClosedRange<Int>) throws(ConfigError) -> Int? {
        if case .scalar(let s) = node, s.string == "inherit" { return nil }
        return try int(node, path, range)
    }

    func route(_ node: Node, _ path: String) throws(ConfigError) -> RouteConfig {
        let m = try mapping(node, path)
        try checkKeys(m, path, allowed: ["to", "via", "interface", "metric", "weight"])
        guard let toNode = m["to"] else { throw fail(path, node, "needs to: PREFIX") }
        let toText = try string(toNode, path + ".to")
        let to: IPv4Prefix
        do { to = try IPv4Prefix(toText) } catch { throw fail(path + ".to", toNode, error.description) }
        var r = RouteConfig(to: to)
        if let v = m["via"] {
            let t = try string(v, path + ".via")
            guard let a = IPv4Address(t) else { throw fail(path + ".via", v, "\"\(t)\" is not an IPv4 address") }
            r.via = a
        }
        if let i = m["interface"] { r.interface = try string(i, path + ".interface") }
        if let mt = m["metric"] { r.metric = UInt32(try int(mt, path + ".metric", 0...Int(UInt32.max))) }
        if let w = m["weight"] { r.weight = UInt8(try int(w, path + ".weight", 1...Int(Route.maxWeight))) }
        if r.via == nil && r.interface == nil { throw fail(path, node, "needs via: NEXT-HOP or interface: NAME") }
        return r
    }

    /// A route item whose `to` is an IPv6 prefix.
    static func isIPv6Route(_ node: Node) -> Bool {
        guard case .mapping(let m) = node, let to = m["to"]?.string else { return false }
        return to.contains(":")
    }

    func route6(_ node: Node, _ path: String) throws(ConfigError) -> Route6Config {
        let m = try mapping(node, path)
        try checkKeys(m, path, allowed: ["to", "via", "interface", "metric", "weight"])
        let toNode = m["to"]!
        let toText = try string(toNode, path + ".to")
        let to: IPv6Prefix
        do { to = try IPv6Prefix(toText) } catch { throw fail(path + ".to", toNode, error.description) }
        guard let i = m["interface"] else { throw fail(path, node, "an IPv6 route needs interface: NAME") }
        var r = Route6Config(to: to, interface: try string(i, path + ".interface"))
        if let v = m["via"] {
            let t = try string(v, path + ".via")
            guard let a = IPv6Address(t), !a.isMulticast, !a.isUnspecified else {
                throw fail(path + ".via", v, "\"\(t)\" is not a unicast IPv6 address")
            }
            r.via = a
        }
        if let mt = m["metric"] { r.metric = UInt32(try int(mt, path + ".metric", 0...Int(UInt32.max))) }
        if let w = m["weight"] { r.weight = UInt8(try int(w, path + ".weight", 1...Int(Route.maxWeight))) }
        return r
    }

    /// Checks that need the whole file: unique names, interfaces that routes
    /// name, next hops on a connected subnet, addresses used once.
    func validate(_ c: DaemonConfig, _ top: Node.Mapping) throws(ConfigError) {
        // Twins are host interfaces of their own: each name once, none the name of an attached one.
        var twinNames: Set<String> = Set(c.interfaces.map(\.attach.hostName))
        for t in c.twins where !twinNames.insert(t.twinName).inserted {
            throw fail("host-twin", nil, "host twin \(t.twinName) (of \(t.stackName)) names a host interface already in use")
        }
        if c.workers != 1 {
            // What several workers cannot share yet: one sequence per
            // tunnel, and the host's own interfaces mirrored into the stack.
            for (k, t) in c.tunnels.enumerated() where t.tunnel.sequence {
                throw fail("tunnels[\(k)].sequence", nil, "sequence: true needs stack.workers: 1 (one sequence needs one sender; not yet with several workers)")
            }
            for (k, i) in c.interfaces.enumerated() {
                if case .mirror = i.attach {
                    throw fail("interfaces[\(k)].attach", nil, "attach: mirror needs stack.workers: 1 (not shared by several workers yet)")
                }
            }
            if c.mirrorRoutes != nil { throw fail("mirror", nil, "mirror: needs stack.workers: 1 (not shared by several workers yet)") }
            if let t = c.twins.first {
                throw fail("stack.workers", top["stack"], "host twins (\(t.twinName)) need stack.workers: 1 (not shared by several workers yet)")
            }
            // The stack's own TCP lives in one replica: the one that carries the traffic.
            if c.controlListen != nil || c.bandwidthTestListen != nil || { if case .stack = c.metricsListen { return true }; return false }() {
                throw fail("stack.workers", top["stack"], "services on stack addresses (stack:ADDR:PORT) need stack.workers: 1 (not shared by several workers yet)")
            }
        }
        let items = top["interfaces"].flatMap { n -> [Node]? in if case .sequence(let s) = n { return Array(s) }; return nil } ?? []
        var names: Set<String> = [], hosts: Set<String> = [], addresses: Set<IPv4Address> = []
        for (k, i) in c.interfaces.enumerated() {
            let node = k < items.count ? items[k] : nil
            guard names.insert(i.name).inserted else { throw fail("interfaces[\(k)].name", node, "duplicate interface name \(i.name)") }
            guard hosts.insert(i.attach.hostName).inserted else {
                throw fail("interfaces[\(k)].attach", node, "host interface \(i.attach.hostName) is attached twice")
            }
            for (j, a) in i.addresses.enumerated() {
                guard addresses.insert(a.address.address).inserted else {
                    throw fail("interfaces[\(k)].addresses[\(j)]", node, "address \(a.address.address) is configured twice")
                }
            }
        }
        let tunnelItems = top["tunnels"].flatMap { n -> [Node]? in if case .sequence(let s) = n { return Array(s) }; return nil } ?? []
        for (k, t) in c.tunnels.enumerated() {
            let node = k < tunnelItems.count ? tunnelItems[k] : nil
            guard names.insert(t.name).inserted else { throw fail("tunnels[\(k)].name", node, "duplicate interface name \(t.name)") }
            for (j, a) in t.addresses.enumerated() {
                guard addresses.insert(a.address.address).inserted else {
                    throw fail("tunnels[\(k)].addresses[\(j)]", node, "address \(a.address.address) is configured twice")
                }
            }
            // A mirrored interface's addresses come from the host at run time,
            // so with one in the config the local address cannot be checked here.
            let mirrors = c.interfaces.contains { if case .mirror = $0.attach { return true } else { return false } }
            let localIsOurs: Bool
            switch t.tunnel.local {
            case .v4(let a): localIsOurs = c.interfaces.contains { $0.addresses.contains { $0.address.address == a } }
            case .v6(let a): localIsOurs = c.interfaces.contains { $0.ipv6?.addresses.contains { $0.address == a } ?? false }
            }
            if t.tunnel.backend == .stack, !mirrors, !localIsOurs {
                throw fail("tunnels[\(k)].local", node,
                           "\(t.tunnel.local) is not an address of any interface (a stack-backed tunnel sends from the stack's own address; use backend: host for the host's)")
            }
        }
        let allRouteItems = top["routes"].flatMap { n -> [Node]? in if case .sequence(let s) = n { return Array(s) }; return nil } ?? []
        let routeItems = allRouteItems.filter { !ConfigReader.isIPv6Route($0) }
        let route6Items = allRouteItems.filter { ConfigReader.isIPv6Route($0) }
        var seen6: Set<Route6Config> = []
        for (k, r) in c.routes6.enumerated() {
            let node = k < route6Items.count ? route6Items[k] : nil
            let at = allRouteItems.firstIndex { $0 == node } ?? k
            let v6 = c.interfaces.first { $0.name == r.interface }.map { $0.ipv6 != nil }
                ?? c.tunnels.first { $0.name == r.interface }.map { $0.ipv6 != nil }
            guard let v6 else { throw fail("routes[\(at)].interface", node, "no interface named \(r.interface)") }
            guard v6 else { throw fail("routes[\(at)].interface", node, "interface \(r.interface) has no ipv6") }
            guard seen6.insert(r).inserted else { throw fail("routes[\(at)]", node, "duplicate route \(r)") }
        }
        var seen: Set<RouteConfig> = []
        for (k, r) in c.routes.enumerated() {
            let node = k < routeItems.count ? routeItems[k] : nil
            let path = "routes[\(k)]"
            if let n = r.interface, !names.contains(n) { throw fail(path + ".interface", node, "no interface named \(n)") }
            if let via = r.via {
                let candidates = c.interfaces.filter { r.interface == nil || $0.name == r.interface }.map(\.addresses)
                    + c.tunnels.filter { r.interface == nil || $0.name == r.interface }.map(\.addresses)
                let onLink = candidates.contains { list in
                    list.contains { $0.address.subnet.contains(via) && $0.address.address != via }
                }
                guard onLink else {
                    let scope = r.interface.map { "interface \($0)" } ?? "any interface"
                    throw fail(path + ".via", node, "next hop \(via) is not on a connected subnet of \(scope)")
                }
            }
            guard seen.insert(r).inserted else { throw fail(path, node, "duplicate route \(r)") }
        }
    }

    // MARK: Typed access with errors that say where

    func fail(_ path: String, _ node: Node?, _ reason: String) -> ConfigError {
        ConfigError(file: file, keyPath: path, line: node?.mark?.line, reason: reason)
    }

    func mapping(_ node: Node, _ path: String) throws(ConfigError) -> Node.Mapping {
        guard case .mapping(let m) = node else { throw fail(path, node, "expected a mapping of keys") }
        return m
    }

    func checkKeys(_ m: Node.Mapping, _ path: String, allowed: Set<String>, laterPrefix: String? = nil) throws(ConfigError) {
        for (k, _) in m {
            guard let key = k.string else { throw fail(path, k, "keys must be strings") }
            let full = path.isEmpty ? key : "\(path).\(key)"
            guard allowed.contains(key) else {
                throw fail(full, k, "unknown key (expected one of: \(allowed.sorted().joined(separator: ", ")))")
            }
        }
    }

    func string(_ node: Node, _ path: String) throws(ConfigError) -> String {
        guard case .scalar(let s) = node else { throw fail(path, node, "expected a string") }
        return s.string
    }

    func int(_ node: Node, _ path: String, _ range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard case .scalar(let s) = node, let v = Int(s.string) else {
            throw fail(path, node, "expected a whole number, got \(describe(node))")
        }
        guard range.contains(v) else { throw fail(path, node, "\(v) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    /// A list of scorer names: at most eight, each one known; an empty list means no policy.
    func policy(_ node: Node, _ path: String) throws(ConfigError) -> SourcePolicy? {
        guard case .sequence(let seq) = node else {
            throw fail(path, node, "expected a list of scorers (\(SourceScorer.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        var scorers: [SourceScorer] = []
        for (k, item) in seq.enumerated() {
            let name = try string(item, "\(path)[\(k)]")
            guard let s = SourceScorer(rawValue: name) else {
                throw fail("\(path)[\(k)]", item, SourcePolicyError.unknownScorer(name).description)
            }
            scorers.append(s)
        }
        do {
            let p = try SourcePolicy(scorers)
            return p.isEmpty ? nil : p
        } catch {
            throw fail(path, node, error.description)
        }
    }

    func bool(_ node: Node, _ path: String) throws(ConfigError) -> Bool {
        guard case .scalar(let s) = node else { throw fail(path, node, "expected true or false") }
        switch s.string {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw fail(path, node, "expected true or false, got \(describe(node))")
        }
    }

    /// Durations are a whole number with a unit: ms, s, m or h ("500ms", "30s", "5m").
    func duration(_ node: Node, _ path: String) throws(ConfigError) -> Interval {
        let text = try string(node, path)
        let units: [(String, Int64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)]
        for (unit, scale) in units where text.hasSuffix(unit) {
            let number = text.dropLast(unit.count)
            if let n = Int64(number), n >= 0, n <= 1_000_000 { return Interval(nanoseconds: n * scale) }
        }
        throw fail(path, node, "\"\(text)\" is not a duration (a whole number with ms, s, m or h, as 30s)")
    }

    func choice<T: RawRepresentable & CaseIterable>(_ node: Node, _ path: String) throws(ConfigError) -> T where T.RawValue == String {
        let s = try string(node, path)
        guard let v = T(rawValue: s) else {
            throw fail(path, node, "\"\(s)\" is not one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return v
    }

    func interfaceAddress(_ node: Node, _ path: String) throws(ConfigError) -> IPv4InterfaceAddress {
        let text = try string(node, path)
        do { return try IPv4InterfaceAddress(text) } catch { throw fail(path, node, error.description) }
    }

    /// HOST:PORT for a host socket, stack:ADDR:PORT for the stack's own TCP.
    func serviceAddress(_ node: Node, _ path: String) throws(ConfigError) -> ServiceAddress {
        let text = try string(node, path)
        guard text.hasPrefix("stack:") else { return .host(try socketAddress(node, path)) }
        guard let a = StackAddress(parsing: text.dropFirst(6)) else {
            throw fail(path, node, "\"\(text)\" is not stack:IPV4:PORT or stack:[IPV6]:PORT")
        }
        return .stack(a)
    }

    func socketAddress(_ node: Node, _ path: String) throws(ConfigError) -> SocketAddress {
        let text = try string(node, path)
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let host = IPv4Address(parts[0]), let port = UInt16(parts[1]), port > 0 else {
            throw fail(path, node, "\"\(text)\" is not IPV4:PORT")
        }
        return SocketAddress(host: host, port: port)
    }

    func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s): "\"\(s.string)\""
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    func yamlLine(_ e: YamlError) -> Int? {
        switch e {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): mark.line
        default: nil
        }
    }

    func yamlProblem(_ e: YamlError) -> String {
        switch e {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _): problem
        default: "\(e)"
        }
    }
}
