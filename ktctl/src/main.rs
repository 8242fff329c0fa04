//! `ktctl`: kt from a terminal.
//!
//! ```text
//! ktctl connect -n dev                 # proxy mode: SOCKS5 + HTTP proxies, no root needed
//! sudo ktctl connect -n dev --mode vpn # VPN mode: every program reaches the cluster
//! ktctl exchange deploy/web --expose 8080:80  # the cluster's calls to web reach 127.0.0.1:8080
//! ktctl preview mine --expose 8080     # a new Service `mine` in the cluster for 127.0.0.1:8080
//! ktctl mesh svc/web --expose 8080:80  # only web's requests with my header reach 127.0.0.1:8080
//! ktctl clean --dry-run                # what dead sessions left in the namespace
//! ktctl recover deploy/web             # put back a target a dead session left swapped
//! sudo ktctl recover                   # put back system DNS a crashed ktctl left changed
//! ```
//!
//! Everything is done by `kt-core`; this binary parses flags, prints progress and waits
//! for Ctrl-C (or SIGTERM/SIGHUP), then closes the session (and the swap, preview or mesh),
//! which puts back and removes what it made.
//!
//! Values kt-core knows how to read (`--dns`, `--include-cidr`, `--exclude-cidr`,
//! `--flavour`) are read by kt-core's own parsers, as every kt front end reads them.
//! A kt failure prints `error[<kind>]: <message>` and exits with the kind's own
//! status ([`exit_status`]).

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kt_core::{
    ConnectOptions, DnsMode, ErrorKind, Expose, ExposeOptions, IpNet, Mesh, MeshOptions, MeshRule,
    PortMap, ServiceType, Session, ShadowFlavour, Swap, SwapMode, SwapOptions, SystemPaths,
    VpnOptions,
};

/// What `--help` says about exit statuses (the table is [`exit_status`]'s).
const EXIT_STATUS_HELP: &str = "\
Exit status: 0 success; 1 a failure outside kt (the runtime could not start); 2 a
usage error (bad flags or values); otherwise the kind of kt failure, also printed as
`error[<kind>]: ...` on stderr:
  65 invalid_argument   5 closed          6 timeout        7 needs_capability
   8 forbidden          9 not_found      10 kubeconfig    11 api_unreachable
  12 api               13 shadow         14 tunnel        15 dns
  16 unsupported       17 io             18 vpn           19 cleanup
  22 internal          23 connect           24 conflict
(the kind's stable code, which is also libkt's KT_STATUS_* number; 64 + code where
the code is 1 or 2, which mean something else here).";

/// Work from your machine as if inside a Kubernetes cluster.
#[derive(Debug, Parser)]
#[command(name = "ktctl", version, about, after_long_help = EXIT_STATUS_HELP)]
struct Cli {
    /// Log kt's internals (set RUST_LOG for finer control).
    #[arg(short, long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reach the cluster's Services and pods from this machine until Ctrl-C.
    Connect(Box<ConnectArgs>),
    /// Send a workload's or Service's traffic in the cluster to this machine until
    /// Ctrl-C, then put everything back exactly as it was.
    #[command(visible_alias = "swap", after_long_help = EXCHANGE_HELP)]
    Exchange(Box<ExchangeArgs>),
    /// Make a new Service in the cluster whose traffic reaches this machine until
    /// Ctrl-C, then remove it.
    #[command(visible_alias = "expose")]
    Preview(Box<PreviewArgs>),
    /// Send only a Service's requests that carry your header (or match a rule) to this
    /// machine until Ctrl-C; everyone else's keep reaching the Service's pods.
    #[command(after_long_help = MESH_HELP)]
    Mesh(Box<MeshArgs>),
    /// Put back and remove what dead kt sessions left in the namespace.
    ///
    /// Swapped selectors and replica counts are put back; shadow pods, their
    /// identities and Services are removed. Live sessions are left alone.
    Clean(CleanArgs),
    /// Put back system DNS settings, or with a target what a dead swap left changed.
    ///
    /// Without a target: put back system DNS settings (resolv.conf, hosts,
    /// /etc/resolver) that a ktctl killed without a chance to clean up left behind
    /// (`connect` does this by itself). With a target (`deploy/web`, `sts/db`,
    /// `svc/web` or a bare name): put back that target, which a swap whose session
    /// died left changed (refused while a live session holds it).
    #[command(after_long_help = RECOVER_HELP)]
    Recover(RecoverArgs),
}

/// What `exchange --help` adds.
const EXCHANGE_HELP: &str = "\
The target is deploy/NAME, sts/NAME, svc/NAME, or a bare name (a Service of that name,
else a Deployment, else a StatefulSet). Each --expose local[:remote] sends the
cluster's connections to the target's port `remote` (a Service port, a container port
or a port name; default: the same number as local) to 127.0.0.1:local here.

If ktctl dies without restoring, the swap shadow puts the cluster back by itself once
--restore-ttl seconds pass without a heartbeat; `ktctl clean` and `ktctl recover
<target>` do it by hand. A target another live session holds is refused (exit status
24, conflict), naming the holder.";

/// What `mesh --help` adds.
const MESH_HELP: &str = "\
The target is svc/NAME, or a workload (deploy/NAME, sts/NAME, a bare name) one Service
selects. Each --expose local[:remote] sends the matching requests to the Service's
pods' port `remote` (a Service port, a container port or a port name; default: the
same number as local) to 127.0.0.1:local here. ktctl prints the header to send
(`send header  version: 3f9c1a2b`); requests without it reach the original pods.

Several developers mesh one Service at once, each with their own header value; the
first one's ktctl starts the Service's router (a kt-shadow pod), the last one's puts
the Service back exactly and removes it. A header value another developer already
uses is refused (exit status 24, conflict), naming them. If ktctl dies, its rule is
removed once --restore-ttl seconds pass without a heartbeat (the last one's also puts
the Service back); `ktctl clean` does it by hand. TLS ports are passed through to the
original pods unrouted.

Examples:
  ktctl mesh svc/web --expose 8080:80                      # header `version`, a random value
  ktctl mesh svc/web --expose 8080:80 --versionMark version:alice
  ktctl mesh svc/web --expose 8080:80 --rule 'x-dev~^alice && /api'";

/// What `recover --help` adds.
const RECOVER_HELP: &str = "\
Examples:
  sudo ktctl recover                 put back system DNS (needs root)
  ktctl recover deploy/web -n dev    put back what a dead swap of deploy/web left changed
  ktctl recover web --dry-run        only say what would be put back";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// SOCKS5 and HTTP proxies on 127.0.0.1 (no privileges needed).
    Proxy,
    /// A tun device with routes to the cluster, plus system DNS (needs CAP_NET_ADMIN).
    Vpn,
}

/// Which cluster and namespace: the flags every command that talks to the cluster has.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// Namespace to work in (default: the context's).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(short = 'c', long)]
    kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig.
    #[arg(long)]
    context: Option<String>,
}

impl ClusterArgs {
    fn is_set(&self) -> bool {
        self.namespace.is_some() || self.kubeconfig.is_some() || self.context.is_some()
    }

    fn apply(&self, mut opts: ConnectOptions) -> ConnectOptions {
        if let Some(ns) = &self.namespace {
            opts = opts.namespace(ns);
        }
        if let Some(path) = &self.kubeconfig {
            opts = opts.kubeconfig(path);
        }
        if let Some(ctx) = &self.context {
            opts = opts.context(ctx);
        }
        opts
    }
}

/// The shadow pod's flags, shared by the commands that open a session.
#[derive(Debug, Args)]
struct ShadowArgs {
    /// The shadow's SSH server: kt-shadow (kt's own agent: restricted Pod Security,
    /// UDP relay) or openssh (a stock sshd, runs as root in the pod; TCP only).
    #[arg(long, default_value = "kt-shadow", value_parser = parse_flavour)]
    flavour: ShadowFlavour,
    /// Run the shadow from this image (default: none, kt ships its agent into the
    /// namespace, once, and runs it on an image the node already has; KT_SHADOW_IMAGE
    /// sets one). An image built from kt-shadow/Dockerfile, pinned by digest
    /// (registry/kt-shadow@sha256:...); --flavour openssh needs one (any with sshd).
    #[arg(short, long, value_parser = non_empty)]
    image: Option<String>,
    /// The image kt's shipped agent runs on when no running pod in the namespace lends
    /// its own (default: registry.k8s.io/pause:3.10). Not used with --image.
    #[arg(long, value_name = "IMAGE", value_parser = non_empty)]
    base_image: Option<String>,
    /// A directory with kt-shadow (as kt-shadow/build-static makes it) to ship
    /// instead of the agent built into ktctl (default: KT_AGENT_DIR); a kt-loader
    /// there replaces the built-in loader.
    #[arg(long, value_name = "DIR", value_parser = non_empty_path)]
    agent_dir: Option<PathBuf>,
    /// How long the shadow pod waits for a vanished ktctl (killed, or off the network)
    /// before it ends itself, in seconds; the next session in the namespace deletes it.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    shadow_timeout: u64,
}

impl ShadowArgs {
    /// The options of a proxy-mode session with these flags and `cluster`'s.
    fn options(&self, cluster: &ClusterArgs) -> ConnectOptions {
        let mut opts = ConnectOptions::new()
            .flavour(self.flavour)
            .shadow_heartbeat_timeout(Some(std::time::Duration::from_secs(self.shadow_timeout)))
            .on_event(|e| eprintln!("ktctl: {e}"));
        if let Some(image) = &self.image {
            opts = opts.shadow_image(image);
        }
        if let Some(image) = &self.base_image {
            opts = opts.base_image(image);
        }
        if let Some(dir) = &self.agent_dir {
            opts = opts.agent_dir(dir);
        }
        cluster.apply(opts)
    }
}

#[derive(Debug, Args)]
struct ConnectArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    shadow: ShadowArgs,
    /// proxy (default) or vpn.
    #[arg(long, value_enum, default_value_t = Mode::Proxy)]
    mode: Mode,
    /// VPN mode: how programs resolve cluster names: auto, resolv-conf, resolved,
    /// resolver-dir, hosts, hosts:<ns1>,<ns2>, or off.
    #[arg(long, default_value = "auto", value_parser = parse_dns_mode)]
    dns: DnsMode,
    /// VPN mode: also route these ranges, CIDRs or single addresses (comma separated
    /// or repeated).
    #[arg(long, value_delimiter = ',', value_parser = parse_net)]
    include_cidr: Vec<IpNet>,
    /// VPN mode: never route these ranges (CIDRs or single addresses).
    #[arg(long, value_delimiter = ',', value_parser = parse_net)]
    exclude_cidr: Vec<IpNet>,
    /// VPN mode: route only --include-cidr; don't ask the cluster for its ranges.
    #[arg(long)]
    no_discovery: bool,
    /// VPN mode: the tun device's name (default kt0, kt1, ...).
    #[arg(long)]
    tun_name: Option<String>,
    /// VPN mode: the tun device's own address.
    #[arg(long)]
    tun_address: Option<Ipv4Addr>,
    /// VPN mode: the tun device's MTU.
    #[arg(long)]
    mtu: Option<u16>,
    /// VPN mode: where the local DNS server listens (default 127.0.0.1:53 when free).
    /// It answers only this machine (loopback, the tun address, this address).
    #[arg(long)]
    dns_listen: Option<SocketAddr>,
    /// SOCKS5 proxy port on 127.0.0.1 (default: a free one).
    #[arg(long, default_value_t = 0)]
    socks5_port: u16,
    /// HTTP proxy port on 127.0.0.1 (default: a free one).
    #[arg(long, default_value_t = 0)]
    http_port: u16,
    /// Make the SOCKS5 and HTTP proxies require random credentials made for this
    /// session; the printed proxy URLs carry them. Without it, like `kubectl
    /// port-forward`, any local user may use the proxies.
    #[arg(long)]
    proxy_auth: bool,
}

#[derive(Debug, Args)]
struct ExchangeArgs {
    /// What to take the traffic of: deploy/NAME, sts/NAME, svc/NAME or a bare name.
    target: String,
    /// local[:remote]: the cluster's connections to port `remote` of the target arrive
    /// at 127.0.0.1:local (comma separated or repeated; at least one).
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_port_map)]
    expose: Vec<PortMap>,
    /// selector (the Services select the swap shadow; the workload keeps running) or
    /// scale (the workload is scaled to 0 and the shadow carries its pod labels).
    #[arg(long, default_value = "selector", value_parser = parse_swap_mode)]
    mode: SwapMode,
    /// Seconds without a heartbeat after which the swap shadow puts the cluster back
    /// by itself (ktctl killed or off the network); at least 3.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=86_400))]
    restore_ttl: u64,
    /// Swap even when nothing listens on a local port yet (start the process later).
    #[arg(long)]
    skip_local_check: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    shadow: ShadowArgs,
}

#[derive(Debug, Args)]
struct PreviewArgs {
    /// The name of the Service to create (it must not exist).
    name: String,
    /// local[:remote]: the new Service's port `remote` (default: the same number)
    /// reaches 127.0.0.1:local (comma separated or repeated; at least one).
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_port_map)]
    expose: Vec<PortMap>,
    /// The Service's type: ClusterIP (default), NodePort or LoadBalancer.
    #[arg(long = "type", value_parser = parse_service_type, conflicts_with = "external")]
    service_type: Option<ServiceType>,
    /// A LoadBalancer Service (kt-connect's flag; the same as --type LoadBalancer).
    #[arg(long)]
    external: bool,
    /// Create the Service even when nothing listens on a local port yet.
    #[arg(long)]
    skip_local_check: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    shadow: ShadowArgs,
}

#[derive(Debug, Args)]
struct MeshArgs {
    /// The Service to mesh: svc/NAME, or a workload (deploy/NAME, sts/NAME, a bare
    /// name) one Service selects.
    target: String,
    /// local[:remote]: the matching requests to port `remote` of the Service's pods
    /// arrive at 127.0.0.1:local (comma separated or repeated; at least one).
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_port_map)]
    expose: Vec<PortMap>,
    /// kt-connect's mark: `header:value` (or `header=value`), or a bare value of the
    /// header `version`. Default: `version` with a random value.
    #[arg(
        long = "versionMark",
        visible_alias = "version-mark",
        value_name = "MARK",
        value_parser = parse_version_mark
    )]
    version_mark: Option<MeshRule>,
    /// Which requests come here instead of a mark: `header=value`, `header~regex` or
    /// `/path-prefix`, several joined by `&&` (all) or `||` (any).
    #[arg(long, value_parser = parse_mesh_rule, conflicts_with = "version_mark")]
    rule: Option<MeshRule>,
    /// Seconds without a heartbeat after which this machine's rule is removed by
    /// itself (ktctl killed or off the network); at least 3.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=86_400))]
    restore_ttl: u64,
    /// Mesh even when nothing listens on a local port yet (start the process later).
    #[arg(long)]
    skip_local_check: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    shadow: ShadowArgs,
}

#[derive(Debug, Args)]
struct CleanArgs {
    /// Only list what would be put back and removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Args)]
struct RecoverArgs {
    /// The swap target to put back (deploy/NAME, sts/NAME, svc/NAME or a bare name);
    /// none: put back system DNS settings instead.
    target: Option<String>,
    /// Only list what would be put back; change nothing (with a target).
    #[arg(long, requires = "target")]
    dry_run: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// A value that must not be blank (`--image`, `--base-image`).
fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(s.to_owned())
}

/// A path that must not be empty (`--agent-dir`).
fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("must not be empty: name the directory with kt-shadow \
                    (kt-shadow/build-static makes it)"
            .to_owned());
    }
    Ok(PathBuf::from(s))
}

/// Parses one `--expose` item with kt-core's `PortMap` parser.
fn parse_port_map(s: &str) -> Result<PortMap, String> {
    s.parse().map_err(|e: kt_core::Error| e.to_string())
}

/// Parses `mesh --rule` with kt-core's `MeshRule` parser.
fn parse_mesh_rule(s: &str) -> Result<MeshRule, String> {
    s.parse().map_err(|e: kt_core::Error| e.to_string())
}

/// Parses `mesh --versionMark` as kt-connect reads it: `header:value` (or
/// `header=value`), or a bare value of the header `version`; one header only.
fn parse_version_mark(s: &str) -> Result<MeshRule, String> {
    let text = if s.contains([':', '=']) {
        s.to_owned()
    } else {
        format!("version={s}")
    };
    let rule = parse_mesh_rule(&text)?;
    match rule.header() {
        Some((name, value)) if rule.to_string() == format!("{name}={value}") => Ok(rule),
        _ => Err(format!(
            "`{s}` is not a mark: give `header:value` or a value of the header `version` \
             (use --rule for regexes, path prefixes and several clauses)"
        )),
    }
}

/// Parses `exchange --mode` with kt-core's `SwapMode` parser.
fn parse_swap_mode(s: &str) -> Result<SwapMode, String> {
    s.parse().map_err(|e: kt_core::Error| e.to_string())
}

/// Parses `preview --type` with kt-core's `ServiceType` parser.
fn parse_service_type(s: &str) -> Result<ServiceType, String> {
    s.parse().map_err(|e: kt_core::Error| e.to_string())
}

/// Parses `--dns` with kt-core's `DnsMode` parser.
fn parse_dns_mode(s: &str) -> Result<DnsMode, String> {
    s.parse().map_err(|e: kt_core::Error| e.to_string())
}

/// Parses `--include-cidr`/`--exclude-cidr` with kt-core's `parse_net`.
fn parse_net(s: &str) -> Result<IpNet, String> {
    kt_core::parse_net(s).map_err(|e| e.to_string())
}

/// Parses `--flavour` with kt-core's `ShadowFlavour` parser.
fn parse_flavour(s: &str) -> Result<ShadowFlavour, String> {
    s.parse().map_err(|e: kt_core::Error| e.to_string())
}

/// The exit status of a kt failure of `kind`: the kind's stable code (libkt's
/// `KT_STATUS_*` number, all below 64), or 64 + code when the code is 1 or 2 (1 is
/// ktctl's own non-kt failure, 2 clap's usage error). Distinct for every kind.
fn exit_status(kind: ErrorKind) -> u8 {
    let code = kind.code();
    let status = if code <= 2 { 64 + code } else { code };
    u8::try_from(status).unwrap_or(u8::MAX)
}

/// The error's message and each cause it does not already quote.
fn message(e: &kt_core::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let cause = s.to_string();
        if !cause.is_empty() && !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

/// What clap cannot say: `recover` without a target (system DNS) takes no cluster flags.
fn check_usage(cli: &Cli) -> Result<(), clap::Error> {
    if let Command::Recover(args) = &cli.command
        && args.target.is_none()
        && args.cluster.is_set()
    {
        use clap::CommandFactory as _;
        return Err(Cli::command().error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "--namespace, --kubeconfig and --context need a target: `ktctl recover <target> \
             -n NS` puts back a swap target; `ktctl recover` alone puts back system DNS",
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = check_usage(&cli) {
        e.exit();
    }
    init_logging(cli.debug);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ktctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Connect(args) => Box::pin(connect(*args)).await,
            Command::Exchange(args) => Box::pin(exchange(*args)).await,
            Command::Preview(args) => Box::pin(preview(*args)).await,
            Command::Mesh(args) => Box::pin(mesh(*args)).await,
            Command::Clean(args) => clean(args).await,
            Command::Recover(args) => match &args.target {
                None => recover_dns(),
                Some(target) => recover_target(&args, target).await,
            },
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error[{}]: {}", e.kind().name(), message(&e));
            ExitCode::from(exit_status(e.kind()))
        }
    }
}

fn init_logging(debug: bool) {
    let default = if debug {
        "kt=debug,ktctl=debug"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn options(args: &ConnectArgs) -> ConnectOptions {
    let mut opts = args
        .shadow
        .options(&args.cluster)
        .socks5_port(args.socks5_port)
        .http_proxy_port(args.http_port)
        .proxy_auth(args.proxy_auth);
    if args.mode == Mode::Vpn {
        let mut vpn = VpnOptions::new().dns(args.dns.clone());
        for net in &args.include_cidr {
            vpn = vpn.include(*net);
        }
        for net in &args.exclude_cidr {
            vpn = vpn.exclude(*net);
        }
        if args.no_discovery {
            vpn = vpn.no_discovery();
        }
        if let Some(name) = &args.tun_name {
            vpn = vpn.tun_name(name);
        }
        if let Some(addr) = args.tun_address {
            vpn = vpn.address(addr);
        }
        if let Some(mtu) = args.mtu {
            vpn = vpn.mtu(mtu);
        }
        if let Some(addr) = args.dns_listen {
            vpn = vpn.dns_listen(addr);
        }
        opts = opts.vpn(vpn);
    }
    opts
}

async fn connect(args: ConnectArgs) -> Result<(), kt_core::Error> {
    if args.mode == Mode::Proxy && (!args.include_cidr.is_empty() || args.no_discovery) {
        eprintln!("ktctl: note: --include-cidr and --no-discovery only apply to --mode vpn");
    }
    let mut stop = Stop::install();
    let session = tokio::select! {
        s = Session::connect(options(&args)) => s?,
        () = stop.next() => {
            eprintln!("ktctl: interrupted while connecting; what was created has been removed");
            return Ok(());
        }
    };
    print_summary(&session, args.proxy_auth);
    stop.next().await;
    eprintln!("ktctl: disconnecting (interrupt again to leave at once)");
    tokio::select! {
        r = session.close() => r,
        () = stop.next() => {
            // close() restores system DNS first; what may remain is the shadow pod,
            // which ends itself (--shadow-timeout) and the next session deletes.
            eprintln!("ktctl: leaving without waiting for the cluster");
            Ok(())
        }
    }
}

/// What `connect` prints once connected: the proxies, the VPN, and the line that
/// points a shell at the proxies (proxy mode, or whenever the proxies need
/// credentials, which only that line carries).
fn print_summary(session: &Session, proxy_auth: bool) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "connected to namespace {} (shadow pod {})",
        session.namespace(),
        session.pod_name()
    );
    let auth = if proxy_auth {
        " (credentials required: use the URLs below)"
    } else {
        ""
    };
    let _ = writeln!(out, "  socks5      {}{auth}", session.socks5_addr());
    let _ = writeln!(out, "  http proxy  {}{auth}", session.http_proxy_addr());
    if let Some(vpn) = session.vpn() {
        let routes: Vec<String> = vpn.routes.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  vpn         {}: {}", vpn.device, routes.join(", "));
        if let Some(dns) = vpn.dns_addr {
            let _ = writeln!(out, "  dns         {dns} ({})", vpn.dns_detail);
        }
    }
    if session.vpn().is_none() || proxy_auth {
        let _ = writeln!(out, "  for a shell: {}", export_line(session));
    }
    let _ = writeln!(out, "press Ctrl-C to disconnect");
    let _ = out.flush();
}

/// `export ALL_PROXY=... HTTPS_PROXY=... HTTP_PROXY=...` with the session's proxy
/// URLs (and so its proxy credentials, if any).
fn export_line(session: &Session) -> String {
    let http = session.http_proxy_url();
    format!(
        "export ALL_PROXY={} HTTPS_PROXY={http} HTTP_PROXY={http}",
        session.socks5_url()
    )
}

/// The `--expose` ports as `remote -> 127.0.0.1:local` lines, for the summary.
fn print_ports(out: &mut dyn std::io::Write, ports: &[(u16, u16)]) {
    for (local, remote) in ports {
        let _ = writeln!(out, "  port        {remote} -> 127.0.0.1:{local}");
    }
}

/// Opens a session with `opts`, unless a signal comes first (then `None`).
async fn open_session(
    opts: ConnectOptions,
    stop: &mut Stop,
) -> Result<Option<Session>, kt_core::Error> {
    tokio::select! {
        s = Session::connect(opts) => s.map(Some),
        () = stop.next() => {
            eprintln!("ktctl: interrupted while connecting; what was created has been removed");
            Ok(None)
        }
    }
}

/// Runs `start` on the open `session` unless a signal comes first; on failure or a
/// signal, closes the session before returning.
async fn start_on<T>(
    session: &Session,
    stop: &mut Stop,
    start: impl Future<Output = Result<T, kt_core::Error>>,
) -> Result<Option<T>, kt_core::Error> {
    let started = tokio::select! {
        r = start => r.map(Some),
        () = stop.next() => {
            eprintln!("ktctl: interrupted; putting back what was changed");
            Ok(None)
        }
    };
    match started {
        Ok(Some(handle)) => Ok(Some(handle)),
        Ok(None) => session.close().await.map(|()| None),
        Err(e) => {
            if let Err(close) = session.close().await {
                eprintln!("ktctl: {close}");
            }
            Err(e)
        }
    }
}

/// Waits for a signal, then runs `close` (the swap's or preview's, then the
/// session's); a second signal leaves at once.
async fn wait_and_close(
    stop: &mut Stop,
    what: &str,
    close: impl Future<Output = Result<(), kt_core::Error>>,
) -> Result<(), kt_core::Error> {
    stop.next().await;
    eprintln!("ktctl: {what} (interrupt again to leave at once)");
    tokio::select! {
        r = close => r,
        () = stop.next() => {
            eprintln!(
                "ktctl: leaving without waiting for the cluster; the shadow puts it back \
                 when its lease expires, or run `ktctl clean`"
            );
            Ok(())
        }
    }
}

/// What `ktctl` closes of a swap, a preview or a mesh.
trait Inbound {
    fn close(&self) -> impl Future<Output = Result<(), kt_core::Error>>;
}

impl Inbound for Swap {
    fn close(&self) -> impl Future<Output = Result<(), kt_core::Error>> {
        Swap::close(self)
    }
}

impl Inbound for Expose {
    fn close(&self) -> impl Future<Output = Result<(), kt_core::Error>> {
        Expose::close(self)
    }
}

impl Inbound for Mesh {
    fn close(&self) -> impl Future<Output = Result<(), kt_core::Error>> {
        Mesh::close(self)
    }
}

/// The body of `exchange`, `preview` and `mesh`: opens a session with `opts`, runs
/// `start` on it, prints `summary` of what it made (then "press Ctrl-C ..."), waits
/// for a signal, then closes it (saying `closing`) and the session.
async fn serve<T: Inbound>(
    opts: ConnectOptions,
    start: impl AsyncFnOnce(&Session) -> Result<T, kt_core::Error>,
    summary: impl FnOnce(&Session, &T, &mut dyn std::io::Write),
    closing: &str,
) -> Result<(), kt_core::Error> {
    let mut stop = Stop::install();
    let Some(session) = open_session(opts, &mut stop).await? else {
        return Ok(());
    };
    let Some(handle) = start_on(&session, &mut stop, Box::pin(start(&session))).await? else {
        return Ok(());
    };
    {
        let mut out = std::io::stdout().lock();
        summary(&session, &handle, &mut out);
        let _ = out.flush();
    }
    let close = async {
        let closed_handle = handle.close().await;
        let closed = session.close().await;
        closed_handle.and(closed)
    };
    Box::pin(wait_and_close(&mut stop, closing, close)).await
}

async fn exchange(args: ExchangeArgs) -> Result<(), kt_core::Error> {
    let opts = SwapOptions::new()
        .mode(args.mode)
        .check_local(!args.skip_local_check)
        .restore_ttl(std::time::Duration::from_secs(args.restore_ttl))
        .on_event(|e| eprintln!("ktctl: {e}"));
    let start = async |session: &Session| session.swap_with(&args.target, &args.expose, opts).await;
    let summary = |session: &Session, swap: &Swap, out: &mut dyn std::io::Write| {
        let _ = writeln!(
            out,
            "exchanged {} in namespace {} ({} mode, shadow pod {})",
            swap.target(),
            session.namespace(),
            swap.mode(),
            swap.pod_name()
        );
        if !swap.services().is_empty() {
            let _ = writeln!(out, "  services    {}", swap.services().join(", "));
        }
        print_ports(out, &swap.ports());
        let _ = writeln!(out, "press Ctrl-C to put {} back and exit", swap.target());
    };
    let opts = args.shadow.options(&args.cluster);
    Box::pin(serve(opts, start, summary, "putting the target back")).await
}

async fn preview(args: PreviewArgs) -> Result<(), kt_core::Error> {
    let service_type = if args.external {
        ServiceType::LoadBalancer
    } else {
        args.service_type.unwrap_or_default()
    };
    let opts = ExposeOptions::new()
        .service_type(service_type)
        .check_local(!args.skip_local_check)
        .on_event(|e| eprintln!("ktctl: {e}"));
    let start = async |session: &Session| session.expose_with(&args.name, &args.expose, opts).await;
    let summary = |session: &Session, expose: &Expose, out: &mut dyn std::io::Write| {
        let _ = writeln!(
            out,
            "previewing Service {} ({service_type}) in namespace {} (shadow pod {})",
            expose.service(),
            session.namespace(),
            expose.pod_name()
        );
        print_ports(out, &expose.ports());
        let _ = writeln!(out, "press Ctrl-C to remove it and exit");
    };
    let opts = args.shadow.options(&args.cluster);
    Box::pin(serve(opts, start, summary, "removing the Service")).await
}

async fn mesh(args: MeshArgs) -> Result<(), kt_core::Error> {
    let opts = MeshOptions::new()
        .check_local(!args.skip_local_check)
        .restore_ttl(std::time::Duration::from_secs(args.restore_ttl))
        .on_event(|e| eprintln!("ktctl: {e}"));
    let rule = args.rule.or(args.version_mark);
    let start = async |session: &Session| {
        session
            .mesh_with(&args.target, rule, &args.expose, opts)
            .await
    };
    let summary = |session: &Session, mesh: &Mesh, out: &mut dyn std::io::Write| {
        let _ = writeln!(
            out,
            "meshed Service {} in namespace {} (router {}, shadow pod {})",
            mesh.service(),
            session.namespace(),
            mesh.router(),
            mesh.pod_name()
        );
        let _ = writeln!(out, "  rule        {}", mesh.rule());
        if let Some((name, value)) = mesh.header() {
            let _ = writeln!(out, "  send header  {name}: {value}");
        }
        print_ports(out, &mesh.ports());
        let _ = writeln!(out, "press Ctrl-C to leave the mesh and exit");
    };
    let opts = args.shadow.options(&args.cluster);
    Box::pin(serve(opts, start, summary, "leaving the mesh")).await
}

async fn clean(args: CleanArgs) -> Result<(), kt_core::Error> {
    let opts = args.cluster.apply(ConnectOptions::new());
    let report = kt_core::clean(&opts, args.dry_run).await?;
    print!("{report}");
    Ok(())
}

async fn recover_target(args: &RecoverArgs, target: &str) -> Result<(), kt_core::Error> {
    let opts = args.cluster.apply(ConnectOptions::new());
    let report = kt_core::recover(&opts, target, args.dry_run).await?;
    print!("{report}");
    Ok(())
}

fn recover_dns() -> Result<(), kt_core::Error> {
    let restored = kt_core::recover_system_dns(&SystemPaths::default())?;
    if restored.is_empty() {
        println!("nothing to recover");
    }
    for what in restored {
        println!("restored {what}");
    }
    Ok(())
}

/// Ctrl-C, SIGTERM or SIGHUP, caught from the moment [`Stop::install`] runs: one that
/// comes between two waits (say, right after "press Ctrl-C" is printed) is kept for
/// the next wait, neither lost nor left to the signal's default action.
struct Stop {
    #[cfg(unix)]
    streams: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Stop {
    fn install() -> Stop {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = (|| {
                Ok::<_, std::io::Error>([
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::hangup())?,
                ])
            })();
            Stop {
                streams: streams.ok(),
            }
        }
        #[cfg(not(unix))]
        Stop {}
    }

    /// Waits for the next of the three signals.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some([int, term, hup]) = &mut self.streams {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signal that comes before ktctl waits for one (between connect and the wait
    /// for Ctrl-C) ends the next wait; it neither kills the process by the default
    /// action (this test binary would die of the SIGHUP) nor gets lost.
    #[tokio::test]
    async fn a_signal_before_the_wait_ends_the_next_wait() {
        let mut stop = Stop::install();
        let status = std::process::Command::new("kill")
            .args(["-s", "HUP", &std::process::id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        tokio::time::timeout(std::time::Duration::from_secs(30), stop.next())
            .await
            .expect("the SIGHUP sent before the wait ends it");
    }

    #[test]
    fn dns_modes_parse_as_kt_core_reads_them() {
        assert_eq!(parse_dns_mode("auto"), Ok(DnsMode::Auto));
        assert_eq!(parse_dns_mode("hosts"), Ok(DnsMode::Hosts(Vec::new())));
        assert_eq!(
            parse_dns_mode("hosts:a, b"),
            Ok(DnsMode::Hosts(vec!["a".to_owned(), "b".to_owned()]))
        );
        let err = parse_dns_mode("hosts:").unwrap_err();
        assert!(err.contains("resolv-conf"), "{err}");
        assert!(parse_dns_mode("bogus").is_err());
    }

    #[test]
    fn cidrs_and_flavours_parse_as_kt_core_reads_them() {
        assert_eq!(
            parse_net("10.96.0.10").map(|n| n.to_string()),
            Ok("10.96.0.10/32".to_owned())
        );
        assert_eq!(
            parse_net("10.96.0.0/12").map(|n| n.to_string()),
            Ok("10.96.0.0/12".to_owned())
        );
        let err = parse_net("banana").unwrap_err();
        assert!(err.contains("invalid CIDR `banana`"), "{err}");
        assert_eq!(parse_flavour("openssh"), Ok(ShadowFlavour::OpenSsh));
        assert_eq!(parse_flavour("kt-shadow"), Ok(ShadowFlavour::KtShadow));
        assert!(parse_flavour("dropbear").is_err());
        let cli = Cli::try_parse_from([
            "ktctl",
            "connect",
            "--include-cidr",
            "10.0.0.1,fd00::/64",
            "--flavour",
            "openssh",
        ])
        .expect("parses");
        let Command::Connect(args) = cli.command else {
            panic!("not connect")
        };
        assert_eq!(args.include_cidr.len(), 2);
        assert_eq!(args.shadow.flavour, ShadowFlavour::OpenSsh);
    }

    #[test]
    fn every_error_kind_has_its_own_exit_status_and_the_help_lists_it() {
        use clap::CommandFactory as _;
        let help = Cli::command().render_long_help().to_string();
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            let status = exit_status(*kind);
            assert!(
                !matches!(status, 0..=2),
                "{kind}: exit status {status} means success, ktctl failure or usage"
            );
            assert!(seen.insert(status), "{kind}: exit status {status} is taken");
            let expected = if kind.code() <= 2 {
                64 + kind.code()
            } else {
                kind.code()
            };
            assert_eq!(u32::from(status), expected, "{kind}");
            let row = format!("{status} {}", kind.name());
            assert!(help.contains(&row), "--help does not list `{row}`:\n{help}");
        }
        let failure = kt_core::Error::example(ErrorKind::NotFound);
        assert_eq!(exit_status(failure.kind()), 9);
        assert!(message(&failure).contains("does not exist"));
    }

    #[test]
    fn proxy_auth_reaches_the_options_only_when_asked_for() {
        let args = |extra: &[&str]| {
            let argv = ["ktctl", "connect"]
                .into_iter()
                .chain(extra.iter().copied());
            let cli = Cli::try_parse_from(argv).expect("parses");
            let Command::Connect(args) = cli.command else {
                panic!("not connect")
            };
            args
        };
        let off = format!("{:?}", options(&args(&[])));
        assert!(off.contains("proxy_auth: false"), "{off}");
        let on = format!("{:?}", options(&args(&["--proxy-auth"])));
        assert!(on.contains("proxy_auth: true"), "{on}");
    }

    fn parse(argv: &[&str]) -> Result<Cli, String> {
        let cli = Cli::try_parse_from(["ktctl"].iter().chain(argv)).map_err(|e| e.to_string())?;
        check_usage(&cli).map_err(|e| e.to_string())?;
        Ok(cli)
    }

    #[test]
    fn exchange_takes_kt_connects_flags_and_comma_lists_of_ports() {
        let cli = parse(&[
            "swap",
            "deploy/web",
            "--expose",
            "8080:80,9090:grpc",
            "--expose",
            "7000",
            "--mode",
            "scale",
            "--restore-ttl",
            "12",
            "--skip-local-check",
            "-n",
            "dev",
        ])
        .expect("parses");
        let Command::Exchange(args) = cli.command else {
            panic!("swap is not an alias of exchange")
        };
        assert_eq!(args.target, "deploy/web");
        let ports: Vec<String> = args.expose.iter().map(ToString::to_string).collect();
        assert_eq!(ports, ["8080:80", "9090:grpc", "7000"]);
        assert_eq!(args.mode, SwapMode::Scale);
        assert_eq!(args.restore_ttl, 12);
        assert!(args.skip_local_check);
        assert_eq!(args.cluster.namespace.as_deref(), Some("dev"));
        let Command::Exchange(defaults) = parse(&["exchange", "web", "--expose", "8080"])
            .expect("parses")
            .command
        else {
            panic!("not exchange")
        };
        assert_eq!(defaults.mode, SwapMode::Selector);
        assert_eq!(defaults.restore_ttl, 30);
        assert!(!defaults.skip_local_check);
    }

    #[test]
    fn bad_exchange_input_says_what_is_accepted() {
        let err = parse(&["exchange", "web", "--expose", "8080:"]).unwrap_err();
        assert!(err.contains("`local:remote`"), "{err}");
        let err = parse(&["exchange", "web", "--expose", "0"]).unwrap_err();
        assert!(err.contains("1-65535"), "{err}");
        let err = parse(&["exchange", "web", "--expose", "80", "--mode", "ephemeral"]).unwrap_err();
        assert!(
            err.contains("`selector`") && err.contains("`scale`"),
            "{err}"
        );
        let err = parse(&["exchange", "web"]).unwrap_err();
        assert!(err.contains("--expose"), "{err}");
        let err = parse(&["exchange", "web", "--expose", "80", "--restore-ttl", "1"]).unwrap_err();
        assert!(err.contains("3"), "{err}");
    }

    /// The `mesh` arguments of `argv` (after `mesh svc/web --expose 8080:80`).
    fn mesh_args(argv: &[&str]) -> Result<MeshArgs, String> {
        let all: Vec<&str> = ["mesh", "svc/web", "--expose", "8080:80"]
            .iter()
            .chain(argv)
            .copied()
            .collect();
        match parse(&all)?.command {
            Command::Mesh(args) => Ok(*args),
            other => panic!("not mesh: {other:?}"),
        }
    }

    #[test]
    fn mesh_takes_kt_connects_version_mark_or_a_rule() {
        let rule = |argv: &[&str]| {
            let args = mesh_args(argv).expect("parses");
            args.rule.or(args.version_mark).map(|r| r.to_string())
        };
        assert_eq!(rule(&[]), None, "the default mark is kt-core's");
        assert_eq!(
            rule(&["--versionMark", "version:alice"]).as_deref(),
            Some("version=alice")
        );
        assert_eq!(
            rule(&["--version-mark", "x-dev=bob"]).as_deref(),
            Some("x-dev=bob")
        );
        assert_eq!(
            rule(&["--versionMark", "v2"]).as_deref(),
            Some("version=v2")
        );
        assert_eq!(
            rule(&["--rule", "x-dev~^a && /api"]).as_deref(),
            Some("x-dev~^a && /api")
        );
        let args =
            mesh_args(&["--restore-ttl", "9", "--skip-local-check", "-n", "dev"]).expect("parses");
        assert_eq!(args.target, "svc/web");
        assert_eq!(args.expose[0].to_string(), "8080:80");
        assert_eq!((args.restore_ttl, args.skip_local_check), (9, true));
        let defaults = mesh_args(&[]).expect("parses");
        assert_eq!(
            (defaults.restore_ttl, defaults.skip_local_check),
            (30, false)
        );
    }

    #[test]
    fn bad_mesh_input_says_what_is_accepted() {
        let err = mesh_args(&["--versionMark", "a=1 && b=2"]).unwrap_err();
        assert!(
            err.contains("not a mark") && err.contains("--rule"),
            "{err}"
        );
        let err = mesh_args(&["--versionMark", "a:1", "--rule", "/api"]).unwrap_err();
        assert!(err.contains("cannot be used with"), "{err}");
        let err = mesh_args(&["--rule", "a=1 && /x || b=2"]).unwrap_err();
        assert!(err.contains("mixes `&&` and `||`"), "{err}");
        let err = mesh_args(&["--restore-ttl", "2"]).unwrap_err();
        assert!(err.contains("3"), "{err}");
        let err = parse(&["mesh", "svc/web"]).unwrap_err();
        assert!(err.contains("--expose"), "{err}");
    }

    #[test]
    fn preview_takes_a_type_or_external() {
        let service_type = |argv: &[&str]| {
            let Command::Preview(args) = parse(argv).expect("parses").command else {
                panic!("not preview")
            };
            (args.service_type, args.external)
        };
        assert_eq!(
            service_type(&["expose", "mine", "--expose", "80"]),
            (None, false)
        );
        assert_eq!(
            service_type(&["preview", "mine", "--expose", "80", "--type", "nodeport"]),
            (Some(ServiceType::NodePort), false)
        );
        assert_eq!(
            service_type(&["preview", "mine", "--expose", "80", "--external"]),
            (None, true)
        );
        let err = parse(&["preview", "mine", "--expose", "80", "--type", "Ingress"]).unwrap_err();
        assert!(err.contains("ClusterIP, NodePort or LoadBalancer"), "{err}");
        let err = parse(&[
            "preview",
            "mine",
            "--expose",
            "80",
            "--type",
            "NodePort",
            "--external",
        ])
        .unwrap_err();
        assert!(err.contains("--external"), "{err}");
    }

    #[test]
    fn recover_without_a_target_is_system_dns_and_takes_no_cluster_flags() {
        let Command::Recover(args) = parse(&["recover"]).expect("parses").command else {
            panic!("not recover")
        };
        assert!(args.target.is_none() && !args.dry_run);
        let Command::Recover(args) = parse(&["recover", "deploy/web", "--dry-run", "-n", "dev"])
            .expect("parses")
            .command
        else {
            panic!("not recover")
        };
        assert_eq!(args.target.as_deref(), Some("deploy/web"));
        assert!(args.dry_run);
        let err = parse(&["recover", "--dry-run"]).unwrap_err();
        assert!(err.contains("<TARGET>"), "{err}");
        let err = parse(&["recover", "-n", "dev"]).unwrap_err();
        assert!(err.contains("need a target"), "{err}");
        let Command::Clean(args) = parse(&["clean", "--dry-run"]).expect("parses").command else {
            panic!("not clean")
        };
        assert!(args.dry_run);
    }

    #[test]
    fn the_imageless_flags_reach_the_options_of_every_command_that_opens_a_session() {
        let commands: [&[&str]; 4] = [
            &["connect"],
            &["exchange", "web", "--expose", "80"],
            &["preview", "mine", "--expose", "80"],
            &["mesh", "svc/web", "--expose", "80"],
        ];
        for command in commands {
            let mut argv = command.to_vec();
            argv.extend([
                "--base-image",
                "busybox:1.37",
                "--agent-dir",
                "/opt/kt/agent",
            ]);
            let cli = parse(&argv).expect("parses");
            let (shadow, cluster) = match &cli.command {
                Command::Connect(a) => (&a.shadow, &a.cluster),
                Command::Exchange(a) => (&a.shadow, &a.cluster),
                Command::Preview(a) => (&a.shadow, &a.cluster),
                Command::Mesh(a) => (&a.shadow, &a.cluster),
                other => panic!("{other:?} opens no session"),
            };
            let opts = format!("{:?}", shadow.options(cluster));
            assert!(
                opts.contains(r#"base_image: Some("busybox:1.37")"#),
                "{command:?}: {opts}"
            );
            assert!(
                opts.contains(r#"agent_dir: Some("/opt/kt/agent")"#),
                "{command:?}: {opts}"
            );
        }
        let Command::Connect(args) = parse(&["connect"]).expect("parses").command else {
            panic!("not connect")
        };
        let defaults = format!("{:?}", options(&args));
        for unset in ["shadow_image: None", "base_image: None", "agent_dir: None"] {
            assert!(defaults.contains(unset), "{unset}: {defaults}");
        }
    }

    #[test]
    fn empty_image_flags_are_usage_errors_and_the_help_says_kt_ships_its_agent() {
        use clap::CommandFactory as _;
        for flag in ["--image", "--base-image", "--agent-dir"] {
            let err = parse(&["connect", flag, ""]).unwrap_err();
            assert!(err.contains("must not be empty"), "{flag}: {err}");
        }
        let err = parse(&["connect", "--agent-dir", ""]).unwrap_err();
        assert!(err.contains("kt-shadow/build-static"), "{err}");
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("connect")
            .expect("connect")
            .render_long_help()
            .to_string();
        assert!(
            help.contains("default: none, kt ships its agent into the namespace"),
            "{help}"
        );
        assert!(help.contains("pinned by digest"), "{help}");
        assert!(
            help.contains("--base-image <IMAGE>") && help.contains("registry.k8s.io/pause:3.10"),
            "{help}"
        );
        assert!(
            help.contains("--agent-dir <DIR>") && help.contains("KT_AGENT_DIR"),
            "{help}"
        );
    }

    #[test]
    fn a_held_target_exits_with_the_conflict_status() {
        let held = kt_core::Error::example(ErrorKind::Conflict);
        assert_eq!(exit_status(held.kind()), 24);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
