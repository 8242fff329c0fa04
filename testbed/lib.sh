# Shared by testbed/up, testbed/down and testbed/restart. Source it; do not run it.
#
# Every address the lab uses lives inside the network namespaces below; nothing
# here changes the machine's root namespace (routes, links, DNS, firewall).
# The one thing the lab runs in the root namespace is a loopback-only TCP proxy
# (127.0.0.1:$KTLAB_API_PORT) that carries the API server out of the lab.

set -euo pipefail

TESTBED_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KTLAB_STATE=${KTLAB_STATE:-/run/ktlab}
KTLAB_API_PORT=${KTLAB_API_PORT:-6443}
KT_CACHE=${KT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kt}

HOST_NS=ktlab-host
LAPTOP_NS=ktlab-laptop
NODE_NAME=ktlab-node
NODE_IP=10.88.0.1
LAPTOP_HOST_IP=10.88.255.1
LAPTOP_IP=10.88.255.2
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16

PKI=$KTLAB_STATE/pki
LOGS=$KTLAB_STATE/logs
PIDS=$KTLAB_STATE/pids
BIN=$KTLAB_STATE/bin

say() { printf '\033[1m[lab]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[lab] error:\033[0m %s\n' "$*" >&2; exit 1; }

need_root() {
	[ "$(id -u)" = 0 ] || die "the lab creates network namespaces and must run as root (try: sudo $0)"
}

# ensure_packages installs the Debian packages the lab needs when a command is missing.
ensure_packages() {
	local missing=()
	command -v ip >/dev/null || missing+=(iproute2)
	command -v iptables-restore >/dev/null || missing+=(iptables)
	command -v conntrack >/dev/null || missing+=(conntrack)
	command -v nsenter >/dev/null || missing+=(util-linux)
	command -v curl >/dev/null || missing+=(curl)
	command -v getent >/dev/null || missing+=(libc-bin)
	command -v pkill >/dev/null || missing+=(procps)
	[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
	command -v ssh >/dev/null || missing+=(openssh-client)
	# VPN-mode tests run plain programs in the laptop namespace.
	command -v ping >/dev/null || missing+=(iputils-ping)
	command -v python3 >/dev/null || missing+=(python3)
	command -v dig >/dev/null || missing+=(dnsutils)
	command -v setpriv >/dev/null || missing+=(util-linux)
	# testbed/laptop-resolved: a D-Bus system bus of its own for systemd-resolved.
	command -v dbus-daemon >/dev/null || missing+=(dbus-daemon)
	[ -f /usr/share/dbus-1/system.conf ] || missing+=(dbus-system-bus-common)
	command -v dpkg-deb >/dev/null || missing+=(dpkg)
	# kt-ffi's tests compile C programs against libkt (pkg-config) and run them under valgrind.
	command -v cc >/dev/null || missing+=(gcc libc6-dev)
	command -v pkg-config >/dev/null || missing+=(pkg-config)
	command -v valgrind >/dev/null || missing+=(valgrind)
	if [ ${#missing[@]} -gt 0 ]; then
		say "installing Debian packages: ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
	command -v go >/dev/null || die "Go is not installed; the lab builds Kubernetes from Go modules (install Go 1.24 or later)"
}

# Version stamps the upstream build would set (kubectl version, /version, user agents).
K8S_VERSION=v1.34.4
LAB_LDFLAGS=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	LAB_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=34"
	LAB_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
done

# lab_key names the cache entry of the lab binary: a hash of every input of the build.
lab_key() {
	(
		cd "$TESTBED_DIR"
		go version
		echo "$LAB_LDFLAGS"
		cat go.mod go.sum
		find . -name '*.go' -not -path './e2e/*' | LC_ALL=C sort | xargs sha256sum
	) | sha256sum | cut -c1-16
}

# build_lab puts the ktlab binary in the cache (building it only when missing)
# and links it, plus per-component names, into $BIN.
build_lab() {
	local key dir
	key=$(lab_key)
	dir=$KT_CACHE/lab/$key
	if [ ! -x "$dir/ktlab" ]; then
		say "building the lab binary (Kubernetes v1.34.4, etcd v3.6.5, CoreDNS v1.13.1; cold builds take a long time on 2 cores) -> $dir"
		local t0=$SECONDS
		mkdir -p "$dir"
		(cd "$TESTBED_DIR" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$LAB_LDFLAGS" -o "$dir/ktlab.tmp" ./cmd/ktlab)
		mv "$dir/ktlab.tmp" "$dir/ktlab"
		say "built in $((SECONDS - t0)) s"
		# keep the three newest builds
		ls -1dt "$KT_CACHE"/lab/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
	else
		say "lab binary from cache: $dir/ktlab"
	fi
	mkdir -p "$BIN"
	ln -sfn "$dir/ktlab" "$BIN/ktlab"
	for c in kubectl etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy coredns; do
		ln -sfn "$dir/ktlab" "$BIN/$c"
	done
	KTLAB=$BIN/ktlab
}

# Rust build output lives outside the clone, keyed by the compiler version.
cargo_target_dir() {
	local v
	v=$(rustc --version | tr ' ()' '___')
	echo "${CARGO_TARGET_DIR:-$KT_CACHE/target/$v}"
}

# build_shadow builds kt's in-cluster agent as it ships (kt-shadow/build-static: static,
# profile `shadow`), which the lab runs for image kt.invalid/kt-shadow
# (testbed/images.yaml), installs it where the pod's non-root user can execute it, and
# exports KT_SHADOW_BIN. The same bytes go to $KT_CACHE/agent/kt-shadow, the agent kt
# ships by default: the env file's KT_AGENT_EMBED names that directory, so a kt built in
# that shell embeds it. It lives outside $KTLAB_STATE (which `down` removes) and is
# replaced only when its bytes change: kt-core's build script reruns when the file's
# modification time moves, and everything above kt-core would rebuild on every `up`. The --target build
# lands in <target>/x86_64-unknown-linux-gnu/shadow/, beside CI's builds in the same
# cache dir.
build_shadow() {
	command -v cargo >/dev/null || { [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"; }
	command -v cargo >/dev/null || die "cargo is not installed; the lab builds kt-shadow with it (install Rust with rustup)"
	local target built
	target=$(cargo_target_dir)
	say "building kt-shadow (static, profile shadow) in $target"
	built=$(CARGO_TARGET_DIR=$target "$TESTBED_DIR/../kt-shadow/build-static" --check) ||
		die "building kt-shadow failed (kt-shadow/build-static says why above)"
	say "kt-shadow: $(tail -n 1 <<<"$built")"
	mkdir -p "$BIN"
	install -m 0755 "$target/x86_64-unknown-linux-gnu/shadow/kt-shadow" "$BIN/kt-shadow.new"
	mv -f "$BIN/kt-shadow.new" "$BIN/kt-shadow"
	export KT_SHADOW_BIN=$BIN/kt-shadow
	local agent=$KT_CACHE/agent
	mkdir -p "$agent"
	if ! cmp -s "$BIN/kt-shadow" "$agent/kt-shadow"; then
		install -m 0755 "$BIN/kt-shadow" "$agent/kt-shadow.new"
		mv -f "$agent/kt-shadow.new" "$agent/kt-shadow"
	fi
	export KT_AGENT_EMBED=$agent
}

# The cargo-deny version testbed/check installs when the machine has none.
CARGO_DENY_VERSION=0.20.2

# deny_check runs cargo-deny over the workspace (deny.toml): licenses, bans and sources,
# then advisories against the RustSec database. The database is fetched from GitHub;
# where GitHub cannot be reached, the copy fetched last is used and its date printed.
# With no copy at all the check fails: advisories never pass unchecked.
deny_check() {
	local root=$1 db_dir
	command -v cargo-deny >/dev/null || {
		say "installing cargo-deny $CARGO_DENY_VERSION (once)"
		cargo install -q --locked "cargo-deny@$CARGO_DENY_VERSION" || return 1
	}
	(cd "$root" && cargo deny --locked check licenses bans sources) || return 1
	if (cd "$root" && cargo deny --locked fetch db >/dev/null 2>&1); then
		(cd "$root" && cargo deny --locked check advisories)
		return
	fi
	db_dir=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/advisory-db-*/.git 2>/dev/null | head -1)
	if [ -z "$db_dir" ]; then
		printf '\033[31m[lab] error:\033[0m %s\n' "the RustSec advisory database cannot be fetched (github.com unreachable?) and no earlier copy exists in ${CARGO_HOME:-$HOME/.cargo}/advisory-dbs: advisories NOT checked" >&2
		return 1
	fi
	say "advisory database unreachable; using the local copy of $(git -C "$db_dir/.." log -1 --format=%cs)"
	(cd "$root" && cargo deny --offline --locked check advisories)
}

pid_alive() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

# start NAME NS CMD...: start a component in the background in its own session,
# inside network namespace NS ("-" for the root namespace), logging to $LOGS/NAME.log.
start() {
	local name=$1 ns=$2
	shift 2
	if pid_alive "$name"; then
		say "$name already running (pid $(cat "$PIDS/$name.pid"))"
		return
	fi
	mkdir -p "$LOGS" "$PIDS"
	if [ "$ns" = - ]; then
		setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
	else
		setsid ip netns exec "$ns" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
	fi
	echo $! >"$PIDS/$name.pid"
	say "started $name (pid $!, log $LOGS/$name.log)"
}

# stop NAME: SIGTERM, then SIGKILL after a grace period.
stop() {
	local name=$1 pid i
	[ -f "$PIDS/$name.pid" ] || return 0
	pid=$(cat "$PIDS/$name.pid")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$PIDS/$name.pid"
}

# wait_for DESCRIPTION SECONDS CMD...: poll CMD until it succeeds; on timeout show the logs.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			say "timed out after ${secs}s waiting for $what; recent logs:"
			tail -n 30 "$LOGS"/*.log >&2 || true
			die "$what did not come up (logs in $LOGS)"
		fi
		sleep 0.3
	done
}

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$KTLAB_STATE/admin.kubeconfig" "$@"; }

# Component command lines. Each runs inside $HOST_NS unless said otherwise.
start_etcd() {
	start etcd "$HOST_NS" "$KTLAB" etcd --name ktlab --data-dir "$KTLAB_STATE/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster ktlab=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
}

start_apiserver() {
	start kube-apiserver "$HOST_NS" "$KTLAB" kube-apiserver \
		--etcd-servers http://127.0.0.1:2379 \
		--advertise-address "$NODE_IP" --bind-address 0.0.0.0 --secure-port 6443 \
		--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--client-ca-file "$PKI/ca.crt" \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--authorization-mode Node,RBAC \
		--enable-admission-plugins NodeRestriction \
		--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
		--kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority "$PKI/ca.crt" \
		--kubelet-preferred-address-types InternalIP \
		--allow-privileged=true --profiling=false --event-ttl 1h -v 1
}

start_controller_manager() {
	start kube-controller-manager "$HOST_NS" "$KTLAB" kube-controller-manager \
		--kubeconfig "$PKI/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$PKI/controller-manager.kubeconfig" \
		--authorization-kubeconfig "$PKI/controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --leader-elect=false \
		--use-service-account-credentials=true \
		--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
		--cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
		--allocate-node-cidrs=true --cluster-cidr "$CLUSTER_CIDR" --node-cidr-mask-size 24 \
		--service-cluster-ip-range "$SERVICE_CIDR" --profiling=false -v 1
}

start_scheduler() {
	start kube-scheduler "$HOST_NS" "$KTLAB" kube-scheduler \
		--kubeconfig "$PKI/scheduler.kubeconfig" \
		--authentication-kubeconfig "$PKI/scheduler.kubeconfig" \
		--authorization-kubeconfig "$PKI/scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --leader-elect=false --profiling=false -v 1
}

start_node() {
	start node "$HOST_NS" env KT_SHADOW_BIN="${KT_SHADOW_BIN:-}" "$KTLAB" node \
		--kubeconfig "$PKI/node.kubeconfig" --node-name "$NODE_NAME" --node-ip "$NODE_IP" \
		--state-dir "$KTLAB_STATE/node" --images "$TESTBED_DIR/images.yaml" \
		--tls-cert-file "$PKI/kubelet.crt" --tls-private-key-file "$PKI/kubelet.key" \
		--client-ca-file "$PKI/ca.crt" --ktlab "$KTLAB"
}

start_proxy() {
	# kube-proxy exits when its config file changes under it: write it only when starting.
	pid_alive kube-proxy && return 0
	cat >"$KTLAB_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $PKI/kube-proxy.kubeconfig
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# conntrack sysctls are read-only inside a network namespace: leave them alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  syncPeriod: 30s
  minSyncPeriod: 0s
EOF
	start kube-proxy "$HOST_NS" "$KTLAB" kube-proxy --config "$KTLAB_STATE/kube-proxy.yaml" -v 1
}

# The laptop's own DNS server (its "office network" resolver), at the node end of
# the laptop's link: it knows only corp.test names. kt's VPN mode must keep answering
# them through it while cluster names go to the cluster.
start_laptop_dns() {
	pid_alive laptop-dns && return 0
	cat >"$KTLAB_STATE/laptop-dns.Corefile" <<EOF
corp.test:53 {
    bind $LAPTOP_HOST_IP
    hosts {
        $LAPTOP_HOST_IP gateway.corp.test
        192.0.2.80 intranet.corp.test
    }
}
EOF
	start laptop-dns "$HOST_NS" "$KTLAB" coredns -conf "$KTLAB_STATE/laptop-dns.Corefile"
}

# ensure_resolved prints the directory holding systemd-resolved and resolvectl of
# the machine's systemd version ($KT_CACHE/resolved/<version>): the distribution's
# package, downloaded with apt-get and unpacked, never installed (installing it
# would take over the machine's own /etc/resolv.conf). testbed/laptop-resolved runs it.
ensure_resolved() {
	local version dir tmp
	version=$(dpkg-query -W -f='${Version}' systemd 2>/dev/null) ||
		die "the systemd package is not installed; the laptop's systemd-resolved must match its libsystemd-shared"
	dir=$KT_CACHE/resolved/$version
	if [ ! -x "$dir/lib/systemd/systemd-resolved" ]; then
		say "downloading systemd-resolved $version (unpacked in $dir, not installed)"
		mkdir -p "$KT_CACHE/resolved"
		tmp=$(mktemp -d "$KT_CACHE/resolved/.download.XXXXXX")
		if ! (cd "$tmp" && apt-get download -q=2 "systemd-resolved=$version" >&2 &&
			dpkg-deb -x systemd-resolved_*.deb root); then
			rm -rf "$tmp"
			die "cannot download systemd-resolved=$version (apt-get download); run apt-get update, or check the network"
		fi
		# Another run may have unpacked it meanwhile: either copy will do.
		mv -T "$tmp/root" "$dir" 2>/dev/null || true
		rm -rf "$tmp"
	fi
	echo "$dir"
}

# The laptop's view: a kubeconfig through the laptop's link, and the resolv.conf and
# hosts files that `ip netns exec $LAPTOP_NS` bind-mounts over /etc's.
write_laptop_files() {
	sed "s|https://127.0.0.1:$KTLAB_API_PORT|https://$LAPTOP_HOST_IP:6443|" \
		"$KTLAB_STATE/admin.kubeconfig" >"$KTLAB_STATE/laptop.kubeconfig"
	mkdir -p "/etc/netns/$LAPTOP_NS"
	if [ ! -f "/etc/netns/$LAPTOP_NS/resolv.conf" ]; then
		printf '# the laptop network namespace of the kt lab\nnameserver %s\nsearch corp.test\n' \
			"$LAPTOP_HOST_IP" >"/etc/netns/$LAPTOP_NS/resolv.conf"
	fi
	if [ ! -f "/etc/netns/$LAPTOP_NS/hosts" ]; then
		printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\tlaptop\n' \
			"$LAPTOP_IP" >"/etc/netns/$LAPTOP_NS/hosts"
	fi
}

start_portproxy() {
	start portproxy - "$KTLAB" portproxy --listen "127.0.0.1:$KTLAB_API_PORT" \
		--netns "/run/netns/$HOST_NS" --target "$NODE_IP:6443"
}
