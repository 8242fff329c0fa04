//! The shipped Roles (`rbac/connect.yaml`, `rbac/vpn.yaml`) grant what kt needs and no
//! more: `kubectl auth can-i`, asked as the ServiceAccount a test binds them to, says no
//! to reading Secrets, patching pods and (connect) creating Services; a session works
//! with each and leaves nothing behind.

mod common;

use anyhow::{Result, bail, ensure};
use common::{Fixture, Shipped, TEST_USER, curl_echo, scoped_kubeconfig_for};
use kt_core::{ConnectOptions, ShadowFlavour, VpnOptions};
use kt_lab_tests::{Lab, TestNamespace};

/// `kubectl auth can-i <verb> <resource>` in `ns` as `system:serviceaccount:<ns>:<sa>`,
/// with the lab's admin credentials.
async fn can_i(ns: &TestNamespace, sa: &str, verb: &str, resource: &str) -> Result<bool> {
    let who = format!("--as=system:serviceaccount:{}:{sa}", ns.name());
    let out = ns
        .kubectl_output(&["auth", "can-i", verb, resource, &who])
        .await?;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match answer.as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => bail!(
            "kubectl auth can-i {verb} {resource} {who}: `{answer}` ({})",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Checks each `(verb, resource, allowed)` for `sa` in `ns`.
async fn expect(ns: &TestNamespace, sa: &str, cases: &[(&str, &str, bool)]) -> Result<()> {
    let mut wrong = Vec::new();
    for (verb, resource, allowed) in cases {
        if can_i(ns, sa, verb, resource).await? != *allowed {
            wrong.push(format!(
                "{sa} {} {verb} {resource}",
                if *allowed { "may not" } else { "may" }
            ));
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("; "));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_shipped_role_reads_secrets_or_patches_pods_and_only_vpn_creates_services() -> Result<()>
{
    let lab = Lab::connect().await?;
    for shipped in Shipped::ALL {
        let ns = lab.namespace("kt-roles").await?;
        let kubeconfig = scoped_kubeconfig_for(&ns, shipped, true).await?;
        let _ = std::fs::remove_file(&kubeconfig);
        let vpn = shipped == Shipped::Vpn;
        expect(
            &ns,
            TEST_USER,
            &[
                ("get", "secrets", false),
                ("list", "secrets", false),
                ("watch", "secrets", false),
                ("patch", "pods", false),
                ("update", "pods", false),
                ("create", "services", vpn),
                ("list", "services", vpn),
                ("delete", "services", false),
                ("delete", "leases.coordination.k8s.io", false),
                // What kt does use.
                ("create", "pods", true),
                ("delete", "pods", true),
                ("create", "pods/portforward", true),
                ("create", "secrets", true),
                ("get", "services", true),
                ("create", "leases.coordination.k8s.io", true),
                ("patch", "leases.coordination.k8s.io", true),
                ("get", "leases.coordination.k8s.io", true),
            ],
        )
        .await
        .map_err(|e| e.context(format!("Role {}", shipped.role())))?;
        // The shadow's own ServiceAccount only reads Leases.
        expect(
            &ns,
            "kt-shadow",
            &[
                ("get", "leases.coordination.k8s.io", true),
                ("patch", "leases.coordination.k8s.io", false),
                ("get", "secrets", false),
                ("get", "pods", false),
            ],
        )
        .await
        .map_err(|e| e.context(format!("ServiceAccount kt-shadow ({})", shipped.role())))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_role_adds_only_what_swap_and_expose_use() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kt-roles-in").await?;
    let kubeconfig = scoped_kubeconfig_for(&ns, Shipped::Inbound, true).await?;
    let _ = std::fs::remove_file(&kubeconfig);
    expect(
        &ns,
        TEST_USER,
        &[
            // Never: Secrets, changing pods, anything cluster-wide.
            ("get", "secrets", false),
            ("patch", "pods", false),
            ("update", "pods", false),
            ("delete", "deployments.apps", false),
            ("create", "deployments.apps", false),
            ("update", "services", false),
            ("escalate", "roles.rbac.authorization.k8s.io", false),
            ("bind", "roles.rbac.authorization.k8s.io", false),
            ("list", "nodes", false),
            // What swap, expose, clean and recover use.
            ("patch", "services", true),
            ("create", "services", true),
            ("delete", "services", true),
            ("patch", "deployments.apps", true),
            ("patch", "statefulsets.apps", true),
            ("list", "horizontalpodautoscalers.autoscaling", true),
            ("list", "endpointslices.discovery.k8s.io", true),
            ("create", "serviceaccounts", true),
            ("create", "roles.rbac.authorization.k8s.io", true),
            ("create", "rolebindings.rbac.authorization.k8s.io", true),
        ],
    )
    .await
}

both_flavours!(proxy_mode_works_with_connect_yaml_and_close_leaves_nothing);
async fn proxy_mode_works_with_connect_yaml_and_close_leaves_nothing(
    flavour: ShadowFlavour,
) -> Result<()> {
    let f = Box::pin(Fixture::start_as(
        "kt-role-connect",
        flavour,
        1,
        Shipped::Connect,
        |o| o,
    ))
    .await?;
    let url = format!("http://echo.{}/", f.ns.name());
    let socks = format!("socks5h://{}", f.session.socks5_addr());
    let reply = curl_echo(&["--proxy", &socks], &url).await?;
    ensure!(reply.pod.starts_with("echo-"), "reply from {:?}", reply.pod);
    let session = f.session.id().to_owned();
    let ns = f.ns.name().to_owned();
    let lab = f.lab.clone();
    // finish() closes and checks pods, Secrets and Leases of the session are gone.
    f.finish().await?;
    let left = lab
        .kubectl(&[
            "get",
            "pods,secrets,leases",
            "-n",
            &ns,
            "-l",
            &format!("kt.dev/session={session}"),
            "-o",
            "name",
        ])
        .await?;
    ensure!(left.trim().is_empty(), "left after close(): {left}");
    Ok(())
}

/// VPN range discovery works with `vpn.yaml` alone (the dry-run create gives the
/// Service range) and leaves no Service behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vpn_discovery_works_with_vpn_yaml() -> Result<()> {
    let lab = Lab::connect().await?;
    let ns = lab.namespace("kt-role-vpn").await?;
    let _echo = ns.deploy_echo(1).await?;
    let kubeconfig = scoped_kubeconfig_for(&ns, Shipped::Vpn, true).await?;
    let opts = ConnectOptions::new()
        .kubeconfig(&kubeconfig)
        .namespace(ns.name());
    let found = kt_core::discover_ranges(&opts, &VpnOptions::new()).await;
    let _ = std::fs::remove_file(&kubeconfig);
    let (pods, services, routes, sources) = found?;
    ensure!(
        sources
            .iter()
            .any(|s| s.contains("answer to a dry-run Service")),
        "{sources:#?}"
    );
    ensure!(
        !pods.is_empty() && !services.is_empty() && !routes.is_empty(),
        "pods {pods:?}, services {services:?}, routes {routes:?}"
    );
    let services = ns.kubectl(&["get", "services", "-o", "name"]).await?;
    ensure!(services.trim() == "service/echo", "{services}");
    Ok(())
}
