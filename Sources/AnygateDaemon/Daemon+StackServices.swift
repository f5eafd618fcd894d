import AnygateControl
import AnygateStack
import AnygateWire
import Foundation

/// The appliance's own services on its stack's TCP: metrics and control on
/// a stack address, the bandwidth-test responder, and bandwidth-test runs.
extension Daemon {
    func openStackServices() throws(DaemonError) {
        if case .stack(let a)? = config.metricsListen {
            do {
                let s = try StackStreamServer(stack: stack, address: a, isComplete: { Daemon.headersComplete($0) },
                                              respond: { [weak self] request, _ in self?.handleMetrics(request) ?? [] })
                stackMetrics = s
                stackServices.append(s)
            } catch {
                throw DaemonError("metrics listener stack:\(a): \(error)")
            }
            logger.info("metrics", metadata: ["listen": "stack:\(a)"])
        }
        if let a = config.controlListen, let path = config.controlTokenFile {
            controlToken = try Daemon.readToken(path)
            do {
                let s = try StackStreamServer(stack: stack, address: a, allow: config.controlAllow, isComplete: { $0.contains(0x0A) },
                                              respond: { [weak self] request, from in self?.handleStackControl(request, from: from) ?? [] })
                stackControl = s
                stackServices.append(s)
            } catch {
                throw DaemonError("control listener stack:\(a): \(error)")
            }
            logger.info("control", metadata: ["listen": "stack:\(a)", "allow": "\(config.controlAllow.map(\.description).joined(separator: ","))"])
        }
        if let a = config.bandwidthTestListen {
            do {
                let r = try BandwidthResponder(stack: stack, address: a)
                bandwidthResponder = r
                stackServices.append(r)
            } catch {
                throw DaemonError("bandwidth-test listener stack:\(a): \(error)")
            }
            logger.info("bandwidth-test responder", metadata: ["listen": "stack:\(a)"])
        }
        loop.every(nanoseconds: 1_000_000_000) { [weak self] in
            guard let self else { return }
            let now = ContinuousClock.now
            for s in stackServices { s.sweep(now: now) }
            bandwidthRun?.sweep(now: now)
        }
    }

    func closeStackServices() {
        for s in stackServices { s.close() }
        stackServices = []
        bandwidthRun?.close()
    }

    /// A TCP notice from the stack: to the service that owns the connection or listener.
    func stackTCPEvent(_ e: StackEvent) {
        switch e {
        case .tcp(let id):
            if bandwidthRun?.handle(id) == true { return }
            for s in stackServices where s.handle(id) { return }
            // Nobody's (a service closed it meanwhile): the notices are dropped.
            _ = stack.tcpTakeNotices(id)
        case .tcpAcceptable(let l):
            for s in stackServices where s.acceptable(l) { return }
        default:
            break
        }
    }

    /// The control token: the file's first line, from a file only its owner may read or write.
    static func readToken(_ path: String) throws(DaemonError) -> [UInt8] {
        let attributes: [FileAttributeKey: Any]
        do { attributes = try FileManager.default.attributesOfItem(atPath: path) } catch {
            throw DaemonError("control.token-file \(path): cannot read it: \(error.localizedDescription)")
        }
        let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue ?? 0o777
        guard mode & 0o077 == 0 else {
            throw DaemonError("control.token-file \(path): mode \(String(mode, radix: 8)) lets others read it; it must be 0600")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw DaemonError("control.token-file \(path): cannot read it") }
        let token = Array(data.prefix { $0 != 0x0A && $0 != 0x0D })
        guard token.count >= 16 else { throw DaemonError("control.token-file \(path): the token must be at least 16 characters") }
        return token
    }

    /// A control request over the stack: the source was let in by
    /// `control.allow` (the listener drops others, counted as
    /// tcp-source-not-allowed); the token must match.
    func handleStackControl(_ input: [UInt8], from: IPAddress) -> [UInt8] {
        let line = input.prefix { $0 != 0x0A }
        let token = (try? ControlCoding.decoder.decode(ControlRequest.self, from: Data(line)))?.token.map { Array($0.utf8) }
        guard let token, let expected = controlToken, Daemon.constantTimeEqual(token, expected) else {
            controlRefusedToken &+= 1
            logger.warning("control request refused: \(token == nil ? "no token" : "wrong token")", metadata: ["from": "\(from)"])
            return encode(ControlResponse<Done>(ok: false, error: "refused: the request needs the token from control.token-file"))
        }
        return handleControl(input, local: false)
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in a.indices { d |= a[i] ^ b[i] }
        return d == 0
    }

    /// Control requests turned away on the stack listener: by source (the
    /// listener's count) and by token.
    var controlRefusals: (source: UInt64, token: UInt64) {
        (stackControl.flatMap { stack.tcpListenerCounters($0.listener)?.refused } ?? 0, controlRefusedToken)
    }

    // MARK: bandwidth-test

    func bandwidthTest(_ r: ControlRequest) -> [UInt8] {
        if r.verb == .bandwidthTestShow {
            guard let run = bandwidthRun else { return fail("no bandwidth test has run") }
            return encode(ControlResponse(ok: true, result: run.result))
        }
        guard config.workers == 1 else { return fail("bandwidth-test needs stack.workers: 1") }
        if let run = bandwidthRun, !run.isFinished { return fail("a bandwidth test to \(run.peer) is running") }
        guard let text = r.destination else { return fail("bandwidth-test needs a peer: ADDR[:PORT]") }
        guard let peer = StackAddress(parsing: text[...], defaultPort: 5201) else {
            return fail("bad peer \"\(text)\": expected IPV4[:PORT], IPV6 or [IPV6]:PORT")
        }
        let seconds = r.seconds ?? 10, streams = r.count ?? 1
        guard (1...3600).contains(seconds) else { return fail("--seconds must be 1 to 3600") }
        guard (1...64).contains(streams) else { return fail("--streams must be 1 to 64") }
        do {
            let run = try BandwidthTestRun(stack: stack, peer: peer, seconds: seconds, streams: streams)
            bandwidthRun = run
            logger.notice("bandwidth test started", metadata: ["peer": "\(peer)", "seconds": "\(seconds)", "streams": "\(streams)"])
            return encode(ControlResponse(ok: true, result: run.result))
        } catch {
            return fail("cannot connect to \(peer): \(error)")
        }
    }
}
