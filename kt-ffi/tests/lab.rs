//! C programs against the lab (`testbed/up`; these tests fail when it is down): a
//! whole session from C (directly and under valgrind), a swap and an expose from C
//! (directly and under valgrind), a mesh from C (likewise), a swap and a mesh left
//! open at exit, a missing namespace and an RBAC refusal with their kinds' statuses,
//! VPN mode refused without CAP_NET_ADMIN, VPN mode in the lab's laptop network
//! namespace, sessions a program leaves open (closed at exit), proxies with
//! per-session credentials, and the C examples (connect, and swap until Ctrl-C). Each
//! runs in its own namespace made by `testbed/test-namespace` (restricted Pod
//! Security, kt's Role only), and checks that the session left nothing in the
//! cluster. The imageless shadow: an agent directory without the agent is refused
//! before anything is made; a default connect uploads kt's agent once.

mod common;

use std::process::Command;

use common::{
    LabNamespace, assert_fresh_libkt, compile, crate_dir, printed, run_checked, valgrind,
};

/// Runs the compiled C program `exe` with the namespace's kubeconfig and name
/// (optionally under valgrind) and checks that it passed, that valgrind found
/// nothing, and that it loaded the libkt this run built.
fn run_c(
    exe: &std::path::Path,
    ns: &LabNamespace,
    under_valgrind: bool,
    what: &str,
) -> std::process::Output {
    let mut cmd = if under_valgrind {
        valgrind(exe)
    } else {
        Command::new(exe)
    };
    let out = run_checked(cmd.arg(&ns.kubeconfig).arg(&ns.name));
    assert!(
        out.status.success(),
        "{what} failed (see its output above{})",
        if under_valgrind {
            "; exit 99 is valgrind's: memory errors or leaks"
        } else {
            ""
        }
    );
    if under_valgrind {
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("ERROR SUMMARY: 0 errors"),
            "valgrind reported errors"
        );
    }
    assert_fresh_libkt(&out);
    out
}

/// Runs `tests/c/session.c` (optionally under valgrind) in a fresh namespace and
/// checks that nothing labelled with its session id is left.
fn whole_session(prefix: &str, under_valgrind: bool) {
    let ns = LabNamespace::create(prefix);
    let exe = compile(&crate_dir().join("tests/c/session.c"), prefix);
    let out = run_c(&exe, &ns, under_valgrind, "session.c");
    let id = printed(&out, "SESSION_ID");
    let left = ns.objects(&format!("kt.dev/session={id}"));
    assert!(left.is_empty(), "session {id} left objects behind:\n{left}");
}

#[test]
fn whole_session_from_c_forwards_proxies_resolves_and_leaves_nothing() {
    whole_session("kt-ffi-session", false);
}

#[test]
fn whole_session_from_c_under_valgrind_has_no_memory_errors_or_leaks() {
    whole_session("kt-ffi-valgrind", true);
}

/// What a swap must leave as it found it: the Service's and the Deployment's spec,
/// labels and annotations.
fn echo_snapshot(ns: &LabNamespace) -> String {
    let fields = "{.spec}{.metadata.labels}{.metadata.annotations}";
    ns.kubectl(&format!(
        "get service/echo deployment/echo -o jsonpath='{fields}'"
    ))
}

/// Runs `tests/c/swap.c` (optionally under valgrind) in a fresh namespace bound to
/// the shipped inbound Role; afterwards the echo Service and Deployment equal a
/// snapshot taken before, and nothing of the session or the swap is left.
fn swap_from_c(prefix: &str, under_valgrind: bool) {
    let ns = LabNamespace::create_with_role(prefix, "inbound");
    let before = echo_snapshot(&ns);
    let exe = compile(&crate_dir().join("tests/c/swap.c"), prefix);
    let out = run_c(&exe, &ns, under_valgrind, "swap.c");
    assert_eq!(
        before,
        echo_snapshot(&ns),
        "the echo Service or Deployment differs from before the swap"
    );
    assert_nothing_left(&ns, &out, &["SESSION_ID", "SWAP_ID", "EXPOSE_ID"]);
}

#[test]
fn swap_from_c_sends_the_services_traffic_to_a_local_server_and_puts_it_back() {
    swap_from_c("kt-ffi-swap", false);
}

#[test]
fn swap_from_c_under_valgrind_has_no_memory_errors_or_leaks() {
    swap_from_c("kt-ffi-swap-vg", true);
}

/// Runs `tests/c/mesh.c` (optionally under valgrind) in a fresh namespace bound to
/// the shipped inbound Role; afterwards the echo Service and Deployment equal a
/// snapshot taken before, and nothing of the session, the mesh or the router is left.
fn mesh_from_c(prefix: &str, under_valgrind: bool) {
    let ns = LabNamespace::create_with_role(prefix, "inbound");
    let before = echo_snapshot(&ns);
    let exe = compile(&crate_dir().join("tests/c/mesh.c"), prefix);
    let out = run_c(&exe, &ns, under_valgrind, "mesh.c");
    assert_eq!(
        before,
        echo_snapshot(&ns),
        "the echo Service or Deployment differs from before the mesh"
    );
    assert_nothing_left(&ns, &out, &["SESSION_ID", "MESH_ID"]);
}

#[test]
fn mesh_from_c_routes_requests_with_its_header_here_and_the_rest_to_the_service() {
    mesh_from_c("kt-ffi-mesh", false);
}

#[test]
fn mesh_from_c_under_valgrind_has_no_memory_errors_or_leaks() {
    mesh_from_c("kt-ffi-mesh-vg", true);
}

/// No object labelled with the session id `tests/c` printed for each of `keys` is
/// left, nor any mesh router.
fn assert_nothing_left(ns: &LabNamespace, out: &std::process::Output, keys: &[&str]) {
    let routers = ns.kubectl("get pods -l kt.dev/router -o name");
    assert!(routers.trim().is_empty(), "a router is left: {routers}");
    for key in keys {
        let id = printed(out, key);
        let left = ns.kubectl(&format!(
            "get pods,services,secrets,serviceaccounts,roles,rolebindings,leases \
             -l kt.dev/session={id} -o name"
        ));
        assert!(
            left.trim().is_empty(),
            "{key} {id} left objects behind:\n{left}"
        );
    }
}

/// Runs `tests/c/swap_exit.c` (`extra` arguments after the namespace) and checks the
/// exit handler closed what it left open: the echo app equals its snapshot.
fn left_open_at_exit(prefix: &str, extra: &[&str]) {
    let ns = LabNamespace::create_with_role(prefix, "inbound");
    let before = echo_snapshot(&ns);
    let exe = compile(&crate_dir().join("tests/c/swap_exit.c"), prefix);
    let out = run_checked(
        Command::new(&exe)
            .arg(&ns.kubeconfig)
            .arg(&ns.name)
            .args(extra),
    );
    assert!(out.status.success(), "swap_exit.c failed (see above)");
    assert_fresh_libkt(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("closing 1 swap(s), expose(s) or mesh(es) the program left open")
            && !stderr.contains("panicked"),
        "the exit handler did not close it: {stderr}"
    );
    assert_eq!(
        before,
        echo_snapshot(&ns),
        "the echo Service or Deployment was not put back at exit"
    );
    let key = if extra.is_empty() {
        "SWAP_ID"
    } else {
        "MESH_ID"
    };
    assert_nothing_left(&ns, &out, &["SESSION_ID", key]);
}

#[test]
fn a_mesh_left_open_is_closed_when_the_program_exits() {
    left_open_at_exit("kt-ffi-mesh-exit", &["mesh"]);
}

#[test]
fn a_swap_left_open_is_put_back_when_the_program_exits() {
    left_open_at_exit("kt-ffi-swap-exit", &[]);
}

#[test]
fn proxy_auth_from_c_puts_credentials_in_the_urls_and_the_proxies_require_them() {
    let ns = LabNamespace::create("kt-ffi-pauth");
    let exe = compile(&crate_dir().join("tests/c/proxy_auth.c"), "proxy_auth");
    let out = run_checked(Command::new(&exe).arg(&ns.kubeconfig).arg(&ns.name));
    assert!(
        out.status.success(),
        "proxy_auth.c failed (see its output above)"
    );
    assert_fresh_libkt(&out);
    let id = printed(&out, "SESSION_ID");
    let left = ns.objects(&format!("kt.dev/session={id}"));
    assert!(left.is_empty(), "session {id} left objects behind:\n{left}");
}

#[test]
fn vpn_connect_without_cap_net_admin_fails_with_needs_capability_and_creates_nothing() {
    let ns = LabNamespace::create("kt-ffi-vpn");
    let exe = compile(
        &crate_dir().join("tests/c/vpn_needs_capability.c"),
        "vpn_needs_capability",
    );
    // As root the test has CAP_NET_ADMIN; take it away from the C program (and from
    // anything it could gain on exec).
    let out = run_checked(
        Command::new("setpriv")
            .args(["--inh-caps=-all", "--bounding-set=-net_admin", "--"])
            .arg(&exe)
            .arg(&ns.kubeconfig)
            .arg(&ns.name),
    );
    assert!(
        out.status.success(),
        "vpn_needs_capability.c failed (see its output above)"
    );
    assert_fresh_libkt(&out);
    let left = ns.objects(common::SESSION_OBJECTS);
    assert!(
        left.is_empty(),
        "a refused VPN connect created objects:\n{left}"
    );
}

/// Everything of kt's in the namespace (kt labels every object it makes).
fn kt_objects(ns: &LabNamespace) -> String {
    ns.kubectl(&format!(
        "get pods,secrets,services,configmaps,leases -l {} -o name",
        common::SESSION_OBJECTS
    ))
    .trim()
    .to_owned()
}

/// Runs `tests/c/imageless.c connect` in `ns`; returns the session id and how many
/// uploading events it saw.
fn imageless_connect(exe: &std::path::Path, ns: &LabNamespace) -> (String, String) {
    let out = run_checked(
        Command::new(exe)
            .arg("connect")
            .arg(&ns.kubeconfig)
            .arg(&ns.name),
    );
    assert!(
        out.status.success(),
        "imageless.c connect failed (see its output above)"
    );
    assert_fresh_libkt(&out);
    (printed(&out, "SESSION_ID"), printed(&out, "UPLOADS"))
}

#[test]
fn imageless_from_c_a_missing_agent_is_named_and_a_default_connect_uploads_once() {
    let ns = LabNamespace::create("kt-ffi-imageless");
    let exe = compile(&crate_dir().join("tests/c/imageless.c"), "imageless");
    // (a) An agent directory without the agent: a clear refusal, nothing made.
    let empty = common::scratch().join("agent-dir-without-the-agent");
    std::fs::create_dir_all(&empty).expect("making the empty agent directory");
    let out = run_checked(
        Command::new(&exe)
            .arg("missing-agent")
            .arg(&ns.kubeconfig)
            .arg(&ns.name)
            .arg(&empty),
    );
    assert!(
        out.status.success(),
        "imageless.c missing-agent failed (see its output above)"
    );
    assert_fresh_libkt(&out);
    let left = kt_objects(&ns);
    assert!(
        left.is_empty(),
        "a refused connect made objects:
{left}"
    );
    // (b) A default connect in this fresh namespace uploads the agent; the next one
    // reuses it.
    let (first, uploads) = imageless_connect(&exe, &ns);
    assert_eq!(uploads, "1", "the first session uploads the agent once");
    let (second, uploads) = imageless_connect(&exe, &ns);
    assert_eq!(uploads, "0", "the second session reuses the uploaded agent");
    for id in [first, second] {
        let left = ns.objects(&format!("kt.dev/session={id}"));
        assert!(
            left.is_empty(),
            "session {id} left objects behind:
{left}"
        );
    }
}

/// The lab's admin kubeconfig (`testbed/up` writes it under `$KTLAB_STATE`, default
/// `/run/ktlab`).
fn admin_kubeconfig() -> String {
    let state = std::env::var("KTLAB_STATE").unwrap_or_else(|_| "/run/ktlab".to_owned());
    let path = format!("{state}/admin.kubeconfig");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: is the lab up? (`sudo testbed/up`)"
    );
    path
}

#[test]
fn a_missing_namespace_is_not_found_and_rbac_refusal_is_forbidden_from_c() {
    let ns = LabNamespace::create("kt-ffi-same");
    let missing = format!(
        "kt-ffi-missing-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default()
    );
    let exe = compile(&crate_dir().join("tests/c/same_failure.c"), "same_failure");
    let out = run_checked(
        Command::new(&exe)
            .arg(admin_kubeconfig())
            .arg(&missing)
            .arg(&ns.kubeconfig)
            .arg("default"),
    );
    assert!(out.status.success(), "same_failure.c failed (see above)");
    assert_fresh_libkt(&out);
}

#[test]
fn c_example_fetches_the_echo_through_the_http_proxy() {
    let ns = LabNamespace::create("kt-ffi-example");
    let exe = compile(
        &crate_dir().join("../examples/c/connect.c"),
        "example_connect",
    );
    let out = run_checked(
        Command::new(&exe)
            .args(["--kubeconfig", &ns.kubeconfig])
            .args(["--namespace", &ns.name]),
    );
    assert!(out.status.success(), "examples/c/connect.c failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"path\"") && stdout.contains("/hello") && stdout.contains(&ns.name),
        "the example did not print the echo's reply from namespace {}: {stdout}",
        ns.name
    );
    let left = ns.objects(common::SESSION_OBJECTS);
    assert!(left.is_empty(), "the example left objects behind:\n{left}");
}

/// A local HTTP server on 127.0.0.1 (a free port) answering every request with
/// `token`, on a thread; returns the port.
fn local_server(token: String) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let reply = format!(
                "HTTP/1.0 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{token}",
                token.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    port
}

/// Whether `url`, fetched with curl in an echo pod of `ns`, answers with `want`,
/// tried a bounded number of times (kube-proxy applies a selector asynchronously).
fn echo_pod_gets(ns: &LabNamespace, url: &str, want: &str) -> bool {
    for _ in 0..60 {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source /run/ktlab/env && kubectl -n {} exec deploy/echo -- curl -sS \
                 --max-time 10 {url}",
                ns.name
            ))
            .output()
            .expect("running kubectl exec");
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(want) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    false
}

#[test]
fn c_swap_example_serves_the_service_from_here_until_ctrl_c_then_puts_it_back() {
    use std::io::BufRead as _;
    let ns = LabNamespace::create_with_role("kt-ffi-swap-example", "inbound");
    let before = echo_snapshot(&ns);
    let token = format!("c-example-token-{}", std::process::id());
    let local = local_server(token.clone());
    let exe = compile(&crate_dir().join("../examples/c/swap.c"), "example_swap");
    let mut child = Command::new(&exe)
        .arg("deploy/echo")
        .arg(format!("{local}:80"))
        .args(["--kubeconfig", &ns.kubeconfig])
        .args(["--namespace", &ns.name])
        .env_remove("LD_LIBRARY_PATH")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the example");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(300)) {
        let ready = line.starts_with("press Ctrl-C");
        printed.push(line);
        if ready {
            break;
        }
    }
    let served = printed.iter().any(|l| l.starts_with("press Ctrl-C"))
        && echo_pod_gets(&ns, "http://echo/from-example", &token);
    let killed = Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("waiting for the example");
    printed.extend(rx.try_iter());
    assert!(
        served,
        "the Service did not answer with the token: {printed:?}"
    );
    assert!(
        status.success(),
        "the example failed: {status}; {printed:?}"
    );
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("restored deploy/echo after")),
        "{printed:?}"
    );
    assert_eq!(
        before,
        echo_snapshot(&ns),
        "the echo Service or Deployment was not put back"
    );
    let left = ns.kubectl(
        "get pods,services,secrets,serviceaccounts,roles,rolebindings,leases \
         -l app.kubernetes.io/managed-by=kt -o name",
    );
    assert!(
        left.trim().is_empty(),
        "the example left objects behind:\n{left}"
    );
}

#[test]
fn sessions_left_open_or_freed_without_close_are_gone_when_the_program_exits() {
    let ns = LabNamespace::create("kt-ffi-exit");
    let exe = compile(
        &crate_dir().join("tests/c/exit_without_close.c"),
        "exit_without_close",
    );
    let out = run_checked(Command::new(&exe).arg(&ns.kubeconfig).arg(&ns.name));
    assert!(out.status.success(), "exit_without_close.c failed");
    assert_fresh_libkt(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("closing 1 session(s) the program left open"),
        "the exit handler did not say what it closed: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "the exit handler panicked instead of waiting for the removals: {stderr}"
    );
    for key in ["FREED_ID", "OPEN_ID"] {
        let id = printed(&out, key);
        let left = ns.objects(&format!("kt.dev/session={id}"));
        assert!(
            left.is_empty(),
            "{key} {id}: left after the program exited:\n{left}"
        );
    }
}

/// The laptop network namespace's links, routes, resolv.conf and hosts file.
fn laptop_state() -> String {
    let mut state = String::new();
    for args in [
        &["-n", "ktlab-laptop", "-o", "link", "show"][..],
        &["-n", "ktlab-laptop", "route", "show", "table", "all"][..],
        &["-n", "ktlab-laptop", "-6", "route", "show", "table", "all"][..],
    ] {
        let out = run_checked(Command::new("ip").args(args));
        assert!(out.status.success(), "ip {args:?} failed");
        state += &String::from_utf8_lossy(&out.stdout);
    }
    for file in [
        "/etc/netns/ktlab-laptop/resolv.conf",
        "/etc/netns/ktlab-laptop/hosts",
    ] {
        state += &std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    state
}

#[test]
fn vpn_session_from_c_in_the_laptop_namespace_reaches_a_cluster_ip_and_restores_everything() {
    let ns = LabNamespace::create("kt-ffi-vpn-up");
    // The laptop reaches the API server at its own address; the certificate covers it.
    let kubeconfig = std::fs::read_to_string(&ns.kubeconfig).expect("the test kubeconfig");
    let server_line = kubeconfig
        .lines()
        .find(|l| l.contains("server:"))
        .expect("a server line");
    let start = server_line.find("https://").expect("an https server");
    let server = server_line[start..]
        .split(['"', ',', '}'])
        .next()
        .expect("the server URL");
    let laptop_kubeconfig = common::scratch().join(format!("{}-laptop.kubeconfig", ns.name));
    std::fs::write(
        &laptop_kubeconfig,
        kubeconfig.replace(server, "https://10.88.255.1:6443"),
    )
    .expect("writing the laptop kubeconfig");
    let exe = compile(&crate_dir().join("tests/c/vpn_session.c"), "vpn_session");
    let before = laptop_state();
    let out = run_checked(
        Command::new("ip")
            .args(["netns", "exec", "ktlab-laptop"])
            .arg(&exe)
            .arg(&laptop_kubeconfig)
            .arg(&ns.name),
    );
    assert!(out.status.success(), "vpn_session.c failed (see above)");
    assert_fresh_libkt(&out);
    assert_eq!(
        before,
        laptop_state(),
        "the laptop namespace's links, routes or resolver files changed"
    );
    let id = printed(&out, "SESSION_ID");
    let left = ns.objects(&format!("kt.dev/session={id}"));
    assert!(left.is_empty(), "session {id} left objects behind:\n{left}");
}
