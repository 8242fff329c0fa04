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

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kt_core::{ConnectOptions, DnsMode, IpNet, Session, ShadowFlavour, SystemPaths, VpnOptions};

/// Work from your machine as if inside a Kubernetes cluster.
#[derive(Debug, Parser)]
#[command(name = "ktctl", version, about)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Flavour {
    /// kt's own agent (restricted Pod Security, UDP relay).
    KtShadow,
    /// A stock OpenSSH sshd (runs as root in the pod; TCP only).
    Openssh,
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
    /// VPN mode: also route these ranges (comma separated or repeated).
    #[arg(long, value_delimiter = ',')]
    include_cidr: Vec<IpNet>,
    /// VPN mode: never route these ranges.
    #[arg(long, value_delimiter = ',')]
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
    #[arg(long)]
    dns_listen: Option<SocketAddr>,
    /// The shadow's SSH server.
    #[arg(long, value_enum, default_value_t = Flavour::KtShadow)]
    flavour: Flavour,
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
}

/// Parses `--dns`.
fn parse_dns_mode(s: &str) -> Result<DnsMode, String> {
    Ok(match s {
        "auto" => DnsMode::Auto,
        "resolv-conf" => DnsMode::ResolvConf,
        "resolved" => DnsMode::Resolved,
        "resolver-dir" => DnsMode::ResolverDir,
        "hosts" => DnsMode::Hosts(Vec::new()),
        "off" => DnsMode::Off,
        other => match other.strip_prefix("hosts:") {
            Some(list) if !list.is_empty() => {
                DnsMode::Hosts(list.split(',').map(str::to_owned).collect())
            }
            _ => {
                return Err(format!(
                    "unknown DNS mode `{other}`: use auto, resolv-conf, resolved, \
                     resolver-dir, hosts, hosts:<ns1>,<ns2> or off"
                ));
            }
        },
    })
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
            eprintln!("ktctl: error: {e}");
            ExitCode::FAILURE
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
        .flavour(match args.flavour {
            Flavour::KtShadow => ShadowFlavour::KtShadow,
            Flavour::Openssh => ShadowFlavour::OpenSsh,
        })
        .socks5_port(args.socks5_port)
        .shadow_heartbeat_timeout(Some(std::time::Duration::from_secs(args.shadow_timeout)))
        .http_proxy_port(args.http_port)
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
    let session = tokio::select! {
        s = Session::connect(options(&args)) => s?,
        () = shutdown_signal() => {
            eprintln!("ktctl: interrupted while connecting; what was created has been removed");
            return Ok(());
        }
    };
    print_summary(&session);
    shutdown_signal().await;
    eprintln!("ktctl: disconnecting (interrupt again to leave at once)");
    tokio::select! {
        r = session.close() => r,
        () = shutdown_signal() => {
            // close() restores system DNS first; what may remain is the shadow pod,
            // which ends itself (--shadow-timeout) and the next session deletes.
            eprintln!("ktctl: leaving without waiting for the cluster");
            Ok(())
        }
    }
}

fn print_summary(session: &Session) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "connected to namespace {} (shadow pod {})",
        session.namespace(),
        session.pod_name()
    );
    let _ = writeln!(out, "  socks5      {}", session.socks5_addr());
    let _ = writeln!(out, "  http proxy  {}", session.http_proxy_addr());
    if let Some(vpn) = session.vpn() {
        let routes: Vec<String> = vpn.routes.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  vpn         {}: {}", vpn.device, routes.join(", "));
        if let Some(dns) = vpn.dns_addr {
            let _ = writeln!(out, "  dns         {dns} ({})", vpn.dns_detail);
        }
    } else {
        let _ = writeln!(
            out,
            "  for a shell: export ALL_PROXY=socks5h://{0} HTTPS_PROXY=http://{1} HTTP_PROXY=http://{1}",
            session.socks5_addr(),
            session.http_proxy_addr()
        );
    }
    let _ = writeln!(out, "press Ctrl-C to disconnect");
    let _ = out.flush();
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

/// Ctrl-C, SIGTERM or SIGHUP.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_modes_parse() {
        assert_eq!(parse_dns_mode("auto"), Ok(DnsMode::Auto));
        assert_eq!(parse_dns_mode("hosts"), Ok(DnsMode::Hosts(Vec::new())));
        assert_eq!(
            parse_dns_mode("hosts:a,b"),
            Ok(DnsMode::Hosts(vec!["a".to_owned(), "b".to_owned()]))
        );
        let err = parse_dns_mode("hosts:").unwrap_err();
        assert!(err.contains("resolv-conf"), "{err}");
        assert!(parse_dns_mode("bogus").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
