//! Waiting for the shadow pod to become Ready, reporting progress and failing early
//! (with the image and the reason) when it cannot start.

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::LogParams;
use kube::runtime::{WatchStreamExt as _, watcher};

use super::spec::Runtime;
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::events::{Event, EventBus};

/// Waiting reasons meaning the image cannot be had.
const IMAGE_FAILURES: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
    "ImageInspectError",
];

/// Waiting reasons meaning the container cannot run.
const START_FAILURES: [&str; 4] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// What has been reported so far, so each step is reported once.
#[derive(Default)]
struct Progress {
    scheduled: bool,
    pulling: bool,
    started: bool,
}

/// Waits until pod `name` is Ready, emitting [`Event::Scheduled`], [`Event::Pulling`],
/// [`Event::ImageReady`] and [`Event::Ready`]; returns the pod.
pub(crate) async fn pod_ready(
    cluster: &Cluster,
    name: &str,
    runtime: &Runtime,
    timeout: Duration,
    events: &EventBus,
) -> Result<Pod> {
    let image = runtime.image();
    let api = cluster.pods();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut progress = Progress::default();
    let mut last = "not seen yet".to_owned();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let item = match next {
            Err(_) => {
                return Err(Error::PodReadyTimeout {
                    pod: name.to_owned(),
                    namespace: cluster.namespace.clone(),
                    timeout,
                    last,
                });
            }
            Ok(None) => {
                return Err(Error::ShadowFailed {
                    pod: name.to_owned(),
                    namespace: cluster.namespace.clone(),
                    reason: "the watch on the shadow pod ended".to_owned(),
                    log: String::new(),
                });
            }
            Ok(Some(item)) => item,
        };
        let pod = match item {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(watcher::Event::Delete(_)) => {
                return Err(Error::ShadowFailed {
                    pod: name.to_owned(),
                    namespace: cluster.namespace.clone(),
                    reason: "the shadow pod was deleted while starting".to_owned(),
                    log: String::new(),
                });
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            Err(err) => {
                if let Some(fatal) = watch_error(cluster, err) {
                    return Err(fatal);
                }
                continue;
            }
        };
        last = summary(&pod);
        if let Some(outcome) = step(cluster, &pod, image, &mut progress, events).await {
            return outcome.map(|()| pod);
        }
    }
}

/// Turns a watch error into a fatal error when retrying cannot help (RBAC); `None`
/// means "retry" (the watcher backs off by itself).
fn watch_error(cluster: &Cluster, err: watcher::Error) -> Option<Error> {
    tracing::debug!(target: "kt", "watching the shadow pod: {err}");
    let source = match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => kube::Error::Api(status),
        _ => return None,
    };
    let verb = "watch";
    match cluster.error(source, verb, "pods", "(the shadow pod)") {
        e @ (Error::Forbidden { .. } | Error::NamespaceNotFound { .. }) => Some(e),
        _ => None,
    }
}

/// Looks at one state of the pod: `Some(Ok)` when Ready, `Some(Err)` when it can never
/// be, `None` to keep waiting.
async fn step(
    cluster: &Cluster,
    pod: &Pod,
    image: &str,
    progress: &mut Progress,
    events: &EventBus,
) -> Option<Result<()>> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
    if !progress.scheduled && condition("PodScheduled").is_some_and(|c| c.status == "True") {
        progress.scheduled = true;
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        events.emit(Event::Scheduled { node });
    }
    if let Some(err) = unschedulable(pod, &cluster.namespace) {
        return Some(Err(err));
    }
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == super::spec::CONTAINER);
    if let Some(c) = container {
        if let Some(err) = container_failure(cluster, &name, image, c).await {
            return Some(Err(err));
        }
        let state = c.state.clone().unwrap_or_default();
        if !progress.pulling
            && progress.scheduled
            && (state.waiting.is_some() || state.running.is_some())
        {
            progress.pulling = true;
            events.emit(Event::Pulling {
                image: image.to_owned(),
            });
        }
        if !progress.started && state.running.is_some() {
            progress.started = true;
            if !progress.pulling {
                progress.pulling = true;
                events.emit(Event::Pulling {
                    image: image.to_owned(),
                });
            }
            events.emit(Event::ImageReady {
                image: image.to_owned(),
            });
        }
    }
    if let Some("Failed" | "Succeeded") = status.phase.as_deref() {
        {
            let reason = format!(
                "it stopped (phase {}{})",
                status.phase.clone().unwrap_or_default(),
                status
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            return Some(Err(failed(cluster, &name, reason).await));
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(Err(Error::ShadowFailed {
            pod: name,
            namespace: cluster.namespace.clone(),
            reason: "the shadow pod is being deleted".to_owned(),
            log: String::new(),
        }));
    }
    if condition("Ready").is_some_and(|c| c.status == "True") {
        events.emit(Event::Ready {
            pod_ip: status.pod_ip.unwrap_or_default(),
        });
        return Some(Ok(()));
    }
    None
}

async fn container_failure(
    cluster: &Cluster,
    pod: &str,
    image: &str,
    c: &ContainerStatus,
) -> Option<Error> {
    let state = c.state.clone().unwrap_or_default();
    if let Some(w) = state.waiting {
        let reason = w.reason.unwrap_or_default();
        if IMAGE_FAILURES.contains(&reason.as_str()) {
            return Some(Error::ShadowImage {
                pod: pod.to_owned(),
                image: image.to_owned(),
                reason,
                message: w.message.unwrap_or_default(),
            });
        }
        if START_FAILURES.contains(&reason.as_str()) {
            let why = format!(
                "its container cannot run: {reason}{}",
                w.message.map(|m| format!(" ({m})")).unwrap_or_default()
            );
            return Some(failed(cluster, pod, why).await);
        }
    }
    if let Some(t) = state.terminated {
        let why = format!(
            "its container exited with code {}{}{}",
            t.exit_code,
            t.reason.map(|r| format!(" ({r})")).unwrap_or_default(),
            t.message
                .filter(|m| !m.trim().is_empty())
                .map(|m| format!(": {}", escape_controls(m.trim())))
                .unwrap_or_default()
        );
        return Some(failed(cluster, pod, why).await);
    }
    None
}

/// [`Error::ShadowUnschedulable`] when the scheduler finds no node for a pod that runs
/// kt's shipped agent because of its node affinity (the agent's architecture, and the
/// node its base image is on): no node will come to match by waiting.
pub(crate) fn unschedulable(pod: &Pod, namespace: &str) -> Option<Error> {
    let status = pod.status.as_ref()?;
    let condition = (status.conditions.iter().flatten()).find(|c| c.type_ == "PodScheduled")?;
    if condition.status != "False" || condition.reason.as_deref() != Some("Unschedulable") {
        return None;
    }
    let message = condition.message.clone().unwrap_or_default();
    let spec = pod.spec.as_ref()?;
    let terms = (spec.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|s| s.node_selector_terms.as_slice())
        .unwrap_or_default();
    let value = |key: &str, fields: bool| {
        terms.iter().find_map(|t| {
            let list = if fields {
                &t.match_fields
            } else {
                &t.match_expressions
            };
            (list.iter().flatten())
                .find(|r| r.key == key)
                .and_then(|r| r.values.as_ref()?.first().cloned())
        })
    };
    let arch = value("kubernetes.io/arch", false)?;
    if !message.contains("affinity") {
        return None;
    }
    let image = (spec.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let place = match value("metadata.name", true) {
        Some(node) => format!(
            "kt's agent is built for {arch} nodes and the shadow must run on node `{node}`, \
             where its base image {image} is present"
        ),
        None => format!("kt's agent is built for {arch} nodes"),
    };
    Some(Error::ShadowUnschedulable {
        pod: pod.metadata.name.clone().unwrap_or_default(),
        namespace: namespace.to_owned(),
        message,
        hint: format!(
            "{place}; if the nodes are of another architecture, give a shadow image built \
             for them (the shadow image option, --image or KT_SHADOW_IMAGE) until kt ships \
             an agent for it, or ship one with the agent directory option"
        ),
    })
}

/// A [`Error::ShadowFailed`] with the end of the pod's log, if it can be read; an
/// [`Error::AgentTampered`] if the log says the loader refused the shipped agent.
pub(crate) async fn failed(cluster: &Cluster, pod: &str, reason: String) -> Error {
    let params = LogParams {
        tail_lines: Some(20),
        container: Some(super::spec::CONTAINER.to_owned()),
        ..LogParams::default()
    };
    let log = tokio::time::timeout(Duration::from_secs(5), cluster.pods().logs(pod, &params))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    if let Some(e) = refused(&cluster.namespace, &log) {
        return e;
    }
    shadow_failed(pod, &cluster.namespace, reason, &log)
}

/// The loader's refusal in a pod's `log`, as [`Error::AgentTampered`].
fn refused(namespace: &str, log: &str) -> Option<Error> {
    let line = log
        .lines()
        .find(|l| l.starts_with(kt_proto::agent::LOADER_REFUSED))?;
    let line = escape_controls(line);
    let configmap = line
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|w| w.starts_with(kt_proto::agent::PART_PREFIX))
        .unwrap_or("kt-part-*")
        .to_owned();
    Some(Error::AgentTampered {
        namespace: namespace.to_owned(),
        configmap,
        detail: line,
    })
}

/// The [`Error::ShadowFailed`] quoting `log`, the raw text the pod wrote.
fn shadow_failed(pod: &str, namespace: &str, reason: String, log: &str) -> Error {
    Error::ShadowFailed {
        pod: pod.to_owned(),
        namespace: namespace.to_owned(),
        reason,
        log: escape_controls(log.trim_end()),
    }
}

/// Text a pod wrote, safe to print on a terminal: control characters (escape
/// sequences, `\r`, NUL, C1 controls) and bidirectional overrides are shown escaped
/// (`\u{1b}`, `\r`, `\0`), so a log cannot move the cursor, rewrite the lines before it
/// or retitle the terminal of whoever reads the error. Line breaks and tabs stay.
pub(crate) fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n' && c != '\t') || bidi {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// One line describing the pod's state, for timeout messages.
pub(crate) fn summary(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| {
            let mut s = format!("{}={}", c.type_, c.status);
            if let Some(m) = c.message.as_deref().filter(|m| !m.is_empty()) {
                s.push_str(&format!(" ({m})"));
            }
            s
        })
        .collect();
    let containers: Vec<String> = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| {
            let state = c.state.clone().unwrap_or_default();
            if let Some(w) = state.waiting {
                format!("{}: waiting ({})", c.name, w.reason.unwrap_or_default())
            } else if let Some(t) = state.terminated {
                format!("{}: exited {}", c.name, t.exit_code)
            } else {
                format!("{}: running, ready={}", c.name, c.ready)
            }
        })
        .collect();
    format!(
        "phase {}, conditions [{}], containers [{}]",
        status.phase.unwrap_or_else(|| "Pending".to_owned()),
        conditions.join(", "),
        containers.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_pod_log_has_its_control_characters_escaped() {
        // What a pod can write to move the cursor, clear the screen, retitle the
        // terminal or overwrite the line before it.
        let log = "starting\n\u{1b}[2J\u{1b}]0;pwned\u{7}ok\rfake line\0end\u{9b}31m\u{202e}txt\n";
        let message = shadow_failed("kt-shadow-x", "dev", "it stopped".to_owned(), log).to_string();
        assert!(
            !message
                .chars()
                .any(|c| c != '\n' && (c.is_control() || c == '\u{202e}')),
            "{message:?}"
        );
        assert!(
            message.contains(
                "its last log lines:\nstarting\n\\u{1b}[2J\\u{1b}]0;pwned\\u{7}ok\\rfake line\\0end\\u{9b}31m\\u{202e}txt"
            ),
            "{message}"
        );
    }
}
