/// One classic BPF instruction (the `struct bpf_insn` libpcap's
/// `pcap_compile` and `tcpdump -dd` produce).
public struct BPFInstruction: Hashable, Sendable {
    public var code: UInt16
    public var jt: UInt8
    public var jf: UInt8
    public var k: UInt32

    public init(code: UInt16, jt: UInt8 = 0, jf: UInt8 = 0, k: UInt32 = 0) {
        self.code = code
        self.jt = jt
        self.jf = jf
        self.k = k
    }
}

/// A classic BPF program, checked once and then run over packets: the
/// filter language of tcpdump, compiled by libpcap, run in the stack.
///
/// The checks are those a kernel makes before it accepts a program
/// (Linux `bpf_check_classic`, NetBSD `bpf_validate`): every opcode known,
/// jumps forward and inside the program, scratch memory indices below 16,
/// no division by a constant zero, and a return at the end. A checked
/// program always ends: jumps only go forward. Running it reads the
/// packet's bytes in place and allocates nothing; a load past the end of
/// the captured bytes ends the run with 0 (the packet is not taken), as
/// in the kernels.
public struct BPFProgram: Sendable {
    public let instructions: [BPFInstruction]

    public static let maxInstructions = 4096
    static let memoryWords = 16

    // Instruction classes and fields (<net/bpf.h>).
    static let ld: UInt16 = 0x00, ldx: UInt16 = 0x01, st: UInt16 = 0x02, stx: UInt16 = 0x03
    static let alu: UInt16 = 0x04, jmp: UInt16 = 0x05, ret: UInt16 = 0x06, misc: UInt16 = 0x07
    static let w: UInt16 = 0x00, h: UInt16 = 0x08, b: UInt16 = 0x10
    static let imm: UInt16 = 0x00, abs: UInt16 = 0x20, ind: UInt16 = 0x40, mem: UInt16 = 0x60, len: UInt16 = 0x80, msh: UInt16 = 0xA0
    static let add: UInt16 = 0x00, sub: UInt16 = 0x10, mul: UInt16 = 0x20, div: UInt16 = 0x30, or: UInt16 = 0x40
    static let and: UInt16 = 0x50, lsh: UInt16 = 0x60, rsh: UInt16 = 0x70, neg: UInt16 = 0x80, mod: UInt16 = 0x90, xor: UInt16 = 0xA0
    static let ja: UInt16 = 0x00, jeq: UInt16 = 0x10, jgt: UInt16 = 0x20, jge: UInt16 = 0x30, jset: UInt16 = 0x40
    static let k: UInt16 = 0x00, x: UInt16 = 0x08, a: UInt16 = 0x10
    static let tax: UInt16 = 0x00, txa: UInt16 = 0x80

    /// Why a program was refused, with the index of the instruction.
    public enum Invalid: Error, Equatable, Sendable, CustomStringConvertible {
        case empty
        case tooLong(Int)
        case unknownOpcode(at: Int, code: UInt16)
        case jumpOutOfRange(at: Int)
        case memoryIndex(at: Int)
        case divisionByZero(at: Int)
        case noReturnAtEnd

        public var description: String {
            switch self {
            case .empty: "an empty program"
            case .tooLong(let n): "\(n) instructions (at most \(BPFProgram.maxInstructions))"
            case .unknownOpcode(let i, let c): "instruction \(i): unknown opcode 0x\(String(c, radix: 16))"
            case .jumpOutOfRange(let i): "instruction \(i): a jump past the end"
            case .memoryIndex(let i): "instruction \(i): scratch memory index past 15"
            case .divisionByZero(let i): "instruction \(i): division by a constant zero"
            case .noReturnAtEnd: "the last instruction is not a return"
            }
        }
    }

    /// Checks `instructions` (see the type's description).
    public init(_ instructions: [BPFInstruction]) throws(Invalid) {
        guard !instructions.isEmpty else { throw .empty }
        guard instructions.count <= BPFProgram.maxInstructions else { throw .tooLong(instructions.count) }
        let n = instructions.count
        for (i, ins) in instructions.enumerated() {
            let c = ins.code
            let cls = c & 0x07
            switch cls {
            case BPFProgram.ld, BPFProgram.ldx:
                let size = c & 0x18, mode = c & 0xE0
                if cls == BPFProgram.ld {
                    switch mode {
                    case BPFProgram.abs, BPFProgram.ind:
                        guard size != 0x18 else { throw .unknownOpcode(at: i, code: c) }
                    case BPFProgram.imm, BPFProgram.len:
                        guard size == BPFProgram.w else { throw .unknownOpcode(at: i, code: c) }
                    case BPFProgram.mem:
                        guard size == BPFProgram.w else { throw .unknownOpcode(at: i, code: c) }
                        guard ins.k < UInt32(BPFProgram.memoryWords) else { throw .memoryIndex(at: i) }
                    default:
                        throw .unknownOpcode(at: i, code: c)
                    }
                } else {
                    switch mode {
                    case BPFProgram.imm, BPFProgram.len:
                        guard size == BPFProgram.w else { throw .unknownOpcode(at: i, code: c) }
                    case BPFProgram.mem:
                        guard size == BPFProgram.w else { throw .unknownOpcode(at: i, code: c) }
                        guard ins.k < UInt32(BPFProgram.memoryWords) else { throw .memoryIndex(at: i) }
                    case BPFProgram.msh:
                        guard size == BPFProgram.b else { throw .unknownOpcode(at: i, code: c) }
                    default:
                        throw .unknownOpcode(at: i, code: c)
                    }
                }
            case BPFProgram.st, BPFProgram.stx:
                guard c & 0xF8 == 0 else { throw .unknownOpcode(at: i, code: c) }
                guard ins.k < UInt32(BPFProgram.memoryWords) else { throw .memoryIndex(at: i) }
            case BPFProgram.alu:
                let op = c & 0xF0, src = c & 0x08
                guard c & 0xFF00 == 0, op <= BPFProgram.xor else { throw .unknownOpcode(at: i, code: c) }
                if op == BPFProgram.neg { guard src == 0 else { throw .unknownOpcode(at: i, code: c) } }
                if (op == BPFProgram.div || op == BPFProgram.mod) && src == BPFProgram.k && ins.k == 0 { throw .divisionByZero(at: i) }
            case BPFProgram.jmp:
                let op = c & 0xF0
                guard c & 0xFF00 == 0, op <= BPFProgram.jset else { throw .unknownOpcode(at: i, code: c) }
                if op == BPFProgram.ja {
                    guard c & 0x08 == 0 else { throw .unknownOpcode(at: i, code: c) }
                    guard UInt64(i) + 1 + UInt64(ins.k) < UInt64(n) else { throw .jumpOutOfRange(at: i) }
                } else {
                    guard i + 1 + Int(ins.jt) < n, i + 1 + Int(ins.jf) < n else { throw .jumpOutOfRange(at: i) }
                }
            case BPFProgram.ret:
                let rval = c & 0x18
                guard c & 0xFFE0 == 0, rval == BPFProgram.k || rval == BPFProgram.a else { throw .unknownOpcode(at: i, code: c) }
            default:  // misc
                guard c == BPFProgram.misc | BPFProgram.tax || c == BPFProgram.misc | BPFProgram.txa else {
                    throw .unknownOpcode(at: i, code: c)
                }
            }
        }
        guard instructions[n - 1].code & 0x07 == BPFProgram.ret else { throw .noReturnAtEnd }
        self.instructions = instructions
    }

    /// Runs the program over `packet` (the captured bytes; `wireLength` is
    /// the packet's whole length, for `len`). Returns how many bytes to
    /// keep: 0 rejects the packet.
    public func run(_ packet: UnsafeRawBufferPointer, wireLength: Int? = nil) -> UInt32 {
        var a: UInt32 = 0, x: UInt32 = 0
        var mem = InlineArray<16, UInt32>(repeating: 0)
        let count = packet.count
        let length = UInt32(truncatingIfNeeded: wireLength ?? count)
        let prog = instructions
        var pc = 0
        while true {
            let ins = prog[pc]
            pc += 1
            let c = ins.code
            switch c & 0x07 {
            case BPFProgram.ld, BPFProgram.ldx:
                let mode = c & 0xE0
                var v: UInt32
                switch mode {
                case BPFProgram.imm: v = ins.k
                case BPFProgram.len: v = length
                case BPFProgram.mem: v = mem[Int(ins.k)]
                case BPFProgram.msh:
                    guard Int(ins.k) < count else { return 0 }
                    v = UInt32(packet[Int(ins.k)] & 0x0F) << 2
                default:
                    // abs or ind: the offset, then the load of its size.
                    let base = UInt64(ins.k) + (mode == BPFProgram.ind ? UInt64(x) : 0)
                    let size = c & 0x18 == BPFProgram.w ? 4 : (c & 0x18 == BPFProgram.h ? 2 : 1)
                    guard base + UInt64(size) <= UInt64(count) else { return 0 }
                    let o = Int(base)
                    switch size {
                    case 4: v = UInt32(packet[o]) << 24 | UInt32(packet[o + 1]) << 16 | UInt32(packet[o + 2]) << 8 | UInt32(packet[o + 3])
                    case 2: v = UInt32(packet[o]) << 8 | UInt32(packet[o + 1])
                    default: v = UInt32(packet[o])
                    }
                }
                if c & 0x07 == BPFProgram.ld { a = v } else { x = v }
            case BPFProgram.st:
                mem[Int(ins.k)] = a
            case BPFProgram.stx:
                mem[Int(ins.k)] = x
            case BPFProgram.alu:
                let v = c & 0x08 == BPFProgram.x ? x : ins.k
                switch c & 0xF0 {
                case BPFProgram.add: a = a &+ v
                case BPFProgram.sub: a = a &- v
                case BPFProgram.mul: a = a &* v
                case BPFProgram.div:
                    guard v != 0 else { return 0 }
                    a /= v
                case BPFProgram.mod:
                    guard v != 0 else { return 0 }
                    a %= v
                case BPFProgram.or: a |= v
                case BPFProgram.and: a &= v
                case BPFProgram.lsh: a = v < 32 ? a << v : 0
                case BPFProgram.rsh: a = v < 32 ? a >> v : 0
                case BPFProgram.neg: a = 0 &- a
                default: a ^= v  // xor
                }
            case BPFProgram.jmp:
                let op = c & 0xF0
                if op == BPFProgram.ja {
                    pc += Int(ins.k)
                    continue
                }
                let v = c & 0x08 == BPFProgram.x ? x : ins.k
                let taken: Bool
                switch op {
                case BPFProgram.jeq: taken = a == v
                case BPFProgram.jgt: taken = a > v
                case BPFProgram.jge: taken = a >= v
                default: taken = a & v != 0  // jset
                }
                pc += Int(taken ? ins.jt : ins.jf)
            case BPFProgram.ret:
                return c & 0x18 == BPFProgram.a ? a : ins.k
            default:  // misc
                if c == BPFProgram.misc | BPFProgram.tax { x = a } else { a = x }
            }
        }
    }
}
