//! Swaps a workload: its traffic in the cluster comes to a port on this machine until
//! Ctrl-C, then the cluster is put back.
//!
//! Against the lab (`testbed/up`, then deploy the echo app), with something listening
//! on 127.0.0.1:8080:
//!
//! ```sh
//! kubectl create namespace demo
//! kubectl apply -n demo -f testbed/examples/echo.yaml
//! KUBECONFIG=/run/ktlab/admin.kubeconfig cargo run -p kt-core --example swap -- \
//!     demo deploy/echo 8080:80 selector
//! ```
//!
//! Arguments: `namespace target ports [selector|scale] [restore-ttl-secs]`. It prints
//! `swapped <id>` on standard output once the cluster sends traffic here. Killed
//! without a chance to close (`kill -9`), the swap shadow restores the cluster by
//! itself once the restore TTL passes.

use std::time::Duration;

use kt_core::{ConnectOptions, PortMap, Session, SwapMode, SwapOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [namespace, target, ports, rest @ ..] = args.as_slice() else {
        return Err("usage: swap NAMESPACE TARGET PORTS [selector|scale] [TTL-SECS]".into());
    };
    let mode: SwapMode = rest.first().map_or(Ok(SwapMode::Selector), |m| m.parse())?;
    let ttl = rest.get(1).map_or(Ok(30), |t| t.parse::<u64>())?;
    // The session's own shadow ends as soon after a crash as the swap's is restored.
    let opts = ConnectOptions::new()
        .namespace(namespace)
        .shadow_heartbeat_timeout(Some(Duration::from_secs(ttl)))
        .on_event(|e| eprintln!("kt: {e}"));
    let session = Session::connect(opts).await?;
    let swap_opts = SwapOptions::new()
        .mode(mode)
        .restore_ttl(Duration::from_secs(ttl))
        .on_event(|e| eprintln!("kt swap: {e}"));
    let swap = session
        .swap_with(target, &PortMap::parse_list([ports.as_str()])?, swap_opts)
        .await?;
    println!("swapped {}", swap.id());
    tokio::signal::ctrl_c().await?;
    swap.close().await?;
    session.close().await?;
    Ok(())
}
