// Big-endian field access over raw packet bytes. Every header view in this
// module reads and writes through these helpers after it has checked the
// lengths once, so the accessors themselves cannot fail.

extension UnsafeMutableRawBufferPointer {
    @inlinable @inline(__always)
    package func be8(_ offset: Int) -> UInt8 {
        load(fromByteOffset: offset, as: UInt8.self)
    }

    @inlinable @inline(__always)
    package func be16(_ offset: Int) -> UInt16 {
        UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always)
    package func be32(_ offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inlinable @inline(__always)
    package func setBE8(_ offset: Int, _ value: UInt8) {
        storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
    }

    @inlinable @inline(__always)
    package func setBE16(_ offset: Int, _ value: UInt16) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable @inline(__always)
    package func setBE32(_ offset: Int, _ value: UInt32) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// A view of `count` bytes starting at `offset`; the caller has checked the range.
    @inlinable @inline(__always)
    package func slice(_ offset: Int, _ count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: baseAddress.map { $0 + offset }, count: count)
    }

    /// The bytes from `offset` to the end; the caller has checked `offset <= count`.
    @inlinable @inline(__always)
    package func tail(from offset: Int) -> UnsafeMutableRawBufferPointer {
        slice(offset, count - offset)
    }
}
