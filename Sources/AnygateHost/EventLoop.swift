import CAnygateHost
#if canImport(Glibc)
import Glibc
#endif

/// A single-threaded epoll loop: file descriptors with handlers, one-shot
/// timers, and signals delivered through a signalfd. Everything the daemon
/// does happens on the thread that calls `run`, so the stack it drives
/// needs no locks (DESIGN.md, data-path rule 1).
public final class EventLoop {
    public typealias Handler = (_ events: UInt32) -> Void

    let epfd: Int32
    /// Handlers by file descriptor (descriptors are small and dense).
    private var handlers: [Handler?] = []
    private var timers: [(deadline: Int64, id: Int, action: () -> Void)] = []
    private var nextTimerID = 1
    private var stopping = false
    private let events: UnsafeMutablePointer<epoll_event>
    private static let maxEvents = 64

    public static let readable = UInt32(EPOLLIN.rawValue)
    public static let writable = UInt32(EPOLLOUT.rawValue)
    public static let hangup = UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLERR.rawValue)

    public init() throws(SystemError) {
        epfd = try Sys.check(epoll_create1(Int32(EPOLL_CLOEXEC)), "epoll_create1", "event loop")
        events = .allocate(capacity: EventLoop.maxEvents)
    }

    deinit {
        Sys.close(epfd)
        events.deallocate()
    }

    /// Watches `fd` for `events`; `handler` runs on each wake-up that reports it.
    public func register(_ fd: Int32, events mask: UInt32 = EventLoop.readable, handler: @escaping Handler) throws(SystemError) {
        var ev = epoll_event()
        ev.events = mask
        ev.data.fd = fd
        _ = try Sys.check(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev), "epoll_ctl add", "fd \(fd)")
        if Int(fd) >= handlers.count { handlers += Array(repeating: nil, count: Int(fd) + 1 - handlers.count) }
        handlers[Int(fd)] = handler
    }

    public func modify(_ fd: Int32, events mask: UInt32) {
        var ev = epoll_event()
        ev.events = mask
        ev.data.fd = fd
        _ = epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev)
    }

    /// Stops watching `fd` (before it is closed).
    public func unregister(_ fd: Int32) {
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil)
        if fd >= 0 && Int(fd) < handlers.count { handlers[Int(fd)] = nil }
    }

    /// Runs `action` once, `nanoseconds` from now. Returns an id for `cancel`.
    @discardableResult
    public func after(nanoseconds: Int64, _ action: @escaping () -> Void) -> Int {
        let id = nextTimerID
        nextTimerID += 1
        timers.append((Sys.monotonicNanoseconds() + nanoseconds, id, action))
        return id
    }

    public func cancel(_ id: Int) { timers.removeAll { $0.id == id } }

    /// Runs `action` every `nanoseconds` until the loop stops.
    public func every(nanoseconds: Int64, _ action: @escaping () -> Void) {
        after(nanoseconds: nanoseconds) { [weak self] in
            action()
            self?.every(nanoseconds: nanoseconds, action)
        }
    }

    /// Delivers SIGTERM, SIGINT and SIGHUP to `handler` on the loop (the
    /// signals are blocked for normal delivery). SIGPIPE is ignored.
    public func handleSignals(_ handler: @escaping (Int32) -> Void) throws(SystemError) {
        signal(SIGPIPE, SIG_IGN)
        var set = sigset_t()
        ag_sigset(&set, SIGTERM, SIGINT, SIGHUP)
        _ = try Sys.check(ag_block_signals(&set), "sigprocmask", "signals")
        let fd = try Sys.check(signalfd(-1, &set, Int32(SFD_NONBLOCK | SFD_CLOEXEC)), "signalfd", "signals")
        try register(fd) { _ in
            var info = signalfd_siginfo()
            while read(fd, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
                handler(Int32(info.ssi_signo))
            }
        }
    }

    /// Asks `run` to return after the current wake-up.
    public func stop() { stopping = true }

    /// Waits for and dispatches events until `stop()`. `deadline` may name
    /// an extra time (monotonic nanoseconds) the loop should wake at.
    public func run(deadline: () -> Int64? = { nil }) {
        stopping = false
        while !stopping {
            let now = Sys.monotonicNanoseconds()
            var wake = now + 1_000_000_000
            for t in timers where t.deadline < wake { wake = t.deadline }
            if let d = deadline(), d < wake { wake = d }
            let timeoutMs = Int32(max(0, min(1000, (wake - now + 999_999) / 1_000_000)))
            let n = epoll_wait(epfd, events, Int32(EventLoop.maxEvents), timeoutMs)
            if n > 0 {
                for i in 0..<Int(n) {
                    let e = events[i]
                    let fd = Int(e.data.fd)
                    if fd < handlers.count { handlers[fd]?(e.events) }
                }
            }
            fireTimers()
        }
    }

    private func fireTimers() {
        guard !timers.isEmpty else { return }
        let now = Sys.monotonicNanoseconds()
        guard timers.contains(where: { $0.deadline <= now }) else { return }
        let due = timers.filter { $0.deadline <= now }
        guard !due.isEmpty else { return }
        timers.removeAll { $0.deadline <= now }
        for t in due { t.action() }
    }
}
