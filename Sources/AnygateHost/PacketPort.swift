public import AnygateStack
public import AnygateWire
import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// An AF_PACKET socket on an existing host interface. The stack is a
/// separate host on that link with its own MAC: the socket asks the
/// interface to accept that MAC as a secondary unicast address (the driver
/// goes promiscuous only if it cannot filter), and ignores the frames this
/// process itself transmits.
///
/// With offloads (the default) frames carry virtio-net headers
/// (`PACKET_VNET_HDR`): super-frames and partial checksums from a peer that
/// keeps its offloads arrive described, and the stack's super-frames leave
/// whole. Without, the peer must not send them (`ethtool -K PEER tx off tso
/// off gso off`). Reads and writes go in batches (`recvmmsg`, `sendmmsg`).
public final class PacketPort: FramePort {
    public let name: String
    public private(set) var fd: Int32 = -1
    public internal(set) var counters = PortCounters()
    let mac: [UInt8]
    private var ifindex: Int32 = 0
    var queue: [PacketHandle] = []
    let queueCapacity: Int
    var filtersOutgoing = false
    /// Message headers for batched reads and writes.
    let messages = MessageBatch(capacity: 64)
    /// Kernel drops read so far (`PACKET_STATISTICS` resets on each read).
    private var kernelDropTotal: UInt64 = 0
    /// Multicast MACs the device takes in for us (`PACKET_MR_MULTICAST`).
    public private(set) var multicastGroups: Set<MACAddress> = []

    /// Frames the kernel dropped in this socket's receive queue, in all.
    public var kernelDrops: UInt64 {
        if fd >= 0, let d = Sys.packetSocketDrops(fd) { kernelDropTotal &+= UInt64(d) }
        return kernelDropTotal
    }

    /// Bytes of the socket's receive queue (the kernel counts each frame's
    /// buffer, about 2.3 KiB for a 1500-byte frame): about 7 000 frames.
    static let receiveBuffer: Int32 = 16 << 20

    /// Whether frames carry virtio-net headers (`PACKET_VNET_HDR`): the
    /// port takes super-frames and partial checksums both ways.
    public private(set) var offloads = false
    let wantsOffloads: Bool
    /// The fanout group this socket joined (`PACKET_FANOUT`, hash mode):
    /// each worker opens a socket of its own on the interface in the same
    /// group, and the kernel gives each flow's frames to one of them.
    public let fanoutGroup: UInt16?

    public init(interface name: String, mac: [UInt8], offloads: Bool = true, fanoutGroup: UInt16? = nil,
                queueCapacity: Int = 1024) throws(SystemError) {
        precondition(mac.count == 6)
        self.wantsOffloads = offloads
        self.fanoutGroup = fanoutGroup
        self.name = name
        self.mac = mac
        self.queueCapacity = queueCapacity
        try open()
    }

    private func open() throws(SystemError) {
        let index = try HostInterface.index(name)
        let proto = Int32(UInt16(ag_ETH_P_ALL).bigEndian)
        let fd = try Sys.socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                                proto, name)
        do {
            // A socket joining a fanout group takes nothing until it has
            // joined: what it took alone would reach the group's others too.
            if fanoutGroup != nil { try Sys.acceptNone(fd, name) }
            var sll = sockaddr_ll()
            sll.sll_family = UInt16(AF_PACKET)
            sll.sll_protocol = UInt16(UInt16(ag_ETH_P_ALL).bigEndian)
            sll.sll_ifindex = index
            let r = withUnsafePointer(to: &sll) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size)) }
            }
            _ = try Sys.check(r, "bind AF_PACKET", name)
            if wantsOffloads {
                try Sys.setsockopt(fd, ag_SOL_PACKET, ag_PACKET_VNET_HDR, Int32(1), "PACKET_VNET_HDR", name)
            } else {
                // Which frames the host sent with a checksum left to offload.
                try Sys.setsockopt(fd, ag_SOL_PACKET, ag_PACKET_AUXDATA, Int32(1), "PACKET_AUXDATA", name)
            }
            var mreq = packet_mreq()
            mreq.mr_ifindex = index
            mreq.mr_type = UInt16(ag_PACKET_MR_UNICAST)
            mreq.mr_alen = 6
            withUnsafeMutableBytes(of: &mreq.mr_address) { b in for i in 0..<6 { b[i] = mac[i] } }
            try Sys.setsockopt(fd, ag_SOL_PACKET, ag_PACKET_ADD_MEMBERSHIP, mreq, "PACKET_ADD_MEMBERSHIP", name)
            // A socket opened again (the device came back) takes the groups again.
            for g in multicastGroups { try membership(fd, index, g, add: true) }
            // A deep receive queue: bursts arrive faster than one wake-up reads them, and what
            // overflows is lost (counted, `kernel-rx-queue`). FORCE passes rmem_max with CAP_NET_ADMIN.
            if (try? Sys.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, PacketPort.receiveBuffer, "SO_RCVBUFFORCE", name)) == nil {
                try? Sys.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, PacketPort.receiveBuffer, "SO_RCVBUF", name)
            }
            if let group = fanoutGroup {
                try Sys.setsockopt(fd, ag_SOL_PACKET, ag_PACKET_FANOUT, ag_fanout_hash(group), "PACKET_FANOUT", name)
                try Sys.acceptAll(fd, name)
            }
            // Linux 4.20+: drop our own transmissions in the kernel; otherwise filter by packet type.
            filtersOutgoing = (try? Sys.setsockopt(fd, ag_SOL_PACKET, ag_PACKET_IGNORE_OUTGOING, Int32(1),
                                                   "PACKET_IGNORE_OUTGOING", name)) != nil
            // A fanout group has a receive hook of its own, which the
            // socket's PACKET_IGNORE_OUTGOING does not reach (the kernel
            // skips only the group's own sends): what the host sends on the
            // interface would arrive as input. Filter by packet type then.
            if fanoutGroup != nil { filtersOutgoing = false }
        } catch {
            Sys.close(fd)
            throw error
        }
        self.fd = fd
        offloads = wantsOffloads
        ifindex = index
    }

    func rawRead(into buffer: UnsafeMutableRawPointer, capacity: Int) -> RawRead {
        var from = sockaddr_ll()
        var len = socklen_t(MemoryLayout<sockaddr_ll>.size)
        let r = withUnsafeMutablePointer(to: &from) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, buffer, capacity, 0, $0, &len) }
        }
        if r > 0 {
            if !filtersOutgoing && Int32(from.sll_pkttype) == ag_PACKET_OUTGOING { return .skip }
            return .frame(r)
        }
        return .error(r == 0 ? ENODEV : errno)
    }

    func rawWrite(_ packet: PacketHandle, pool: PacketPool) -> (written: Bool, errno: Int32) {
        let b = pool.bytes(packet)
        guard offloads else {
            let r = Sys.send(fd, b)
            return (r.count == b.count, r.errno)
        }
        let m = messages
        writeHeader(packet, into: m.header(0), pool: pool)
        m.set(0, vnet: true, b, receiving: false)
        let r = Sys.sendmmsg(fd, m.messages, 1)
        return (r.count == 1, r.errno)
    }

    func writeLost(_ errno: Int32) -> Bool { errno == ENXIO || errno == ENETDOWN || errno == ENODEV }

    /// Rebinds when the interface exists (again) and is up.
    public func reattach() -> Bool {
        guard HostInterface.exists(name), (try? HostInterface.isUp(name)) == true else { return false }
        if let index = try? HostInterface.index(name), index == ifindex, fd >= 0 { return true }
        if fd >= 0 { Sys.close(fd); fd = -1 }
        do { try open() } catch { return false }
        counters.reattaches += 1
        return true
    }

    /// Has the device take in exactly these multicast MACs for this socket.
    public func setMulticast(_ macs: Set<MACAddress>) throws(SystemError) {
        if fd >= 0 {
            for g in multicastGroups.subtracting(macs) { try membership(fd, ifindex, g, add: false) }
            for g in macs.subtracting(multicastGroups) { try membership(fd, ifindex, g, add: true) }
        }
        multicastGroups = macs
    }

    private func membership(_ fd: Int32, _ index: Int32, _ mac: MACAddress, add: Bool) throws(SystemError) {
        var mreq = packet_mreq()
        mreq.mr_ifindex = index
        mreq.mr_type = UInt16(ag_PACKET_MR_MULTICAST)
        mreq.mr_alen = 6
        withUnsafeMutableBytes(of: &mreq.mr_address) { b in
            for i in 0..<6 { b[i] = UInt8(truncatingIfNeeded: mac.rawValue >> UInt64(40 - 8 * i)) }
        }
        try Sys.setsockopt(fd, ag_SOL_PACKET, add ? ag_PACKET_ADD_MEMBERSHIP : ag_PACKET_DROP_MEMBERSHIP, mreq,
                           add ? "PACKET_ADD_MEMBERSHIP" : "PACKET_DROP_MEMBERSHIP", name)
    }

    public func close(pool: PacketPool) {
        messages.releaseReserves(pool: pool)
        closeDescriptor(fd, pool: pool)
        fd = -1
    }
}
