//! `ktctl`: kt from a terminal.
//!
//! ```text
//! ktctl connect -n dev                 # proxy mode: SOCKS5 + HTTP proxies, no root needed
//! sudo ktctl connect -n dev --mode vpn # VPN mode: every program reaches the cluster
//! sudo ktctl recover                   # put back system DNS a crashed ktctl left changed
//! ```
//!
//! Everything is done by `kt-core`; this binary parses flags, prints progress and waits
//! for Ctrl-C (or SIGTERM/SIGHUP), then closes the session, which removes what it made.
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
    ConnectOptions, DnsMode, ErrorKind, IpNet, Session, ShadowFlavour, SystemPaths, VpnOptions,
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
  22 internal          23 connect
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
    /// Put back system DNS settings (resolv.conf, hosts, /etc/resolver) that a ktctl
    /// killed without a chance to clean up left behind. `connect` does this by itself.
    Recover,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// SOCKS5 and HTTP proxies on 127.0.0.1 (no privileges needed).
    Proxy,
    /// A tun device with routes to the cluster, plus system DNS (needs CAP_NET_ADMIN).
    Vpn,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    /// Namespace to work in (default: the context's).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(short = 'c', long)]
    kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig.
    #[arg(long)]
    context: Option<String>,
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
    /// The shadow's SSH server: kt-shadow (kt's own agent: restricted Pod Security,
    /// UDP relay) or openssh (a stock sshd, runs as root in the pod; TCP only).
    #[arg(long, default_value = "kt-shadow", value_parser = parse_flavour)]
    flavour: ShadowFlavour,
    /// The shadow image (default: KT_SHADOW_IMAGE, then kt's published image).
    #[arg(short, long)]
    image: Option<String>,
    /// How long the shadow pod waits for a vanished ktctl (killed, or off the network)
    /// before it ends itself, in seconds; the next session in the namespace deletes it.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    shadow_timeout: u64,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            Command::Recover => recover(),
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
    let mut opts = ConnectOptions::new()
        .flavour(args.flavour)
        .socks5_port(args.socks5_port)
        .shadow_heartbeat_timeout(Some(std::time::Duration::from_secs(args.shadow_timeout)))
        .http_proxy_port(args.http_port)
        .proxy_auth(args.proxy_auth)
        .on_event(|e| eprintln!("ktctl: {e}"));
    if let Some(ns) = &args.namespace {
        opts = opts.namespace(ns);
    }
    if let Some(path) = &args.kubeconfig {
        opts = opts.kubeconfig(path);
    }
    if let Some(ctx) = &args.context {
        opts = opts.context(ctx);
    }
    if let Some(image) = &args.image {
        opts = opts.shadow_image(image);
    }
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

fn recover() -> Result<(), kt_core::Error> {
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
        assert_eq!(args.flavour, ShadowFlavour::OpenSsh);
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

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
