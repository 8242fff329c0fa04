//! Meshes a Service: only the requests that carry this developer's header come to a
//! port on this machine until Ctrl-C; everyone else's go to the original pods.
//!
//! Against the lab (`testbed/up`, then deploy the echo app), with something listening
//! on 127.0.0.1:8080:
//!
//! ```sh
//! kubectl create namespace demo
//! kubectl apply -n demo -f testbed/examples/echo.yaml
//! KUBECONFIG=/run/ktlab/admin.kubeconfig cargo run -p kt-core --example mesh -- \
//!     demo svc/echo 8080:80
//! # then, from a pod: curl -H 'version: <the value printed>' http://echo/
//! ```
//!
//! Arguments: `namespace target ports [rule] [restore-ttl-secs]` (rule like
//! `version=alice`; without one, kt makes a random `version` mark). It prints
//! `meshed <id> <header>: <value>` on standard output once the router sends matching
//! requests here. Killed without a chance to close (`kill -9`), its mesh shadow goes
//! once the TTL passes, and the router stops routing to it (the last one also puts the
//! Service back and removes the router).

use std::time::Duration;

use kt_core::{ConnectOptions, MeshOptions, MeshRule, PortMap, Session};

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
        return Err("usage: mesh NAMESPACE TARGET PORTS [RULE] [TTL-SECS]".into());
    };
    let rule: Option<MeshRule> = rest
        .first()
        .filter(|r| !r.is_empty())
        .map(|r| r.parse())
        .transpose()?;
    let ttl = rest.get(1).map_or(Ok(30), |t| t.parse::<u64>())?;
    // The session's own shadow ends as soon after a crash as the mesh shadow does.
    let opts = ConnectOptions::new()
        .namespace(namespace)
        .shadow_heartbeat_timeout(Some(Duration::from_secs(ttl)))
        .on_event(|e| eprintln!("kt: {e}"));
    let session = Session::connect(opts).await?;
    let mesh_opts = MeshOptions::new()
        .restore_ttl(Duration::from_secs(ttl))
        .on_event(|e| eprintln!("kt mesh: {e}"));
    let ports = PortMap::parse_list([ports.as_str()])?;
    let mesh = session.mesh_with(target, rule, &ports, mesh_opts).await?;
    let (name, value) = mesh.header().unwrap_or(("", ""));
    println!("meshed {} {name}: {value}", mesh.id());
    tokio::signal::ctrl_c().await?;
    mesh.close().await?;
    session.close().await?;
    Ok(())
}
