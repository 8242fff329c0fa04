//! Shared set-up of kt-core's end-to-end tests: a namespace with the echo app, a
//! shipped Role (`connect.yaml` unless a test asks for `vpn.yaml`) bound to a
//! ServiceAccount, a kubeconfig for that ServiceAccount (so every test runs with
//! namespace-scoped permissions only), and a session.
//!
//! Every test talks to the lab (`testbed/up`) and fails when it is down. The flavour
//! of the shadow is a parameter: [`both_flavours!`] makes one test per flavour.
//! The kt-shadow flavour runs imageless, as it does by default: kt ships its agent
//! (embedded at build time with `KT_AGENT_EMBED`, which `/run/ktlab/env` sets, or from
//! `KT_AGENT_DIR`). The OpenSSH flavour runs the lab's sshd image
//! ([`kt_lab_tests::OPENSSH_IMAGE`]).

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use kt_core::{ConnectOptions, Session, ShadowFlavour};
use kt_lab_tests::{EchoApp, EchoReply, Lab, TestNamespace};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A Role file shipped with kt-core (each also makes the shadow's ServiceAccount).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shipped {
    /// `rbac/connect.yaml`, Role `kt-connect`: proxy mode.
    Connect,
    /// `rbac/vpn.yaml`, Role `kt-vpn`: VPN mode.
    Vpn,
    /// `rbac/vpn.yaml` and `rbac/inbound.yaml`, Roles `kt-vpn` and `kt-inbound`: swap,
    /// expose, clean, recover.
    Inbound,
}

impl Shipped {
    /// Every shipped Role.
    pub(crate) const ALL: [Shipped; 2] = [Shipped::Connect, Shipped::Vpn];

    /// The file's text.
    pub(crate) fn yaml(self) -> &'static str {
        match self {
            Shipped::Connect => include_str!("../../rbac/connect.yaml"),
            Shipped::Vpn | Shipped::Inbound => include_str!("../../rbac/vpn.yaml"),
        }
    }

    /// The Role's name.
    pub(crate) fn role(self) -> &'static str {
        match self {
            Shipped::Connect => "kt-connect",
            Shipped::Vpn | Shipped::Inbound => "kt-vpn",
        }
    }
}

/// The ServiceAccount the tests run kt as.
pub(crate) const TEST_USER: &str = "kt-user";

/// One test per shadow flavour: `mod <name> { fn openssh(); fn kt_shadow(); }`, each
/// calling `<name>(flavour)`.
#[macro_export]
macro_rules! both_flavours {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn openssh() -> anyhow::Result<()> {
                super::$name(kt_core::ShadowFlavour::OpenSsh).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kt_shadow() -> anyhow::Result<()> {
                super::$name(kt_core::ShadowFlavour::KtShadow).await
            }
        }
    };
}

/// Options for `flavour` in namespace `ns` with the kubeconfig `kubeconfig`.
pub(crate) fn options(
    flavour: ShadowFlavour,
    ns: &str,
    kubeconfig: &Path,
) -> Result<ConnectOptions> {
    let opts = ConnectOptions::new()
        .kubeconfig(kubeconfig)
        .namespace(ns)
        .flavour(flavour)
        .on_event(|e| eprintln!("kt: {e}"));
    Ok(match flavour {
        ShadowFlavour::OpenSsh => opts.shadow_image(kt_lab_tests::OPENSSH_IMAGE),
        _ => opts,
    })
}

/// For the kt-shadow flavour, makes `ns` enforce the restricted Pod Security Standard
/// (the shadow must pass it). Call it before deploying anything: the echo app passes it
/// too. sshd runs as root and needs the default (privileged) namespace.
pub(crate) async fn restrict_for(ns: &TestNamespace, flavour: ShadowFlavour) -> Result<()> {
    if flavour == ShadowFlavour::KtShadow {
        ns.lab()
            .kubectl(&[
                "label",
                "namespace",
                ns.name(),
                "pod-security.kubernetes.io/enforce=restricted",
            ])
            .await?;
    }
    Ok(())
}

/// Applies the shipped `connect.yaml` in `ns`, makes ServiceAccount [`TEST_USER`]
/// (bound to Role `kt-connect` when `bind`), and writes a kubeconfig that
/// authenticates as it.
pub(crate) async fn scoped_kubeconfig(ns: &TestNamespace, bind: bool) -> Result<PathBuf> {
    scoped_kubeconfig_for(ns, Shipped::Connect, bind).await
}

/// [`scoped_kubeconfig`] with the shipped Role file `shipped`.
pub(crate) async fn scoped_kubeconfig_for(
    ns: &TestNamespace,
    shipped: Shipped,
    bind: bool,
) -> Result<PathBuf> {
    let path = scoped_kubeconfig_with(ns, shipped.yaml(), shipped.role(), bind).await?;
    if shipped == Shipped::Inbound {
        ns.apply(include_str!("../../rbac/inbound.yaml")).await?;
        if bind {
            let sa = format!("{}:{TEST_USER}", ns.name());
            ns.kubectl(&[
                "create",
                "rolebinding",
                "kt-inbound",
                "--role=kt-inbound",
                &format!("--serviceaccount={sa}"),
            ])
            .await?;
        }
    }
    Ok(path)
}

/// [`scoped_kubeconfig`] with another Role file (`role_yaml`, defining Role `role`) in
/// place of a shipped one; it is in place before the binding, so no request sees the
/// old rules.
pub(crate) async fn scoped_kubeconfig_with(
    ns: &TestNamespace,
    role_yaml: &str,
    role: &str,
    bind: bool,
) -> Result<PathBuf> {
    ns.apply(role_yaml).await?;
    ns.kubectl(&["create", "serviceaccount", TEST_USER]).await?;
    if bind {
        let sa = format!("{}:{TEST_USER}", ns.name());
        ns.kubectl(&[
            "create",
            "rolebinding",
            "kt",
            &format!("--role={role}"),
            &format!("--serviceaccount={sa}"),
        ])
        .await?;
    }
    let token = ns
        .kubectl(&["create", "token", TEST_USER, "--duration=2h"])
        .await?;
    let admin = kube::config::Kubeconfig::read_from(ns.lab().kubeconfig())
        .context("reading the lab's admin kubeconfig")?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("the admin kubeconfig has no cluster")?;
    let server = cluster
        .server
        .context("the admin kubeconfig has no server")?;
    let ca = cluster
        .certificate_authority_data
        .context("the admin kubeconfig has no certificate-authority-data")?;
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": TEST_USER, "user": {"token": token.trim()}}],
        "contexts": [{"name": "kt", "context": {"cluster": "lab", "user": TEST_USER, "namespace": ns.name()}}],
        "current-context": "kt",
    });
    let dir = std::env::temp_dir().join("kt-core-tests");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.kubeconfig", ns.name()));
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(path)
}

/// A namespace with the echo app and a session in it, made with a shipped Role only
/// (`connect.yaml` unless [`Fixture::start_as`] says otherwise).
pub(crate) struct Fixture {
    pub(crate) lab: Lab,
    pub(crate) ns: TestNamespace,
    pub(crate) echo: EchoApp,
    pub(crate) session: Session,
    pub(crate) kubeconfig: PathBuf,
}

impl Fixture {
    /// Sets everything up for `flavour` with `replicas` echo pods.
    pub(crate) async fn start(
        test: &str,
        flavour: ShadowFlavour,
        replicas: i32,
    ) -> Result<Fixture> {
        Box::pin(Self::start_with(test, flavour, replicas, |o| o)).await
    }

    /// [`Fixture::start`] with changed options.
    pub(crate) async fn start_with(
        test: &str,
        flavour: ShadowFlavour,
        replicas: i32,
        tweak: impl FnOnce(ConnectOptions) -> ConnectOptions,
    ) -> Result<Fixture> {
        Box::pin(Self::start_as(
            test,
            flavour,
            replicas,
            Shipped::Connect,
            tweak,
        ))
        .await
    }

    /// [`Fixture::start_with`] as a user bound to the shipped Role `shipped`.
    pub(crate) async fn start_as(
        test: &str,
        flavour: ShadowFlavour,
        replicas: i32,
        shipped: Shipped,
        tweak: impl FnOnce(ConnectOptions) -> ConnectOptions,
    ) -> Result<Fixture> {
        let lab = Lab::connect().await?;
        let ns = lab.namespace(test).await?;
        restrict_for(&ns, flavour).await?;
        let echo = ns.deploy_echo(replicas).await?;
        let kubeconfig = scoped_kubeconfig_for(&ns, shipped, true).await?;
        let opts = tweak(options(flavour, ns.name(), &kubeconfig)?);
        let started = std::time::Instant::now();
        let session = Session::connect(opts).await;
        let session = ns
            .explain(session.map_err(anyhow::Error::from))
            .await
            .with_context(|| format!("connecting with the {flavour:?} shadow"))?;
        eprintln!("connected ({flavour:?}) in {:?}", started.elapsed());
        Ok(Fixture {
            lab,
            ns,
            echo,
            session,
            kubeconfig,
        })
    }

    /// Closes the session and checks that nothing of it is left in the cluster.
    pub(crate) async fn finish(self) -> Result<()> {
        self.session.close().await?;
        let left = self
            .ns
            .kubectl(&[
                "get",
                "all,secrets,configmaps,leases",
                "-l",
                &format!("kt.dev/session={}", self.session.id()),
                "-o",
                "name",
            ])
            .await?;
        ensure!(left.trim().is_empty(), "left after close(): {left}");
        let _ = std::fs::remove_file(&self.kubeconfig);
        Ok(())
    }
}

/// Fails, naming them, when kt objects of `kinds` (`kubectl get` kinds, comma
/// separated: "pods,secrets,leases") are left in `ns`.
pub(crate) async fn nothing_of_kt_left(ns: &TestNamespace, kinds: &str) -> Result<()> {
    let left = ns
        .kubectl(&[
            "get",
            kinds,
            "-l",
            "app.kubernetes.io/managed-by=kt",
            "-o",
            "name",
        ])
        .await?;
    ensure!(left.trim().is_empty(), "left behind: {left}");
    Ok(())
}

/// [`nothing_of_kt_left`], but for the objects of the still open session `session`
/// (its connect shadow and Lease).
pub(crate) async fn nothing_of_kt_left_but(
    ns: &TestNamespace,
    kinds: &str,
    session: &str,
) -> Result<()> {
    let left = kt_objects_but(ns, kinds, session).await?;
    ensure!(left.is_empty(), "left behind: {left}");
    Ok(())
}

/// The kt objects of `kinds` in `ns` other than session `session`'s, as `kind/name`
/// lines (empty when there are none).
pub(crate) async fn kt_objects_but(
    ns: &TestNamespace,
    kinds: &str,
    session: &str,
) -> Result<String> {
    let selector = format!("app.kubernetes.io/managed-by=kt,kt.dev/session!={session}");
    let left = ns
        .kubectl(&["get", kinds, "-l", &selector, "-o", "name"])
        .await?;
    Ok(left.trim().to_owned())
}

/// Every kind of object an inbound operation (swap, expose, mesh) may create.
pub(crate) const INBOUND_KINDS: &str =
    "pods,leases,serviceaccounts,roles,rolebindings,services,secrets";

/// Restarts lab component `component` with `testbed/restart` (tests that do this hold
/// one test per binary: cargo runs test binaries one after another).
pub(crate) fn restart(component: &str) -> Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testbed/restart");
    let status = std::process::Command::new(&script)
        .arg(component)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        status.success(),
        "testbed/restart {component} failed: {status}"
    );
    Ok(())
}

/// Waits (bounded) for the next `Reconnected` event of `events`.
pub(crate) async fn reconnected(events: &mut kt_core::Events, after: &str) -> Result<()> {
    let wait = async {
        while let Some(e) = events.next().await {
            match e {
                kt_core::Event::Reconnected { .. } => return Ok(()),
                kt_core::Event::TunnelLost { reason } => {
                    anyhow::bail!("tunnel lost for good after {after}: {reason}")
                }
                _ => {}
            }
        }
        anyhow::bail!("the event stream ended after {after}")
    };
    tokio::time::timeout(Duration::from_secs(150), wait)
        .await
        .with_context(|| format!("no Reconnected event within 150 s after {after}"))?
}

/// What a swap must leave as it found it on `object` (`service/echo`): its spec,
/// labels and annotations, as kubectl shows them.
pub(crate) async fn snapshot(ns: &TestNamespace, object: &str) -> Result<serde_json::Value> {
    let text = ns.kubectl(&["get", object, "-o", "json"]).await?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(serde_json::json!({
        "spec": v["spec"],
        "labels": v["metadata"]["labels"],
        "annotations": v["metadata"]["annotations"],
    }))
}

/// Runs curl with the given proxy arguments against `url`; returns the echo reply.
pub(crate) async fn curl_echo(proxy_args: &[&str], url: &str) -> Result<EchoReply> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--fail-with-body", "--max-time", "30"])
        .args(proxy_args)
        .arg(url)
        // The test's own proxy settings must not interfere.
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy");
    let what = format!("`curl {} {url}`", proxy_args.join(" "));
    let out = kt_lab_tests::run_bounded(cmd, &what, None, Duration::from_secs(60)).await?;
    let body = kt_lab_tests::check_output(&what, out)?;
    let json: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{what} gave no JSON: {body}"))?;
    EchoReply::from_json(json)
}

/// Writes `data`, half-closes, reads until EOF: what an echo server sends back.
pub(crate) async fn echo_round_trip(stream: TcpStream, data: Vec<u8>) -> Result<Vec<u8>> {
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await?;
        w.shutdown().await?;
        anyhow::Ok(w)
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await?;
    let _keep = writer.await??;
    Ok(back)
}

/// Builds kt-core's example `name` with this test's profile and target directory (a
/// no-op when it is up to date) and returns its path: the crash tests kill it.
pub(crate) fn build_example(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary path")?;
    let target_dir = profile_dir.parent().context("target directory")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "-p",
            "kt-core",
            "--example",
            name,
            "--profile",
            &profile,
        ])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .with_context(|| format!("running cargo build --example {name}"))?;
    ensure!(status.success(), "cargo build --example {name}: {status}");
    Ok(profile_dir.join("examples").join(name))
}

/// Waits until `check` says nothing is missing (`None`), at most `bound` after
/// `since`; prints how long it took.
pub(crate) async fn within<F, Fut>(
    since: tokio::time::Instant,
    bound: Duration,
    what: &str,
    mut check: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<String>>>,
{
    let deadline = since + bound;
    loop {
        let missing = check().await?;
        let Some(why) = missing else {
            eprintln!("{what} after {:?}", since.elapsed());
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{what}: not within {bound:?}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A kt-probe on this machine answering as `name` (on 127.0.0.1, a free port), up and
/// listening; killed when dropped.
pub(crate) struct LocalProbe {
    pub(crate) port: u16,
    _child: tokio::process::Child,
}

impl LocalProbe {
    pub(crate) async fn start(bin: &Path, name: &str) -> Result<LocalProbe> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--name",
                name,
            ])
            .kill_on_drop(true)
            .spawn()
            .context("starting a local kt-probe")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "local kt-probe {name} did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(LocalProbe {
            port,
            _child: child,
        })
    }
}
