//! Throwaway network namespaces for the VPN's component tests: every device, address
//! and route a test makes lives in one, and the namespace is deleted when the guard
//! drops, even when the test fails.

use std::fs::File;
use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::CloneFlags;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace `kt-t-stack-<pid>-<n>` with its loopback up; deleted on drop.
pub(super) struct Netns {
    pub(super) name: String,
}

impl Netns {
    pub(super) fn new() -> Netns {
        let name = format!(
            "kt-t-stack-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run `ip netns add` (iproute2 installed? running as root?)");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`; panics on failure, returns stdout.
    pub(super) fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a new thread that has entered the namespace: sockets, netlink
    /// sockets and tun devices it opens belong to the namespace.
    pub(super) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&self.name);
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs a future on a multi-thread runtime whose threads are all in the namespace
    /// (threads inherit the namespace of the thread that starts them).
    pub(super) fn block_on<F>(&self, fut: impl FnOnce() -> F + Send) -> F::Output
    where
        F: Future,
        F::Output: Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(fut())
        })
    }
}

/// Moves the calling thread into the namespace `name`.
pub(super) fn enter(name: &str) {
    let ns = File::open(format!("/run/netns/{name}")).expect("open the namespace");
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("ip netns del {}: {e}", self.name),
        }
    }
}
