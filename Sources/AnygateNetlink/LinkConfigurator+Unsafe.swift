public import AnygateWire
import CNetlink
#if canImport(Glibc)
import Glibc
#endif

/// Writes to the host's links through netlink (libnl-route): a host twin's
/// MAC, MTU, state and addresses. One request each, acknowledged.
public final class LinkConfigurator {
    private let socket: OpaquePointer

    public init() throws(NetlinkError) {
        guard let s = nl_socket_alloc() else { throw NetlinkError(operation: "nl_socket_alloc", code: -Int32(ag_NLE_NOMEM)) }
        let r = nl_connect(s, Int32(NETLINK_ROUTE))
        guard r == 0 else {
            nl_socket_free(s)
            throw NetlinkError(operation: "nl_connect", code: r)
        }
        socket = s
    }

    deinit { nl_socket_free(socket) }

    /// The host's index of the link named `name`.
    public func index(of name: String) throws(NetlinkError) -> Int32 {
        var link: OpaquePointer? = nil
        let r = rtnl_link_get_kernel(socket, 0, name, &link)
        guard r == 0, let l = link else { throw NetlinkError(operation: "get link \(name)", code: r) }
        defer { rtnl_link_put(l) }
        return rtnl_link_get_ifindex(l)
    }

    /// Sets the link's MAC (when given), MTU, and brings it up.
    public func configure(_ name: String, mac: MACAddress?, mtu: Int) throws(NetlinkError) {
        var link: OpaquePointer? = nil
        var r = rtnl_link_get_kernel(socket, 0, name, &link)
        guard r == 0, let current = link else { throw NetlinkError(operation: "get link \(name)", code: r) }
        defer { rtnl_link_put(current) }
        guard let change = rtnl_link_alloc() else { throw NetlinkError(operation: "rtnl_link_alloc", code: -Int32(ag_NLE_NOMEM)) }
        defer { rtnl_link_put(change) }
        rtnl_link_set_mtu(change, UInt32(mtu))
        if let mac {
            var bytes = (0..<6).map { UInt8(truncatingIfNeeded: mac.rawValue >> UInt64(40 - 8 * $0)) }
            guard let a = nl_addr_build(Int32(AF_LLC), &bytes, 6) else { throw NetlinkError(operation: "nl_addr_build", code: -Int32(ag_NLE_NOMEM)) }
            defer { nl_addr_put(a) }
            rtnl_link_set_addr(change, a)
        }
        rtnl_link_set_flags(change, ag_IFF_UP)
        r = rtnl_link_change(socket, current, change, 0)
        guard r == 0 else { throw NetlinkError(operation: "change link \(name)", code: r) }
    }

    /// Adds an address (4 or 16 bytes, network order) to link `index`, or
    /// updates it; IPv6 ones without duplicate address detection (the stack runs its own).
    public func addAddress(_ address: [UInt8], prefixLength: Int, to index: Int32) throws(NetlinkError) {
        try withAddress(address, prefixLength: prefixLength, index: index) { a throws(NetlinkError) in
            if address.count == 16 { rtnl_addr_set_flags(a, ag_IFA_F_NODAD) }
            let r = rtnl_addr_add(socket, a, Int32(NLM_F_REPLACE))
            guard r == 0 else { throw NetlinkError(operation: "add address", code: r) }
        }
    }

    public func removeAddress(_ address: [UInt8], prefixLength: Int, from index: Int32) throws(NetlinkError) {
        try withAddress(address, prefixLength: prefixLength, index: index) { a throws(NetlinkError) in
            let r = rtnl_addr_delete(socket, a, 0)
            guard r == 0 else { throw NetlinkError(operation: "remove address", code: r) }
        }
    }

    private func withAddress(_ address: [UInt8], prefixLength: Int, index: Int32,
                             _ body: (OpaquePointer) throws(NetlinkError) -> Void) throws(NetlinkError) {
        guard let a = rtnl_addr_alloc() else { throw NetlinkError(operation: "rtnl_addr_alloc", code: -Int32(ag_NLE_NOMEM)) }
        defer { rtnl_addr_put(a) }
        var bytes = address
        guard let local = nl_addr_build(bytes.count == 16 ? Int32(AF_INET6) : Int32(AF_INET), &bytes, bytes.count) else {
            throw NetlinkError(operation: "nl_addr_build", code: -Int32(ag_NLE_NOMEM))
        }
        defer { nl_addr_put(local) }
        nl_addr_set_prefixlen(local, Int32(prefixLength))
        rtnl_addr_set_ifindex(a, index)
        rtnl_addr_set_local(a, local)
        rtnl_addr_set_prefixlen(a, Int32(prefixLength))
        try body(a)
    }
}
