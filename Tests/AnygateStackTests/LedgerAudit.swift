import AnygateStack
import Testing

/// Checks, after each test of a suite, that every stack the test built on a
/// `MemoryNetwork` accounted for every packet (`PacketLedger`) and that no
/// packet buffer leaked: an issue per broken equation.
struct LedgerAudit: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(for test: Test, testCase: Test.Case?,
                      performing function: @Sendable () async throws -> Void) async throws {
        guard !test.isSuite else { return try await function() }
        let audit = MemoryNetwork.Audit()
        try await MemoryNetwork.$audit.withValue(audit) { try await function() }
        for v in audit.violations() { Issue.record(Comment(rawValue: "packet ledger: \(v)")) }
    }
}

extension Trait where Self == LedgerAudit {
    /// Every packet accounted for after each test (see `LedgerAudit`).
    static var ledgerAudited: Self { LedgerAudit() }
}
