//! The `kt-shadow` binary: see `kt-shadow help` and [`kt_proto::cli`].

use std::process::ExitCode;

use kt_proto::cli::{Command, ServeArgs, USAGE};
use kt_proto::shadow::{EXIT_FAILURE, EXIT_USAGE};
use kt_shadow::lease::LeaseWatch;
use kt_shadow::probe::{PROBE_TIMEOUT, probe};
use kt_shadow::{Exit, Shadow};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

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
    if let Some(watch) = args.lease.as_deref().and_then(LeaseWatch::in_cluster) {
        shadow = shadow.watch_lease(watch);
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
