//! The `kt-shadow` binary: see `kt-shadow help` and [`kt_proto::cli`].

use std::process::ExitCode;

use kt_proto::cli::{Command, ServeArgs, USAGE};
use kt_proto::shadow::{EXIT_FAILURE, EXIT_USAGE};
use kt_shadow::cluster::Cluster;
use kt_shadow::lease::LeaseWatch;
use kt_shadow::probe::{PROBE_TIMEOUT, probe};
use kt_shadow::restore::{Restorer, own_pod_name};
use kt_shadow::{Error, Exit, Shadow};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Environment variable choosing the log level: error, warn, info (default), debug, trace.
const LOG_ENV: &str = "KT_SHADOW_LOG";

fn main() -> ExitCode {
    let command = match Command::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("kt-shadow: {err}");
            return exit_code(EXIT_USAGE);
        }
    };
    match command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("kt-shadow {}", kt_proto::VERSION);
            ExitCode::SUCCESS
        }
        Command::Probe(args) => {
            let Some(runtime) = runtime(false) else {
                return exit_code(EXIT_FAILURE);
            };
            match runtime.block_on(probe(args.addr, PROBE_TIMEOUT)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("kt-shadow: {err}");
                    exit_code(EXIT_FAILURE)
                }
            }
        }
        Command::Serve(args) => {
            init_tracing();
            let Some(runtime) = runtime(true) else {
                return exit_code(EXIT_FAILURE);
            };
            exit_code(runtime.block_on(serve(args)))
        }
        Command::Route(args) => {
            init_tracing();
            let Some(runtime) = runtime(true) else {
                return exit_code(EXIT_FAILURE);
            };
            exit_code(runtime.block_on(route(args)))
        }
    }
}

async fn serve(args: ServeArgs) -> i32 {
    // Catch signals before the port listens: a SIGTERM that comes as soon as the shadow
    // answers (a pod deleted right after it started) must shut it down cleanly, not end
    // it by the signal's default action.
    let signals = Signals::install();
    let mut shadow = match Shadow::bind(&args).await {
        Ok(shadow) => shadow,
        Err(err) => {
            error!("{err}");
            return EXIT_FAILURE;
        }
    };
    let restoring = !args.restore.is_empty() || args.self_delete;
    let cluster = if args.lease.is_some() || restoring {
        Some(Cluster::connect().await)
    } else {
        None
    };
    match (&cluster, args.lease.as_deref()) {
        (Some(Ok(cluster)), Some(lease)) => {
            let watch = LeaseWatch::new(cluster.client.clone(), &cluster.namespace, lease);
            shadow = shadow.watch_lease(watch);
        }
        (Some(Err(reason)), Some(lease)) => warn!(
            lease,
            error = %reason,
            "no in-cluster credentials: the session's Lease is not watched, only \
             --heartbeat-timeout applies (is the pod's ServiceAccount token mounted?)"
        ),
        _ => {}
    }
    if restoring {
        match restorer(&args, cluster) {
            Ok(restorer) => shadow = shadow.restore_on_stop(restorer),
            Err(err) => {
                error!("{err}");
                return EXIT_FAILURE;
            }
        }
    }
    let shutdown = CancellationToken::new();
    let signals = signals.map(|s| tokio::spawn(s.cancel_on_first(shutdown.clone())));
    let exit = shadow.run(shutdown).await;
    if let Some(signals) = signals {
        signals.abort();
    }
    if exit == Exit::Shutdown {
        info!("shut down");
    }
    exit.code()
}

/// `kt-shadow route`: the mesh router, until no developer is left or SIGTERM.
async fn route(args: kt_proto::cli::RouteArgs) -> i32 {
    let signals = Signals::install();
    let cluster = match Cluster::connect().await {
        Ok(cluster) => cluster,
        Err(reason) => {
            error!("{}", Error::NoCluster { reason });
            return EXIT_FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let signals = signals.map(|s| tokio::spawn(s.cancel_on_first(shutdown.clone())));
    let code = kt_shadow::router::control::run(args, cluster, shutdown).await;
    if let Some(signals) = signals {
        signals.abort();
    }
    code
}

/// The restoring watchdog of `--restore`/`--self-delete`: refused (the shadow does not
/// start) without credentials or without a name for its own pod, rather than serving a
/// swap it could not undo.
fn restorer(args: &ServeArgs, cluster: Option<Result<Cluster, String>>) -> Result<Restorer, Error> {
    let cluster = match cluster {
        Some(Ok(cluster)) => cluster,
        Some(Err(reason)) => return Err(Error::NoCluster { reason }),
        None => {
            return Err(Error::NoCluster {
                reason: "not loaded".to_owned(),
            });
        }
    };
    let session = args.session.as_deref().unwrap_or_default();
    let mut restorer = Restorer::new(cluster, session, args.restore.clone());
    if args.self_delete {
        let pod = own_pod_name().ok_or(Error::NoPodName)?;
        restorer = restorer
            .delete_pod_on_lease_expiry(&pod)
            .delete_pods_on_lease_expiry(&args.delete_pods);
    }
    Ok(restorer)
}

/// SIGTERM (what the kubelet sends) and SIGINT, caught from the moment they are
/// installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs both handlers; `None` (logged) if the system refuses.
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some(Signals { term, int }),
            _ => {
                error!("cannot install signal handlers; stop kt-shadow with SIGKILL");
                None
            }
        }
    }

    /// Cancels `shutdown` on the first of the two signals.
    async fn cancel_on_first(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM received, shutting down"),
            _ = self.int.recv() => info!("SIGINT received, shutting down"),
        }
        shutdown.cancel();
    }
}

fn runtime(multi_thread: bool) -> Option<tokio::runtime::Runtime> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(err) => {
            eprintln!("kt-shadow: cannot start the async runtime: {err}");
            None
        }
    }
}

fn init_tracing() {
    let level = std::env::var(LOG_ENV)
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(level)
        .with_target(false)
        .init();
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
