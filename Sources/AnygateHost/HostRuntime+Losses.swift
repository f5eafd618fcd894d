public import AnygateStack

/// What the ports and the kernel lost, handed to the stack as drop reasons
/// so that one table accounts for every packet: frames the kernel dropped
/// before we read them, frames no pool buffer was free for, frames a port's
/// transmit queue or device refused, frames for a port whose device is gone.
struct PortLosses: Equatable {
    var kernel: UInt64 = 0
    var noBuffer: UInt64 = 0
    var queueFull: UInt64 = 0
    var transmitFailed: UInt64 = 0
    var unattached: UInt64 = 0
    var badOffload: UInt64 = 0
    var truncated: UInt64 = 0
}

extension HostRuntime {
    /// How often losses are handed over while packets flow (and at every
    /// control request, so `show` is current).
    static let lossSyncInterval: Int64 = 1_000_000_000
    /// A port's kernel drops are logged at most this often.
    static let kernelDropWarningInterval: Int64 = 60_000_000_000

    /// Reads each port's losses (the kernel's too) and records what is new
    /// since the last call as drops of the port's interface.
    public func syncPortLosses() {
        let now = Sys.monotonicNanoseconds()
        lastLossSync = now
        // Host tunnel sockets: their queue overflows count on the tunnel's interface.
        for (id, socket) in hostSockets {
            let seen = UInt64(socket.kernelDrops), was = reportedSocketDrops[id] ?? 0
            guard seen != was else { continue }
            reportedSocketDrops[id] = seen
            let count = seen >= was ? seen - was : seen
            if let i = stack.recordHostSocketDrops(id, count: count) {
                log("\(stack.interfaceName(i)): the kernel dropped \(count) datagrams in the host socket's receive queue "
                    + "before anygated read them (\(seen) in all)")
            }
        }
        // Datagrams a host socket refused after the stack handed them over.
        for (id, socket) in hostSockets {
            let was = reportedSendFailures[id] ?? (0, 0)
            guard socket.sendFailures != was.sent || socket.receiveLost != was.received else { continue }
            reportedSendFailures[id] = (socket.sendFailures, socket.receiveLost)
            stack.recordHostSocketDrops(id, count: socket.sendFailures - was.sent, reason: .hostSocketSendFailed)
            stack.recordHostSocketDrops(id, count: socket.receiveLost - was.received, reason: .portNoBuffer)
        }
        for (i, port) in attachedPorts {
            var seen = PortLosses()
            let c = port.counters
            seen.kernel = port.kernelDrops
            seen.noBuffer = c.rxNoBuffer
            seen.queueFull = c.txQueueDrops
            seen.transmitFailed = c.txErrors
            seen.unattached = unattachedByInterface[i] ?? 0
            seen.badOffload = c.rxBadOffload
            seen.truncated = c.rxTruncated
            let was = reportedLosses[i] ?? PortLosses()
            guard seen != was else { continue }
            // A counter that went backwards was reset (a TAP made anew): all of it is new.
            func new(_ now: UInt64, _ before: UInt64) -> UInt64 { now >= before ? now - before : now }
            stack.recordDrops(.kernelReceiveQueue, count: new(seen.kernel, was.kernel), on: i)
            stack.recordDrops(.portNoBuffer, count: new(seen.noBuffer, was.noBuffer), on: i)
            stack.recordDrops(.portQueueFull, count: new(seen.queueFull, was.queueFull), on: i)
            stack.recordDrops(.portTransmitFailed, count: new(seen.transmitFailed, was.transmitFailed), on: i)
            stack.recordDrops(.portUnattached, count: new(seen.unattached, was.unattached), on: i)
            stack.recordDrops(.badOffloadHeader, count: new(seen.badOffload, was.badOffload), on: i)
            stack.recordDrops(.portFrameTruncated, count: new(seen.truncated, was.truncated), on: i)
            reportedLosses[i] = seen
            if new(seen.kernel, was.kernel) > 0 {
                let last = kernelDropWarned[i] ?? .min
                if last == .min || now - last >= HostRuntime.kernelDropWarningInterval {
                    kernelDropWarned[i] = now
                    log("\(stack.interfaceName(i)) (\(port.name)): the kernel dropped \(new(seen.kernel, was.kernel)) frames "
                        + "before anygated read them (receive queue full; \(seen.kernel) in all)")
                }
            }
        }
    }
}
