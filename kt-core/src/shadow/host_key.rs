//! Learning the kt-shadow pod's host key from its log, through the API server.
//!
//! kt-shadow makes its host key pair in memory when it starts and prints only the
//! public half, on one line of its log (`kt-shadow host-key ssh-ed25519 AAAA...`,
//! [`kt_proto::shadow::HOST_KEY_LOG_PREFIX`]), before it listens. Once the pod is
//! Ready, the client reads that line and pins the key for every link, the first and
//! each reconnect, as it pins the pod's UID. The channel is the pod's log as the API
//! server serves it (`GET pods/<name>/log?container=shadow&limitBytes=…`, which the
//! Role grants as `get pods/log`), bracketed by two reads of the pod ([`read`]):
//!
//! 1. get the pod: its UID is the one the API server gave the pod kt created (pinned
//!    at create), it is not being deleted, its image is the one kt asked for, and its
//!    container is in its first run (restart count 0) with container ID `C`;
//! 2. read the start of the log (at most [`LOG_LIMIT_BYTES`]) and take the first
//!    complete line that starts with the prefix;
//! 3. get the pod again: the same UID and the same container ID `C`, restart count 0.
//!
//! **Why a namespace peer cannot forge it.** The log is written by the container's own
//! process only, and kt-shadow writes this line before it listens, so before anything
//! outside the pod can make it write anything; only the first such line counts. It is
//! not an object anyone could edit (a Secret, a ConfigMap, an annotation): the API
//! server reads it from the node that runs the pod. What decides *which* pod's log is
//! served is the name, and the two reads pin it down: a pod name maps to at most one
//! pod at a time, and a UID is never given to another pod, so the pod of that name
//! having the pinned UID both before and after means that the name meant that pod for
//! the whole time in between, when the log was served. Had the pod been deleted and a
//! pod of the same name created in between, the second read would show another UID
//! (the pinned one cannot come back). Likewise the same container ID before and after,
//! with no restart, means the log is of the container run that is serving now. And the
//! pod's arguments, which carry the client's public key, cannot be changed after the
//! pod exists, and hold nothing secret.
//!
//! **Why a peer who recreates the pod cannot answer the handshake.** The host key's
//! private half was made inside the pinned pod's process and never left its memory: no
//! Secret, no file, no environment variable, no log line. A pod created afterwards under
//! the same name (same image, same arguments, even by a cluster admin) runs a kt-shadow
//! that makes a *new* key pair and so cannot prove it holds the pinned one; the client's
//! SSH handshake refuses it (`Error::Ssh`, "host key"). Before that, the link's UID check
//! refuses it already ([`Error::ShadowReplaced`]), so no port-forward byte reaches it.
//!
//! What this does not cover: whoever can run code inside the pod itself (`pods/exec`,
//! ephemeral containers) or change its image in place (`patch pods`, which restarts the
//! container: the restart count check refuses a restarted container while the key is
//! read, and the new run has another key afterwards) holds the pod, in any design.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use russh::keys::PublicKey;

use super::spec::CONTAINER;
use super::wait::escape_controls;
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::transport::identity;

/// The most of the log read: the host-key line is among the first lines the shadow
/// writes, so a few KiB would do; the rest of the budget is for a chatty runtime.
pub(crate) const LOG_LIMIT_BYTES: i64 = 16 * 1024;

/// How long to wait before reading the log again when the line is not there yet (the
/// runtime may copy the container's output to the log a moment after it was written).
const MISSING_RETRY: Duration = Duration::from_millis(200);

/// How much of the log an error quotes.
const QUOTE_LINES: usize = 20;
const QUOTE_BYTES: usize = 2048;

/// What the start of a log says about the host key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reported {
    /// The first host-key line holds this key.
    Key(PublicKey),
    /// No complete host-key line (yet).
    Missing,
    /// The first host-key line does not hold a public key: why.
    Invalid(String),
}

/// Reads the host key from the start of a kt-shadow's log.
pub(crate) fn parse(log: &str) -> Reported {
    match kt_proto::shadow::reported_host_key(log) {
        None => Reported::Missing,
        Some(text) => match PublicKey::from_openssh(text) {
            Ok(key) => Reported::Key(key),
            Err(e) => Reported::Invalid(format!(
                "its host-key line `{}{}` does not hold an OpenSSH public key ({e})",
                kt_proto::shadow::HOST_KEY_LOG_PREFIX,
                escape_controls(&shorten(text, 200))
            )),
        },
    }
}

/// The container run of the pod kt created, read by name (`None`: not found): its
/// container ID, or why the pod or its container is not the one kt created and
/// started (the UID differs or the pod is going, the image was changed, the container
/// restarted or is not running).
pub(crate) fn run_of(uid: &str, image: &str, pod: Option<&Pod>) -> Result<String, String> {
    identity(uid, pod)?;
    let Some(pod) = pod else {
        return Err("it was deleted".to_owned());
    };
    let spec_image = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .find(|c| c.name == CONTAINER)
        .and_then(|c| c.image.as_deref())
        .unwrap_or_default();
    if spec_image != image {
        return Err(format!(
            "its container's image is now `{spec_image}`, and this session created it with \
             `{image}`"
        ));
    }
    let status = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|c| c.name == CONTAINER);
    let Some(status) = status else {
        return Err("its container has no status".to_owned());
    };
    if status.restart_count != 0 {
        return Err(format!(
            "its container was restarted (restart count {}), so it is not the run this \
             session waited for",
            status.restart_count
        ));
    }
    match status.container_id.as_deref() {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err("its container is not running".to_owned()),
    }
}

/// Whether the log read between `before` and `after` (the pod read by name just
/// before and just after) is the log of the container run kt started: both reads show
/// the pod kt created (UID `uid`, image `image`) with the same container run.
pub(crate) fn same_run(
    uid: &str,
    image: &str,
    before: Option<&Pod>,
    after: Option<&Pod>,
) -> Result<(), String> {
    let first = run_of(uid, image, before)?;
    let second = run_of(uid, image, after)?;
    if first != second {
        return Err(format!(
            "its container changed from {first} to {second} while its log was read"
        ));
    }
    Ok(())
}

/// Reads the host key the kt-shadow pod `pod` (created with UID `uid` and image
/// `image`, Ready) reports in its log, bracketed by two reads of the pod (see the
/// module docs), retrying while the line is not in the log yet, until `until`.
///
/// # Errors
///
/// [`Error::ShadowReplaced`] when the pod is not the one kt created and started,
/// [`Error::ShadowHostKey`] when the line is not a key or not there by `until`,
/// API errors of the reads (`get pods`, `get pods/log`).
pub(crate) async fn read(
    cluster: &Cluster,
    pod: &str,
    uid: &str,
    image: &str,
    until: tokio::time::Instant,
) -> Result<PublicKey> {
    let started = tokio::time::Instant::now();
    let mut last = String::new();
    match tokio::time::timeout_at(until, read_loop(cluster, pod, uid, image, &mut last)).await {
        Ok(result) => result,
        Err(_) => Err(Error::ShadowHostKey {
            pod: pod.to_owned(),
            namespace: cluster.namespace.clone(),
            reason: format!(
                "no line starting with `{}` in the first {LOG_LIMIT_BYTES} bytes of its log \
                 within {:?}",
                kt_proto::shadow::HOST_KEY_LOG_PREFIX,
                started.elapsed()
            ),
            log: quote(&last),
        }),
    }
}

async fn read_loop(
    cluster: &Cluster,
    pod: &str,
    uid: &str,
    image: &str,
    last: &mut String,
) -> Result<PublicKey> {
    let pods = cluster.pods();
    let replaced = |reason: String| Error::ShadowReplaced {
        pod: pod.to_owned(),
        namespace: cluster.namespace.clone(),
        reason,
    };
    let get = || async {
        pods.get_opt(pod).await.map_err(|e| {
            cluster.error(
                e,
                "get",
                "pods",
                &format!("(the shadow pod `{pod}`, to check whose log kt reads)"),
            )
        })
    };
    let params = LogParams {
        container: Some(CONTAINER.to_owned()),
        limit_bytes: Some(LOG_LIMIT_BYTES),
        ..LogParams::default()
    };
    loop {
        let before = get().await?;
        run_of(uid, image, before.as_ref()).map_err(replaced)?;
        let log = pods.logs(pod, &params).await.map_err(|e| {
            cluster.error(
                e,
                "get",
                "pods/log",
                &format!("(the shadow pod `{pod}`'s log, for its host key)"),
            )
        })?;
        let after = get().await?;
        same_run(uid, image, before.as_ref(), after.as_ref()).map_err(replaced)?;
        match parse(&log) {
            Reported::Key(key) => return Ok(key),
            Reported::Invalid(reason) => {
                return Err(Error::ShadowHostKey {
                    pod: pod.to_owned(),
                    namespace: cluster.namespace.clone(),
                    reason,
                    log: quote(&log),
                });
            }
            Reported::Missing => {
                *last = log;
                tokio::time::sleep(MISSING_RETRY).await;
            }
        }
    }
}

/// The start of `log` for an error message: at most [`QUOTE_LINES`] lines and about
/// [`QUOTE_BYTES`] bytes, control characters escaped.
pub(crate) fn quote(log: &str) -> String {
    let lines: Vec<&str> = log.lines().take(QUOTE_LINES).collect();
    escape_controls(shorten(&lines.join("\n"), QUOTE_BYTES).trim_end())
}

/// `text` cut to at most `max` bytes (at a character boundary), with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPDBp3khpUoQDgs/jC6tYksSwC/LKe35IRMRz4hAr1x4";
    const IMAGE: &str = "kt.invalid/kt-shadow:0.1.0";

    fn pod(uid: &str, image: &str, container_id: Option<&str>, restarts: i32) -> Pod {
        let mut status = serde_json::json!({
            "name": CONTAINER, "ready": true, "restartCount": restarts, "image": image,
            "imageID": "", "state": { "running": {} },
        });
        if let Some(id) = container_id {
            status["containerID"] = id.into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "kt-shadow-t1", "uid": uid },
            "spec": { "containers": [{ "name": CONTAINER, "image": image }] },
            "status": { "containerStatuses": [status] },
        }))
        .expect("a pod")
    }

    #[test]
    fn the_first_host_key_line_is_the_key() {
        let log = format!(
            "kt-shadow host-key {KEY}\n2026-01-01T00:00:00Z  INFO kt-shadow listening\n\
             kt-shadow host-key ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+CPjJ5Kcn/Hm2zN0Ehqrq02FK9HbW3N9m9gs/5+GLb\n"
        );
        let expected = PublicKey::from_openssh(KEY).expect("test key");
        assert_eq!(parse(&log), Reported::Key(expected));
    }

    #[test]
    fn a_missing_or_cut_line_is_missing_and_a_bad_one_is_quoted_escaped() {
        assert_eq!(parse(""), Reported::Missing);
        assert_eq!(parse("INFO kt-shadow listening\n"), Reported::Missing);
        // Cut by the byte limit or still being written: not a line yet.
        assert_eq!(
            parse(&format!("kt-shadow host-key {KEY}")),
            Reported::Missing
        );
        let Reported::Invalid(why) = parse("kt-shadow host-key ssh-ed25519 \u{1b}[2Jnope\n") else {
            panic!("a line without a key was taken");
        };
        assert!(
            why.contains("`kt-shadow host-key ssh-ed25519 \\u{1b}[2Jnope`")
                && why.contains("does not hold an OpenSSH public key"),
            "{why}"
        );
        assert!(!why.contains('\u{1b}'), "{why}");
    }

    #[test]
    fn the_log_is_the_pinned_pods_only_if_both_reads_show_the_same_run() {
        let run = pod("u1", IMAGE, Some("containerd://c1"), 0);
        assert_eq!(same_run("u1", IMAGE, Some(&run), Some(&run)), Ok(()));
        // Replaced between the reads, or before: another UID.
        let other = pod("u2", IMAGE, Some("containerd://c9"), 0);
        let why = same_run("u1", IMAGE, Some(&run), Some(&other)).unwrap_err();
        assert!(why.contains("UID u2") && why.contains("UID u1"), "{why}");
        assert!(same_run("u1", IMAGE, Some(&other), Some(&run)).is_err());
        assert_eq!(
            same_run("u1", IMAGE, Some(&run), None).unwrap_err(),
            "it was deleted"
        );
        // Same pod, another container run.
        let restarted = pod("u1", IMAGE, Some("containerd://c2"), 1);
        let why = same_run("u1", IMAGE, Some(&run), Some(&restarted)).unwrap_err();
        assert!(why.contains("restarted (restart count 1)"), "{why}");
        let swapped = pod("u1", IMAGE, Some("containerd://c2"), 0);
        let why = same_run("u1", IMAGE, Some(&run), Some(&swapped)).unwrap_err();
        assert!(
            why.contains("from containerd://c1 to containerd://c2"),
            "{why}"
        );
        // The image changed in place, or the container is not running yet.
        let patched = pod("u1", "evil/sshd:1", Some("containerd://c1"), 0);
        let why = same_run("u1", IMAGE, Some(&patched), Some(&patched)).unwrap_err();
        assert!(why.contains("`evil/sshd:1`"), "{why}");
        let waiting = pod("u1", IMAGE, None, 0);
        assert_eq!(
            run_of("u1", IMAGE, Some(&waiting)).unwrap_err(),
            "its container is not running"
        );
    }

    #[test]
    fn the_error_says_what_to_check_and_quotes_the_log_escaped() {
        let e = Error::ShadowHostKey {
            pod: "kt-shadow-t1".to_owned(),
            namespace: "dev".to_owned(),
            reason: "no line starting with `kt-shadow host-key ` in the first 16384 bytes"
                .to_owned(),
            log: quote("sshd: unknown option --authorized-key\u{1b}]0;x\u{7}\n"),
        };
        assert_eq!(e.kind(), crate::ErrorKind::Shadow);
        let msg = e.to_string();
        for part in [
            "shadow pod `kt-shadow-t1` did not report its SSH host key",
            "no line starting with `kt-shadow host-key `",
            "`kubectl logs kt-shadow-t1 -n dev`",
            "its log begins:\nsshd: unknown option --authorized-key\\u{1b}]0;x\\u{7}",
        ] {
            assert!(msg.contains(part), "`{part}` missing from: {msg}");
        }
        assert!(!msg.contains('\u{1b}'), "{msg}");
    }

    #[test]
    fn quoted_log_is_bounded_and_escaped() {
        let long: String = (0..100).map(|i| format!("line {i} \u{7}\n")).collect();
        let q = quote(&long);
        assert_eq!(q.lines().count(), QUOTE_LINES);
        assert!(q.contains("line 19 \\u{7}") && !q.contains('\u{7}'), "{q}");
        let wide = "é".repeat(QUOTE_BYTES);
        assert!(quote(&wide).ends_with('…'));
        assert!(quote(&wide).len() <= QUOTE_BYTES + '…'.len_utf8());
    }
}
