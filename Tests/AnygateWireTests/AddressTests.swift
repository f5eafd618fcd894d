import AnygateWire
import Testing

@Suite("Addresses and prefixes")
struct AddressTests {
    @Test("IPv4 text round-trips", arguments: ["0.0.0.0", "10.1.2.3", "255.255.255.255", "192.168.49.77"])
    func ipv4RoundTrip(_ s: String) throws {
        #expect(try #require(IPv4Address(s)).description == s)
    }

    @Test("bad IPv4 text is refused", arguments: ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", "a.b.c.d", "1.2.3.4 ", "-1.2.3.4"])
    func ipv4Bad(_ s: String) {
        #expect(IPv4Address(s) == nil)
    }

    @Test("prefixes are stored masked and refuse host bits in text")
    func prefixes() throws {
        let p = IPv4Prefix(address: IPv4Address(10, 1, 2, 3), length: 16)
        #expect(p.address == IPv4Address(10, 1, 0, 0))
        #expect(try IPv4Prefix("10.1.0.0/16") == p)
        #expect(p.contains(IPv4Address(10, 1, 255, 1)) && !p.contains(IPv4Address(10, 2, 0, 0)))
        #expect(try IPv4Prefix("0.0.0.0/0").contains(IPv4Address(8, 8, 8, 8)))
        #expect(throws: AddressParseError.self) { try IPv4Prefix("10.1.0.1/16") }
        #expect(throws: AddressParseError.self) { try IPv4Prefix("10.1.0.0/33") }
        #expect(throws: AddressParseError.self) { try IPv4Prefix("10.1.0.0") }
        #expect(throws: AddressParseError.self) { try IPv4Prefix("10.1.0.0/+8") }
        let a = try IPv4InterfaceAddress("10.1.0.1/24")
        #expect(a.subnet.description == "10.1.0.0/24" && a.broadcast == IPv4Address(10, 1, 0, 255))
        #expect(try IPv4InterfaceAddress("10.1.0.1/31").broadcast == nil)
    }

    @Test("common prefix length", arguments: [
        ("10.1.2.3", "10.1.2.3", 32), ("10.0.0.1", "10.128.0.1", 8),
        ("64.198.255.1", "8.8.8.8", 1), ("192.168.37.1", "192.168.49.77", 19),
    ])
    func commonPrefix(a: String, b: String, n: Int) {
        #expect(IPv4Address(a)!.commonPrefixLength(with: IPv4Address(b)!) == n)
    }

    @Test("address categories")
    func categories() {
        #expect(IPv4Address("172.16.0.0")!.isPrivate && IPv4Address("172.31.255.255")!.isPrivate)
        #expect(!IPv4Address("172.15.255.255")!.isPrivate && !IPv4Address("172.32.0.0")!.isPrivate)
        #expect(IPv4Address("169.254.1.1")!.isLinkLocal && IPv4Address("224.0.0.251")!.isMulticast)
    }

    @Test("MAC text")
    func mac() throws {
        let m = try #require(MACAddress("02:00:5e:10:00:ff"))
        #expect(m.description == "02:00:5e:10:00:ff")
        #expect(!m.isMulticast && MACAddress.broadcast.isMulticast)
        #expect(MACAddress("02:00:5e:10:00") == nil && MACAddress("02:00:5e:10:00:fg") == nil)
    }

    @Test("IPv6 text", arguments: [
        ("2001:db8::1", "2001:db8::1"), ("::", "::"), ("::1", "::1"), ("fe80::", "fe80::"),
        ("2001:0db8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"),
        ("::ffff:192.0.2.1", "::ffff:c000:201"), ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
    ])
    func ipv6(_ input: String, _ canonical: String) throws {
        #expect(try #require(IPv6Address(input)).description == canonical)
    }

    @Test("bad IPv6 text", arguments: ["", ":", "1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", "1:2:3:4:5:6:7", "g::"])
    func ipv6Bad(_ s: String) {
        #expect(IPv6Address(s) == nil)
    }
}
