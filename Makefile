# Anygate: `make demo` and `make test` do all set-up on a fresh Debian
# machine with the Swift toolchain (see README.md).

SWIFT ?= swift
# System packages the build, the tests and the demo use.
APT_PACKAGES := libpcap-dev libnl-3-dev libnl-route-3-dev libssl-dev pkg-config iproute2 iputils-ping netcat-openbsd iperf3 ethtool curl tcpdump tshark systemd libcap2-bin util-linux python3 \
	nftables strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins bird2

.PHONY: all deps build test fuzz demo demo-router bench bench-e2e bench-e2e-tunnel bench-mirror clean

all: build

# Installs whatever of APT_PACKAGES is missing (apt-get update first, once).
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing system packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "==> system packages present"; fi

build: deps
	@echo "==> building (debug)"
	$(SWIFT) build

test: deps
	@echo "==> building tests"
	$(SWIFT) build --build-tests
	@echo "==> running unit, topology, property, daemon and system tests (system tests need root and /dev/net/tun)"
	$(SWIFT) test --skip-build --disable-xctest
	@echo "==> ThreadSanitizer: the net-channel tests, built apart in .build-tsan (a report fails the run)"
	$(SWIFT) build --build-tests --sanitize=thread --build-path .build-tsan
	TSAN_OPTIONS=halt_on_error=1 $(SWIFT) test --skip-build --disable-xctest --sanitize=thread --build-path .build-tsan --filter 'AnygateHostTests'
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=8

# libFuzzer harnesses for every parser, Stack.receive, the config reader
# and the control protocol (FUZZING.md), built apart in .build-fuzz;
# each runs FUZZ_SECONDS from its seed corpus (FUZZ_JOBS processes).
# swiftc keeps only the last -sanitize= it is given, so SwiftPM's two
# flags leave Swift code with AddressSanitizer and no coverage: the
# coverage is asked for by name (scripts/fuzz.sh checks it is there).
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
fuzz: deps
	@echo "==> building the fuzz harnesses (release, libFuzzer and AddressSanitizer) in .build-fuzz"
	ANYGATE_FUZZ=1 $(SWIFT) build -c release --build-path .build-fuzz --product anygate-fuzz --sanitize=fuzzer --sanitize=address \
	  -Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table -Xswiftc -enable-testing
	@echo "==> fuzzing each harness for $(FUZZ_SECONDS) s; a crash fails the run and keeps its input in Fuzz/artifacts/"
	./scripts/fuzz.sh .build-fuzz/release/anygate-fuzz $(FUZZ_SECONDS) $(FUZZ_JOBS)

# The appliance's main job: two sites joined by a GRE tunnel between two
# gateways. As root with /dev/net/tun, real anygated daemons between
# network namespaces; otherwise the same topology in-process.
demo: deps
	@echo "==> building (release)"
	$(SWIFT) build -c release
	@if [ "$$(id -u)" = 0 ] && [ -c /dev/net/tun ]; then \
	  echo "==> two gateways and a GRE tunnel between network namespaces (root and /dev/net/tun present)"; \
	  ./scripts/demo-two-sites.sh .build/release; \
	else \
	  echo "==> the two-site GRE demo in-process (the namespace demo needs root and /dev/net/tun)"; \
	  ./.build/release/anygate-demo; \
	fi

# One gateway between two hosts, on real interfaces (root).
demo-router: deps
	$(SWIFT) build -c release
	./scripts/demo-namespaces.sh .build/release

# Benchmarks live in their own package so that `make test` does not build them.
bench: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark --format markdown

# End-to-end: anygated between namespaces against Linux forwarding (root).
bench-e2e: deps
	./Benchmarks/e2e.sh

# End-to-end GRE: plain forwarding and the tunnel through the same two daemons (root).
bench-e2e-tunnel: deps
	./Benchmarks/e2e-tunnel.sh
	ENCAP=gre-in-udp ./Benchmarks/e2e-tunnel.sh

# Route import through the netlink mirror: 100k and 1M routes (root).
bench-mirror: deps
	./Benchmarks/mirror-import.sh 100000 1000000

clean:
	rm -rf .build Benchmarks/.build
