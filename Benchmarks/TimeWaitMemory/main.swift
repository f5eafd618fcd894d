// Memory per TIME-WAIT connection, with VTW on and off: a client stack
// opens N connections to a server stack's listener (in process, on a
// MemoryNetwork link); the server closes first, so it holds N TIME-WAITs.
// A first round of N, left to expire, sizes every table; the second round's
// growth of the heap in use (glibc mallinfo) is what N TIME-WAITs cost.
// With VTW on that is nothing beyond the vestige pool, allocated once at its
// `time-wait.max` size, whose bytes per slot are reported beside it.
// Usage: TimeWaitMemory [N] (N ≤ 16 000: one round fits the client's ephemeral ports)
import AnygateStack
import BenchSupport
import AnygateWire
let n = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 15000 : 15000

func run(vtw: Bool) throws -> (perTimeWait: Double, timeWaits: Int, pool: Int) {
    var cfg = StackConfiguration()
    cfg.tcp.vtw = vtw
    cfg.tcp.maxConnections = n + 1024
    cfg.tcp.timeWaitMax = 65536
    let net = MemoryNetwork(pool: PacketPool(capacity: 4096))
    let client = net.addStack(name: "C", configuration: cfg), server = net.addStack(name: "S", configuration: cfg)
    let ce = try client.addInterface(name: "eth0", mac: MACAddress(2, 0, 0, 0, 0, 1))
    let se = try server.addInterface(name: "eth0", mac: MACAddress(2, 0, 0, 0, 0, 2))
    net.connect(client, ce, server, se)
    try client.addAddress(IPv4InterfaceAddress("10.0.0.1/24"), to: ce)
    try server.addAddress(IPv4InterfaceAddress("10.0.0.2/24"), to: se)
    try client.setUp(ce, true)
    try server.setUp(se, true)
    let l = try server.tcpListen(address: .v4(IPv4Address(10, 0, 0, 2)), port: 80, backlog: 1024)
    func round() throws -> Int {
        for _ in 0..<n {
            let c = try client.tcpConnect(to: .v4(IPv4Address(10, 0, 0, 2)), port: 80)
            net.run()
            guard let s = server.tcpAccept(l) else { fatalError("no connection accepted") }
            server.tcpClose(s)
            net.run()
            client.tcpClose(c)
            net.run()
        }
        let st = server.tcpStatistics
        return st.vestiges + st.timeWaitConnections
    }
    let before = residentBytes()
    let held = try round()
    let after = residentBytes()
    // The vestige pool: 32-byte entries, 64-byte hash lines at most half full, 64k port counts.
    var lines = 1
    while lines * 15 < 65536 * 2 { lines <<= 1 }
    let pool = 65536 * 32 + lines * 64 + 65536 * 4
    return (Double(after - before) / Double(held), held, pool)
}

for vtw in [true, false] {
    let r = try run(vtw: vtw)
    let pool = vtw ? "; vestige pool for 65 536 allocated once: \(r.pool) B, \(r.pool / 65536) B per slot" : ""
    print("vtw \(vtw): \(r.timeWaits) in TIME-WAIT, resident growth \(Int(r.perTimeWait.rounded())) B each" + pool)
}
