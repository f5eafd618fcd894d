import AnygateHost
import AnygateNetlink
import AnygateStack
import AnygateWire
import Logging

/// A host twin the daemon made and keeps: a TUN (for a tunnel) or a TAP
/// (for an Ethernet interface) with the stack interface's MAC, MTU, state
/// and addresses.
final class HostTwin {
    let name: String
    let stackName: String
    let interface: InterfaceIndex
    let layer3: Bool
    /// Times it was made again after being deleted from outside.
    var remade = 0
    /// Changes made to it by hand, reported (and not taken).
    var changesByHand = 0
    /// What was last reported of its link, so a change is said once.
    var reportedLink: String?
    /// Its link was seen as configured once: from then on a difference is a change by hand
    /// (before, it is the daemon's own configuring under way).
    var settled = false
    /// Changes by hand seen and not yet reported: held a moment, since
    /// deleting a link first takes its addresses and sets it down.
    var pending: [String] = []
    /// Whether the host sees its carrier: the interface is up (and a
    /// tunnel's line, as its keepalives judge it).
    var carrier = true
    /// The addresses the daemon gave it.
    var given: Set<[UInt8]> = []
    init(name: String, stackName: String, interface: InterfaceIndex, layer3: Bool) {
        self.name = name; self.stackName = stackName; self.interface = interface; self.layer3 = layer3
    }
}

extension Daemon {
    /// Makes every twin the config names that does not exist yet, and
    /// removes those it no longer names.
    func syncTwins() throws(DaemonError) {
        let wanted = config.twins
        for name in Array(twins.keys) where !wanted.contains(where: { $0.twinName == name }) { removeTwin(name) }
        for w in wanted where twins[w.twinName] == nil {
            guard let i = interfaceIndex[w.stackName] ?? stack.interface(named: w.stackName) else { continue }
            let t = HostTwin(name: w.twinName, stackName: w.stackName, interface: i, layer3: w.layer3)
            try makeTwin(t)
            twins[t.name] = t
            logger.info("host twin up", metadata: ["twin": "\(t.name)", "of": "\(t.stackName)", "kind": "\(t.layer3 ? "tun" : "tap")",
                                                   "punt": "\(PuntSet.names.filter { config.punt.contains($0.1) }.map(\.0))"])
        }
        mirror?.twins = Dictionary(uniqueKeysWithValues: twins.values.map { ($0.name, $0.interface) })
        for t in twins.values { configureTwin(t) }
        if !twins.isEmpty && !twinWatch {
            twinWatch = true
            watchTwinCarriers()
        }
    }

    /// Every 200 ms: each twin's carrier follows its interface's state and
    /// a tunnel's line, so a routing daemon on the host sees a link go
    /// down as soon as the stack does (keepalives, a vanished port).
    func watchTwinCarriers() {
        guard !twins.isEmpty else {
            twinWatch = false
            return
        }
        let lines = Dictionary(stack.tunnelList.map { ($0.interface, $0.up) }, uniquingKeysWith: { a, _ in a })
        for t in twins.values {
            let up = stack.status(t.interface).up && (lines[t.interface] ?? true)
            guard up != t.carrier, let device = runtime.twin(t.interface) else { continue }
            do {
                try device.setCarrier(up)
                t.carrier = up
                logger.notice("host twin \(t.name): carrier \(up ? "on" : "off") (\(t.stackName) \(up ? "up" : "down"))")
            } catch {
                logger.warning("host twin \(t.name): cannot set its carrier: \(error)")
            }
        }
        loop.after(nanoseconds: 200_000_000) { [weak self] in self?.watchTwinCarriers() }
    }

    /// Creates the twin's device and pairs it with its interface.
    func makeTwin(_ t: HostTwin) throws(DaemonError) {
        let device: TwinDevice
        do { device = try TwinDevice(name: t.name, layer3: t.layer3) } catch {
            throw DaemonError("host twin \(t.name) of \(t.stackName): \(error)")
        }
        do { try runtime.attachTwin(device, to: t.interface) } catch {
            throw DaemonError("host twin \(t.name) of \(t.stackName): \(error)")
        }
        let settings = TwinSettings(punt: config.punt)
        do { try stack.setTwin(t.interface, settings) } catch {
            runtime.detachTwin(t.interface)
            throw DaemonError("host twin \(t.name) of \(t.stackName): \(error)")
        }
        t.given = []
        t.carrier = true
        t.settled = false
        t.reportedLink = nil
        configureTwin(t)
    }

    /// What the twin's link and addresses should be: the stack interface's.
    func twinAddresses(_ t: HostTwin) -> [(bytes: [UInt8], prefix: Int)] {
        stack.status(t.interface).addresses.map { ($0.address.address.networkBytes, $0.address.prefixLength) }
            + stack.addresses6(on: t.interface).map { ($0.address.networkBytes, $0.prefixLength) }
    }

    /// Gives the twin the interface's MAC (a TAP), MTU and addresses, through netlink.
    func configureTwin(_ t: HostTwin) {
        do {
            let nl = try LinkConfigurator()
            let status = stack.status(t.interface)
            try nl.configure(t.name, mac: t.layer3 ? nil : status.mac, mtu: status.mtu)
            let index = try nl.index(of: t.name)
            let want = twinAddresses(t)
            for a in want where !t.given.contains(a.bytes) {
                try nl.addAddress(a.bytes, prefixLength: a.prefix, to: index)
                t.given.insert(a.bytes)
            }
            for gone in t.given where !want.contains(where: { $0.bytes == gone }) {
                try? nl.removeAddress(gone, prefixLength: gone.count == 4 ? 32 : 128, from: index)
                t.given.remove(gone)
            }
        } catch {
            logger.warning("host twin \(t.name): cannot configure it: \(error)")
        }
    }

    func removeTwin(_ name: String) {
        guard let t = twins.removeValue(forKey: name) else { return }
        runtime.detachTwin(t.interface)
        try? stack.setTwin(t.interface, nil)
        mirror?.twins[name] = nil
        logger.info("host twin removed", metadata: ["twin": "\(name)"])
    }

    /// A netlink event about a twin: deleted (made again), or changed by
    /// hand (reported once per change, not taken and not undone).
    func twinEvent(_ name: String, _ e: NetlinkEvent) {
        guard let t = twins[name] else { return }
        switch e {
        case .linkRemoved:
            t.pending = []
            logger.warning("host twin \(name) was deleted; making it again")
            runtime.detachTwin(t.interface)
            loop.after(nanoseconds: 200_000_000) { [weak self] in
                guard let self, let t = twins[name] else { return }
                do {
                    try makeTwin(t)
                    t.remade += 1
                    logger.notice("host twin \(name) made again")
                } catch {
                    logger.error("\(error)")
                }
            }
        case .linkChanged(let l):
            let status = stack.status(t.interface)
            var drift: [String] = []
            if l.mtu != status.mtu { drift.append("mtu \(l.mtu) (the stack's \(status.mtu))") }
            if !t.layer3, let mac = l.mac, mac != status.mac { drift.append("mac \(mac) (the stack's \(status.mac))") }
            if !l.adminUp { drift.append("set down") }
            let line = drift.joined(separator: ", ")
            if drift.isEmpty { t.settled = true }
            if t.settled, !drift.isEmpty, line != t.reportedLink {
                report(t, "changed by hand: \(line); not taken by \(t.stackName)")
            }
            t.reportedLink = drift.isEmpty ? nil : line
        case .addressAdded(_, let a):
            addressAdded(t, "\(a)", a.address.networkBytes)
        case .address6Added(_, let a):
            // The kernel gives a link its own link-local address: not a change by hand.
            if !a.address.isLinkLocal { addressAdded(t, "\(a)", a.address.networkBytes) }
        case .addressRemoved(_, let a):
            addressRemoved(t, "\(a)", a.address.networkBytes)
        case .address6Removed(_, let a):
            addressRemoved(t, "\(a)", a.address.networkBytes)
        default:
            break
        }
    }

    /// An address appeared on the twin: reported unless the stack interface has it.
    func addressAdded(_ t: HostTwin, _ text: String, _ bytes: [UInt8]) {
        if !twinAddresses(t).contains(where: { $0.bytes == bytes }) {
            report(t, "address \(text) added by hand; not taken by \(t.stackName)")
        }
    }

    /// An address the daemon gave the twin went: reported (not given again).
    func addressRemoved(_ t: HostTwin, _ text: String, _ bytes: [UInt8]) {
        guard t.given.remove(bytes) != nil else { return }
        report(t, "address \(text) removed by hand; \(t.stackName) keeps it")
    }

    /// Reports a change by hand a moment later, unless the twin was deleted meanwhile.
    func report(_ t: HostTwin, _ what: String) {
        t.pending.append(what)
        guard t.pending.count == 1 else { return }
        loop.after(nanoseconds: 200_000_000) { [weak self, weak t] in
            guard let self, let t else { return }
            for line in t.pending {
                t.changesByHand += 1
                logger.warning("host twin \(t.name): \(line)")
            }
            t.pending = []
        }
    }
}
