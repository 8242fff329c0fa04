//! The public surface every front end must reach, as lists of names: the C ABI, the
//! Python and Node bindings each have a test that compares what they expose with these
//! lists, so a setting or an operation added to kt-core without reaching a binding
//! fails that binding's tests. kt-core's own test checks the lists against the source,
//! so they cannot fall behind.

/// Every [`ConnectOptions`](crate::ConnectOptions) setting, by builder method name.
pub const CONNECT_OPTIONS: &[&str] = &[
    "kubeconfig",
    "context",
    "namespace",
    "shadow_image",
    "base_image",
    "agent_dir",
    "flavour",
    "shadow_probe_binary",
    "sshd_path",
    "ssh_port",
    "label",
    "annotation",
    "image_pull_secret",
    "node_selector",
    "pod_ready_timeout",
    "port_forward_timeout",
    "heartbeat_interval",
    "shadow_heartbeat_timeout",
    "reconnect_timeout",
    "connect_timeout",
    "dns_timeout",
    "close_timeout",
    "cluster_domain",
    "dns_server",
    "socks5_port",
    "http_proxy_port",
    "proxy_auth",
    "vpn",
    "on_event",
];

/// Every [`VpnOptions`](crate::VpnOptions) setting, by builder method name.
pub const VPN_OPTIONS: &[&str] = &[
    "include",
    "exclude",
    "no_discovery",
    "tun_name",
    "address",
    "mtu",
    "dns",
    "dns_listen",
];

/// Every operation of an open [`Session`](crate::Session), by method name
/// (`connect` and `forward_target`, the Rust-typed twin of `forward`, aside).
pub const SESSION_OPERATIONS: &[&str] = &[
    "id",
    "namespace",
    "pod_name",
    "socks5_addr",
    "http_proxy_addr",
    "socks5_url",
    "http_proxy_url",
    "vpn",
    "dns_addr",
    "dns_server",
    "env",
    "events",
    "resolve",
    "forward",
    "forward_udp",
    "udp_channel",
    "close",
    // With their `_with` twins (the same operation with options), one operation each:
    // a binding takes the options as optional arguments.
    "swap",
    "expose",
    "mesh",
];

/// Every [`SwapOptions`](crate::SwapOptions) setting, by builder method name.
pub const SWAP_OPTIONS: &[&str] = &["mode", "check_local", "restore_ttl", "on_event"];

/// Every [`ExposeOptions`](crate::ExposeOptions) setting, by builder method name.
pub const EXPOSE_OPTIONS: &[&str] = &["service_type", "check_local", "on_event"];

/// Every [`MeshOptions`](crate::MeshOptions) setting, by builder method name.
pub const MESH_OPTIONS: &[&str] = &["check_local", "restore_ttl", "on_event"];

/// Every operation of a [`Mesh`](crate::Mesh), by method name.
pub const MESH_OPERATIONS: &[&str] = &[
    "id",
    "service",
    "rule",
    "header",
    "router",
    "pod_name",
    "ports",
    "connections",
    "events",
    "close",
];

/// Every operation of a [`Swap`](crate::Swap), by method name.
pub const SWAP_OPERATIONS: &[&str] = &[
    "id",
    "target",
    "mode",
    "pod_name",
    "services",
    "ports",
    "connections",
    "events",
    "close",
];

/// Every operation of an [`Expose`](crate::Expose), by method name.
pub const EXPOSE_OPERATIONS: &[&str] = &[
    "id",
    "service",
    "pod_name",
    "ports",
    "connections",
    "events",
    "close",
];

/// Functions outside a session.
pub const FUNCTIONS: &[&str] = &["recover_system_dns", "clean", "recover"];

#[cfg(test)]
mod tests {
    use super::*;

    /// The `pub fn` names of a source file whose first parameter matches `receiver`.
    fn methods(source: &str, receiver: &str) -> Vec<String> {
        // A signature rustfmt wrapped has its receiver on the next line.
        let source = source.replace("(\n", "(");
        source
            .lines()
            .filter_map(|l| {
                let l = l.trim_start();
                let rest = l
                    .strip_prefix("pub fn ")
                    .or_else(|| l.strip_prefix("pub async fn "))?;
                let (name, args) = rest.split_once('(')?;
                args.trim_start()
                    .starts_with(receiver)
                    .then(|| name.to_owned())
            })
            .collect()
    }

    #[test]
    fn the_lists_name_every_public_setting_and_operation() {
        let mut connect = methods(include_str!("mod.rs"), "mut self,");
        // The doc-hidden `allow_remote_forward` (a test hook of the inbound groundwork).
        connect.retain(|m| m != "allow_remote_forward");
        assert_eq!(connect, CONNECT_OPTIONS, "options/mod.rs builders");
        let mut vpn = methods(include_str!("vpn.rs"), "mut self");
        vpn.retain(|m| m != "new");
        assert_eq!(vpn, VPN_OPTIONS, "options/vpn.rs builders");
        let mut ops = methods(include_str!("../session.rs"), "&self");
        // Rust-only twins and test hooks: `forward_target` (a parsed `forward`), the
        // doc-hidden `remote_forward` (inbound groundwork), `simulate_tunnel_drop` and
        // `stop_lease_renewal` (test hooks).
        // `_with` twins are the same operation with options.
        ops.retain(|m| !m.ends_with("_with"));
        ops.retain(|m| {
            ![
                "forward_target",
                "remote_forward",
                "simulate_tunnel_drop",
                "stop_lease_renewal",
            ]
            .contains(&m.as_str())
        });
        assert_eq!(ops, SESSION_OPERATIONS, "session.rs methods");
        let inbound = include_str!("inbound.rs");
        let (swap_src, rest) = inbound
            .split_once("impl ServiceType")
            .expect("inbound.rs has ServiceType after SwapOptions");
        let (expose_src, mesh_src) = rest
            .split_once("pub struct MeshOptions")
            .expect("inbound.rs has MeshOptions after ExposeOptions");
        let mesh_src = mesh_src.split("mod tests").next().unwrap_or_default();
        assert_eq!(
            methods(mesh_src, "mut self"),
            MESH_OPTIONS,
            "MeshOptions builders"
        );
        assert_eq!(
            methods(include_str!("../inbound/mesh.rs"), "&self"),
            MESH_OPERATIONS,
            "mesh.rs methods"
        );
        assert_eq!(
            methods(swap_src, "mut self"),
            SWAP_OPTIONS,
            "SwapOptions builders"
        );
        assert_eq!(
            methods(expose_src, "mut self"),
            EXPOSE_OPTIONS,
            "ExposeOptions builders"
        );
        let mut swap = methods(include_str!("../inbound/swap.rs"), "&self");
        // The doc-hidden test hook.
        swap.retain(|m| m != "simulate_tunnel_drop");
        assert_eq!(swap, SWAP_OPERATIONS, "swap.rs methods");
        assert_eq!(
            methods(include_str!("../inbound/expose.rs"), "&self"),
            EXPOSE_OPERATIONS,
            "expose.rs methods"
        );
    }
}
