//! The contenders of the throughput and latency benchmarks, all reaching the same echo
//! pod (`<pod IP>:8080`): kt's SOCKS5 proxy, HTTP proxy and local forward (one
//! kt-shadow session), `kubectl port-forward` straight to the pod, and `ssh -D` over a
//! `kubectl port-forward` to an sshd pod. Optionally kt's SOCKS5 proxy with the OpenSSH
//! shadow flavour, which puts kt's client in front of the same sshd as `ssh -D`.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context as _, Result};
use kt_core::{Session, ShadowFlavour};
use kt_lab_tests::KubectlPortForward;

use crate::{Bench, ECHO_HTTP_PORT, Route, SshDynamicForward};

/// Which tool a [`Peer`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// kt's SOCKS5 proxy (kt-shadow flavour).
    KtSocks,
    /// kt's HTTP proxy, plain absolute-form requests (kt-shadow flavour).
    KtHttp,
    /// kt's `Session::forward("pod/<echo>", 8080)` (kt-shadow flavour).
    KtForward,
    /// kt's SOCKS5 proxy with the OpenSSH shadow flavour.
    KtSocksOpenSsh,
    /// `kubectl port-forward pod/<echo> :8080`.
    Kubectl,
    /// `ssh -D` over `kubectl port-forward pod/<sshd> :2222`.
    SshD,
}

/// One contender: a name for the report and the route to the echo pod.
#[derive(Debug, Clone)]
pub struct Peer {
    /// What it measures.
    pub kind: Kind,
    /// The row label.
    pub label: &'static str,
    /// How requests reach the echo pod.
    pub route: Route,
}

/// The running contenders. [`Peers::close`] closes the sessions and ends the processes;
/// dropping it kills the processes, and the namespace's deletion removes the rest.
pub struct Peers {
    /// Every contender, in report order (kt first, then the peers).
    pub peers: Vec<Peer>,
    session: Session,
    kt_openssh: Option<Session>,
    kubectl: Option<KubectlPortForward>,
    ssh: Option<SshDynamicForward>,
}

impl Peers {
    /// Starts everything in `bench`'s namespace; with `kt_openssh`, also a session with
    /// the OpenSSH shadow flavour.
    pub async fn start(bench: &Bench, kt_openssh: bool) -> Result<Peers> {
        let session = Box::pin(Session::connect(bench.kt_options()?))
            .await
            .context("Session::connect (kt-shadow)")?;
        let mut peers = Peers {
            peers: Vec::new(),
            session,
            kt_openssh: None,
            kubectl: None,
            ssh: None,
        };
        match peers.fill(bench, kt_openssh).await {
            Ok(()) => Ok(peers),
            Err(e) => {
                if let Err(c) = peers.close().await {
                    eprintln!("bench: while cleaning up after an error: {c:#}");
                }
                Err(e)
            }
        }
    }

    async fn fill(&mut self, bench: &Bench, kt_openssh: bool) -> Result<()> {
        let ip = bench.echo_ip.as_str();
        let pod = format!("pod/{}", bench.echo_pod);
        let forward = self
            .session
            .forward(&pod, ECHO_HTTP_PORT)
            .await
            .context("Session::forward")?;
        self.peers.extend([
            Peer {
                kind: Kind::KtSocks,
                label: "kt socks5",
                route: Route::socks5(self.session.socks5_addr(), ip, ECHO_HTTP_PORT),
            },
            Peer {
                kind: Kind::KtHttp,
                label: "kt HTTP proxy",
                route: Route::http_proxy(self.session.http_proxy_addr(), ip, ECHO_HTTP_PORT),
            },
            Peer {
                kind: Kind::KtForward,
                label: "kt forward",
                route: Route::local(forward),
            },
        ]);
        if kt_openssh {
            let s = Box::pin(Session::connect(
                bench.kt_options_for(ShadowFlavour::OpenSsh)?,
            ))
            .await
            .context("Session::connect (OpenSSH shadow)")?;
            self.peers.push(Peer {
                kind: Kind::KtSocksOpenSsh,
                label: "kt socks5 (sshd shadow)",
                route: Route::socks5(s.socks5_addr(), ip, ECHO_HTTP_PORT),
            });
            self.kt_openssh = Some(s);
        }
        let kubectl = bench.ns.kubectl_port_forward(&pod, ECHO_HTTP_PORT).await?;
        self.peers.push(Peer {
            kind: Kind::Kubectl,
            label: "kubectl port-forward",
            route: Route::local(SocketAddr::from((Ipv4Addr::LOCALHOST, kubectl.local_port))),
        });
        self.kubectl = Some(kubectl);
        let ssh = SshDynamicForward::start(&bench.ns, (ip, ECHO_HTTP_PORT)).await?;
        self.peers.push(Peer {
            kind: Kind::SshD,
            label: "ssh -D (OpenSSH)",
            route: Route::socks5(ssh.socks, ip, ECHO_HTTP_PORT),
        });
        self.ssh = Some(ssh);
        Ok(())
    }

    /// The contender of `kind`, if running.
    pub fn get(&self, kind: Kind) -> Option<&Peer> {
        self.peers.iter().find(|p| p.kind == kind)
    }

    /// Fails if kubectl or ssh has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(k) = &mut self.kubectl {
            k.check_running()?;
        }
        if let Some(s) = &mut self.ssh {
            s.check_running()?;
        }
        Ok(())
    }

    /// What the child processes printed, for an error report.
    pub fn diagnostics(&mut self) -> String {
        let mut out = String::new();
        if let Some(k) = &mut self.kubectl {
            let state = match k.check_running() {
                Ok(()) => "running".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            out.push_str(&format!(
                "kubectl port-forward to the echo pod: {state}; it said:\n{}",
                k.output()
            ));
        }
        if let Some(s) = &mut self.ssh {
            out.push_str(&s.diagnostics());
        }
        out
    }

    /// Ends ssh and kubectl and closes the sessions (removing their pods and Secrets).
    pub async fn close(mut self) -> Result<()> {
        if let Some(ssh) = self.ssh.take() {
            ssh.stop().await;
        }
        drop(self.kubectl.take());
        let openssh = match self.kt_openssh.take() {
            Some(s) => s.close().await,
            None => Ok(()),
        };
        self.session.close().await?;
        openssh?;
        Ok(())
    }
}
