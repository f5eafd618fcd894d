import AnygateDaemon
import Foundation
import Testing
import Yams

/// The deployment material under deploy/: every YAML file parses, the
/// anygated configs in it are ones the daemon accepts, and the manifests
/// grant what the daemon needs.
@Suite("Deploy: manifests and example configs")
struct DeployTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let deploy = DeployTests.root.appendingPathComponent("deploy")

    func yamlFiles() -> [URL] {
        let e = FileManager.default.enumerator(at: deploy, includingPropertiesForKeys: nil)
        return (e?.allObjects as? [URL] ?? []).filter { ["yaml", "yml"].contains($0.pathExtension) }.sorted { $0.path < $1.path }
    }

    func documents(_ url: URL) throws -> [[String: Any]] {
        let text = try String(contentsOf: url, encoding: .utf8)
        return try Yams.load_all(yaml: text).compactMap { $0 as? [String: Any] }
    }

    @Test("every YAML file under deploy/ parses, each document a mapping")
    func allParse() throws {
        let files = yamlFiles()
        #expect(files.count >= 5, "\(files.map(\.lastPathComponent))")
        for f in files {
            let docs = try documents(f)
            #expect(!docs.isEmpty, "\(f.path): no mapping documents")
        }
    }

    @Test("the ConfigMap's anygate.yaml and the compose sites' configs are valid anygated configs")
    func configsValid() throws {
        let cm = try documents(deploy.appendingPathComponent("kubernetes/configmap.yaml"))
        let data = try #require((cm.first?["data"] as? [String: Any])?["anygate.yaml"] as? String)
        let c = try ConfigReader(file: "configmap").parse(data)
        #expect(c.tunnels.count == 1 && c.interfaces.count == 2)
        for site in ["site-a", "site-b"] {
            let text = try String(contentsOf: deploy.appendingPathComponent("compose/\(site).yaml"), encoding: .utf8)
            let s = try ConfigReader(file: site).parse(text)
            #expect(s.tunnels.first?.tunnel.key == 7)
        }
    }

    @Test("the DaemonSet grants NET_ADMIN and NET_RAW, drops the rest, mounts /dev/net/tun and the ConfigMap")
    func daemonSet() throws {
        let docs = try documents(deploy.appendingPathComponent("kubernetes/daemonset.yaml"))
        let ds = try #require(docs.first { $0["kind"] as? String == "DaemonSet" })
        let pod = try #require(((ds["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any])
        let container = try #require((pod["containers"] as? [[String: Any]])?.first)
        let caps = (container["securityContext"] as? [String: Any])?["capabilities"] as? [String: Any]
        #expect(Set(caps?["add"] as? [String] ?? []) == ["NET_ADMIN", "NET_RAW"])
        #expect(caps?["drop"] as? [String] == ["ALL"])
        let volumes = pod["volumes"] as? [[String: Any]] ?? []
        #expect(volumes.contains { ($0["hostPath"] as? [String: Any])?["path"] as? String == "/dev/net/tun" })
        #expect(volumes.contains { ($0["configMap"] as? [String: Any])?["name"] as? String == "anygate-config" })
        // Generated MACs persist: the state directory is a node directory, not the container's layer.
        let state = try #require(volumes.first { ($0["hostPath"] as? [String: Any])?["path"] as? String == "/var/lib/anygate" })
        let mounts = container["volumeMounts"] as? [[String: Any]] ?? []
        #expect(mounts.contains { $0["name"] as? String == state["name"] as? String && $0["mountPath"] as? String == "/var/lib/anygate" })
    }

    @Test("compose: both gateways get the capabilities; the sites' tunnels point at each other")
    func compose() throws {
        let doc = try #require(try documents(deploy.appendingPathComponent("compose/compose.yaml")).first)
        let services = doc["services"] as? [String: Any] ?? [:]
        for gw in ["gw-a", "gw-b"] {
            let s = services[gw] as? [String: Any] ?? [:]
            #expect(Set(s["cap_add"] as? [String] ?? []) == ["NET_ADMIN", "NET_RAW"], "\(gw)")
            let volumes = s["volumes"] as? [String] ?? []
            #expect(volumes.contains { $0.hasSuffix(":/var/lib/anygate") }, "\(gw): its own state volume")
        }
        let a = try ConfigReader(file: "a").parse(String(contentsOf: deploy.appendingPathComponent("compose/site-a.yaml"), encoding: .utf8))
        let b = try ConfigReader(file: "b").parse(String(contentsOf: deploy.appendingPathComponent("compose/site-b.yaml"), encoding: .utf8))
        #expect(a.tunnels.first?.tunnel.remote == b.tunnels.first?.tunnel.local)
        #expect(b.tunnels.first?.tunnel.remote == a.tunnels.first?.tunnel.local)
    }
}
