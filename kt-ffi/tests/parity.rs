//! Parity with kt-core: every setting, session operation and free function that
//! kt-core lists in `kt_core::surface` is reachable from C. The table below names the
//! C symbols (functions, or enum constants of a shared setter) that expose each one;
//! a name kt-core adds without an entry here fails the test, and so does a symbol
//! that `include/kt.h` does not declare.

use kt_core::surface::{
    CONNECT_OPTIONS, EXPOSE_OPERATIONS, EXPOSE_OPTIONS, FUNCTIONS, MESH_OPERATIONS, MESH_OPTIONS,
    SESSION_OPERATIONS, SWAP_OPERATIONS, SWAP_OPTIONS, VPN_OPTIONS,
};

/// kt-core name -> the C symbols that reach it (all must be in kt.h).
const CONNECT: &[(&str, &[&str])] = &[
    ("kubeconfig", &["kt_options_set_kubeconfig"]),
    ("context", &["kt_options_set_context"]),
    ("namespace", &["kt_options_set_namespace"]),
    ("shadow_image", &["kt_options_set_shadow_image"]),
    ("base_image", &["kt_options_set_base_image"]),
    ("agent_dir", &["kt_options_set_agent_dir"]),
    ("flavour", &["kt_options_set_flavour", "KT_FLAVOUR_OPENSSH"]),
    (
        "shadow_probe_binary",
        &["kt_options_set_shadow_probe_binary"],
    ),
    ("sshd_path", &["kt_options_set_sshd_path"]),
    ("ssh_port", &["kt_options_set_ssh_port"]),
    ("label", &["kt_options_add_label"]),
    ("annotation", &["kt_options_add_annotation"]),
    ("image_pull_secret", &["kt_options_add_image_pull_secret"]),
    ("node_selector", &["kt_options_add_node_selector"]),
    (
        "pod_ready_timeout",
        &["kt_options_set_timeout", "KT_TIMEOUT_POD_READY"],
    ),
    (
        "port_forward_timeout",
        &["kt_options_set_timeout", "KT_TIMEOUT_PORT_FORWARD"],
    ),
    (
        "heartbeat_interval",
        &["kt_options_set_timeout", "KT_TIMEOUT_HEARTBEAT_INTERVAL"],
    ),
    (
        "shadow_heartbeat_timeout",
        &["kt_options_set_timeout", "KT_TIMEOUT_SHADOW_HEARTBEAT"],
    ),
    (
        "reconnect_timeout",
        &["kt_options_set_timeout", "KT_TIMEOUT_RECONNECT"],
    ),
    (
        "connect_timeout",
        &["kt_options_set_timeout", "KT_TIMEOUT_CONNECT"],
    ),
    ("dns_timeout", &["kt_options_set_timeout", "KT_TIMEOUT_DNS"]),
    (
        "close_timeout",
        &["kt_options_set_timeout", "KT_TIMEOUT_CLOSE"],
    ),
    ("cluster_domain", &["kt_options_set_cluster_domain"]),
    ("dns_server", &["kt_options_set_dns_server"]),
    ("socks5_port", &["kt_options_set_socks5_port"]),
    ("http_proxy_port", &["kt_options_set_http_proxy_port"]),
    ("proxy_auth", &["kt_options_set_proxy_auth"]),
    ("vpn", &["kt_options_set_vpn"]),
    // C pulls events instead of taking a callback.
    (
        "on_event",
        &[
            "kt_session_next_event",
            "kt_event_get_kind",
            "KT_EVENT_KIND_UPLOADING",
        ],
    ),
];

const VPN: &[(&str, &[&str])] = &[
    ("include", &["kt_vpn_options_add_include"]),
    ("exclude", &["kt_vpn_options_add_exclude"]),
    ("no_discovery", &["kt_vpn_options_disable_discovery"]),
    ("tun_name", &["kt_vpn_options_set_tun_name"]),
    ("address", &["kt_vpn_options_set_address"]),
    ("mtu", &["kt_vpn_options_set_mtu"]),
    ("dns", &["kt_vpn_options_set_dns"]),
    ("dns_listen", &["kt_vpn_options_set_dns_listen"]),
];

const SESSION: &[(&str, &[&str])] = &[
    ("id", &["kt_session_id"]),
    ("namespace", &["kt_session_namespace"]),
    ("pod_name", &["kt_session_pod_name"]),
    ("socks5_addr", &["kt_session_socks5_addr"]),
    ("http_proxy_addr", &["kt_session_http_proxy_addr"]),
    ("socks5_url", &["kt_session_socks5_url"]),
    ("http_proxy_url", &["kt_session_http_proxy_url"]),
    (
        "vpn",
        &[
            "kt_session_vpn_device",
            "kt_session_vpn_routes",
            "kt_session_vpn_dns",
        ],
    ),
    ("dns_addr", &["kt_session_dns_addr"]),
    ("dns_server", &["kt_session_dns_server"]),
    ("env", &["kt_session_env"]),
    ("events", &["kt_session_next_event"]),
    ("resolve", &["kt_session_resolve"]),
    ("forward", &["kt_session_forward"]),
    ("forward_udp", &["kt_session_forward_udp"]),
    (
        "udp_channel",
        &[
            "kt_session_udp_channel",
            "kt_udp_channel_send",
            "kt_udp_channel_recv",
        ],
    ),
    ("close", &["kt_session_close"]),
    ("swap", &["kt_session_swap"]),
    ("expose", &["kt_session_expose"]),
    ("mesh", &["kt_session_mesh"]),
];

const SWAP_OPTS: &[(&str, &[&str])] = &[
    ("mode", &["kt_swap_options_set_mode", "KT_SWAP_MODE_SCALE"]),
    ("check_local", &["kt_swap_options_set_check_local"]),
    ("restore_ttl", &["kt_swap_options_set_restore_ttl_ms"]),
    // C pulls events instead of taking a callback.
    ("on_event", &["kt_swap_next_event", "kt_event_get_kind"]),
];

const EXPOSE_OPTS: &[(&str, &[&str])] = &[
    (
        "service_type",
        &[
            "kt_expose_options_set_service_type",
            "KT_SERVICE_TYPE_NODE_PORT",
            "KT_SERVICE_TYPE_LOAD_BALANCER",
        ],
    ),
    ("check_local", &["kt_expose_options_set_check_local"]),
    ("on_event", &["kt_expose_next_event", "kt_event_get_kind"]),
];

const MESH_OPTS: &[(&str, &[&str])] = &[
    ("check_local", &["kt_mesh_options_set_check_local"]),
    ("restore_ttl", &["kt_mesh_options_set_restore_ttl_ms"]),
    ("on_event", &["kt_mesh_next_event", "kt_event_get_kind"]),
];

const MESH: &[(&str, &[&str])] = &[
    ("id", &["kt_mesh_id"]),
    ("service", &["kt_mesh_service"]),
    ("rule", &["kt_mesh_rule"]),
    ("header", &["kt_mesh_header_name", "kt_mesh_header_value"]),
    ("router", &["kt_mesh_router"]),
    ("pod_name", &["kt_mesh_pod_name"]),
    ("ports", &["kt_mesh_ports"]),
    ("connections", &["kt_mesh_connections"]),
    ("events", &["kt_mesh_next_event", "KT_EVENT_KIND_ROUTED"]),
    ("close", &["kt_mesh_close", "kt_mesh_free"]),
];

const SWAP: &[(&str, &[&str])] = &[
    ("id", &["kt_swap_id"]),
    ("target", &["kt_swap_target"]),
    ("mode", &["kt_swap_get_mode"]),
    ("pod_name", &["kt_swap_pod_name"]),
    ("services", &["kt_swap_services"]),
    ("ports", &["kt_swap_ports"]),
    ("connections", &["kt_swap_connections"]),
    ("events", &["kt_swap_next_event"]),
    ("close", &["kt_swap_close", "kt_swap_free"]),
];

const EXPOSE: &[(&str, &[&str])] = &[
    ("id", &["kt_expose_id"]),
    ("service", &["kt_expose_service"]),
    ("pod_name", &["kt_expose_pod_name"]),
    ("ports", &["kt_expose_ports"]),
    ("connections", &["kt_expose_connections"]),
    ("events", &["kt_expose_next_event"]),
    ("close", &["kt_expose_close", "kt_expose_free"]),
];

const FREE_FUNCTIONS: &[(&str, &[&str])] = &[
    ("recover_system_dns", &["kt_recover_system_dns"]),
    ("clean", &["kt_clean"]),
    ("recover", &["kt_recover"]),
];

/// Whether `header` declares `symbol`: a function (`symbol(`) or an enum constant
/// (`symbol =`), as a whole word.
fn declares(header: &str, symbol: &str) -> bool {
    [format!(" {symbol}("), format!(" {symbol} =")]
        .iter()
        .any(|needle| header.contains(needle.as_str()))
}

fn check(what: &str, kt_core_names: &[&str], table: &[(&str, &[&str])], header: &str) {
    let mut missing = Vec::new();
    for name in kt_core_names {
        match table.iter().find(|(n, _)| n == name) {
            None => missing.push(format!(
                "{what} `{name}` (new in kt-core?) has no C function: add one and a row here"
            )),
            Some((_, symbols)) => {
                assert!(!symbols.is_empty(), "{what} `{name}`: no symbols listed");
                for symbol in *symbols {
                    if !declares(header, symbol) {
                        missing.push(format!(
                            "{what} `{name}`: `{symbol}` is not declared in include/kt.h"
                        ));
                    }
                }
            }
        }
    }
    for (name, _) in table {
        if !kt_core_names.contains(name) {
            missing.push(format!(
                "{what} `{name}` is in this table but not in kt-core's list: remove the row"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

fn header() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("include/kt.h");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_connect_option_of_kt_core_is_reachable_from_c() {
    check(
        "ConnectOptions setting",
        CONNECT_OPTIONS,
        CONNECT,
        &header(),
    );
}

#[test]
fn every_vpn_option_of_kt_core_is_reachable_from_c() {
    check("VpnOptions setting", VPN_OPTIONS, VPN, &header());
}

#[test]
fn every_session_operation_of_kt_core_is_reachable_from_c() {
    check("Session operation", SESSION_OPERATIONS, SESSION, &header());
}

#[test]
fn every_swap_and_expose_option_of_kt_core_is_reachable_from_c() {
    check("SwapOptions setting", SWAP_OPTIONS, SWAP_OPTS, &header());
    check(
        "ExposeOptions setting",
        EXPOSE_OPTIONS,
        EXPOSE_OPTS,
        &header(),
    );
}

#[test]
fn every_mesh_option_and_operation_of_kt_core_is_reachable_from_c() {
    check("MeshOptions setting", MESH_OPTIONS, MESH_OPTS, &header());
    check("Mesh operation", MESH_OPERATIONS, MESH, &header());
}

#[test]
fn every_swap_and_expose_operation_of_kt_core_is_reachable_from_c() {
    check("Swap operation", SWAP_OPERATIONS, SWAP, &header());
    check("Expose operation", EXPOSE_OPERATIONS, EXPOSE, &header());
}

#[test]
fn every_free_function_of_kt_core_is_reachable_from_c() {
    check("function", FUNCTIONS, FREE_FUNCTIONS, &header());
}

#[test]
fn the_check_finds_a_missing_name_and_an_undeclared_symbol() {
    let header = "kt_status kt_a(int x);\nenum { KT_B = 1 };\n";
    check(
        "x",
        &["a", "b"],
        &[("a", &["kt_a"]), ("b", &["KT_B"])],
        header,
    );
    let new_name =
        std::panic::catch_unwind(|| check("x", &["a", "c"], &[("a", &["kt_a"])], header));
    assert!(new_name.is_err(), "a kt-core name without a row must fail");
    let undeclared = std::panic::catch_unwind(|| check("x", &["a"], &[("a", &["kt_zz"])], header));
    assert!(undeclared.is_err(), "a symbol kt.h lacks must fail");
}
