"""Bad input raises the right exception with a message that says what to do; nothing
crashes, hangs or creates objects."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys

import pytest

import ktconnect
from conftest import Lab, Namespace


@pytest.mark.parametrize(
    "options, message",
    [
        ({"namespace": 5}, "namespace must be a str, not int"),
        ({"kubeconfig": 3}, "kubeconfig must be a path"),
        ({"agent_dir": 3}, r"agent_dir must be a path \(str or os.PathLike\), not int"),
        ({"base_image": ["pause"]}, "base_image must be a str, not list"),
        ({"labels": "team=a"}, "labels must be a mapping"),
        ({"labels": {"team": 1}}, r"labels\['team'\] must be a str, not int"),
        ({"image_pull_secrets": "regcred"}, "image_pull_secrets must be a list"),
        ({"socks5_port": "8080"}, "socks5_port must be an int, not str"),
        ({"pod_ready_timeout": "60"}, "pod_ready_timeout must be seconds"),
        ({"vpn": {"include": []}}, "vpn must be a ktconnect.VpnOptions"),
        ({"on_event": "print"}, "on_event must be callable"),
    ],
)
def test_options_of_the_wrong_type_raise_type_error_naming_the_option(
    options: dict, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        ktconnect.Session.connect(**options)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"flavour": "dropbear"}, "flavour: invalid shadow flavour `dropbear`; expected kt-shadow or openssh"),
        ({"socks5_port": 70000}, r"socks5_port 70000 is not a port number \(0-65535\)"),
        ({"ssh_port": 0}, r"ssh_port 0 is not a port number \(1-65535\)"),
        ({"pod_ready_timeout": -1}, "pod_ready_timeout must be a positive"),
        ({"connect_timeout": float("nan")}, "connect_timeout must be a positive"),
        ({"dns_server": "kube-dns"}, "dns_server `kube-dns` is not an IP address"),
        ({"namespace": ""}, "namespace is empty"),
        ({"base_image": " "}, "base_image is empty"),
        ({"agent_dir": ""}, "agent_dir is an empty path: name the directory with kt-shadow"),
    ],
)
def test_malformed_options_raise_invalid_argument_before_connecting(
    options: dict, message: str
) -> None:
    with pytest.raises(ktconnect.InvalidArgument, match=message) as info:
        ktconnect.Session.connect(**options)
    assert isinstance(info.value, ValueError)
    assert info.value.kind == "invalid_argument"


def test_timeouts_accept_seconds_and_timedeltas() -> None:
    options = ktconnect.connect_options(
        pod_ready_timeout=datetime.timedelta(minutes=2), dns_timeout=2.5, close_timeout=30
    )
    assert isinstance(options, ktconnect.ConnectOptions)


def test_without_a_shadow_image_kt_ships_its_agent(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("KT_SHADOW_IMAGE", raising=False)
    options = ktconnect.connect_options(base_image="busybox:1.37", agent_dir=tmp_path)
    assert options.shadow_image is None  # imageless: no image to pull
    assert "image=None" in repr(options)
    assert ktconnect.connect_options(agent_dir=str(tmp_path)).shadow_image is None
    pinned = "registry.example/kt-shadow@sha256:" + "0" * 64
    assert ktconnect.connect_options(shadow_image=pinned).shadow_image == pinned
    monkeypatch.setenv("KT_SHADOW_IMAGE", "lab/kt-shadow:dev")
    assert ktconnect.connect_options().shadow_image == "lab/kt-shadow:dev"
    assert ktconnect.connect_options(shadow_image=pinned).shadow_image == pinned


@pytest.mark.parametrize(
    "vpn, message",
    [
        ({"include": ["10.0.0.0/33"]}, "include: invalid CIDR `10.0.0.0/33`; expected address/prefix"),
        ({"exclude": ["not-a-cidr"]}, "exclude: invalid CIDR `not-a-cidr`; expected address/prefix"),
        ({"dns": "bind9"}, "dns: invalid DNS mode `bind9`; expected auto, resolv-conf"),
        ({"dns": "hosts:"}, "dns: invalid DNS mode `hosts:`; expected .*hosts:<ns1>,<ns2>"),
        ({"mtu": 70000}, "mtu 70000 is out of range"),
        ({"tun_name": "a/b"}, "is not a network device name"),
        ({"discover": False}, "routes only the `include` ranges"),
        ({"dns_listen": "127.0.0.1"}, "is not an address with a port"),
    ],
)
def test_malformed_vpn_options_raise_invalid_argument(vpn: dict, message: str) -> None:
    with pytest.raises(ktconnect.InvalidArgument, match=message) as info:
        ktconnect.VpnOptions(**vpn)
    assert info.value.kind == "invalid_argument"


def test_good_vpn_options_are_accepted() -> None:
    vpn = ktconnect.VpnOptions(
        include=["10.96.0.0/12", "10.244.0.7"], exclude=["10.96.0.1/32"], dns="hosts:a,b", mtu=9000
    )
    assert "10.96.0.0/12" in repr(vpn)
    # kt-core's spellings: case and `_` for `-` are forgiven, as in ktctl.
    assert ktconnect.VpnOptions(dns="Resolv_Conf", include=["fd00::/64"])
    assert ktconnect.connect_options(flavour="OpenSSH")


def test_the_shadow_watchdog_timeout_takes_seconds_a_timedelta_or_none() -> None:
    for value in (90, 2.5, datetime.timedelta(minutes=3), None):
        assert isinstance(
            ktconnect.connect_options(shadow_heartbeat_timeout=value), ktconnect.ConnectOptions
        )
    with pytest.raises(ktconnect.InvalidArgument, match="shadow_heartbeat_timeout must be a positive"):
        ktconnect.connect_options(shadow_heartbeat_timeout=0)
    with pytest.raises(TypeError, match="shadow_heartbeat_timeout must be seconds"):
        ktconnect.connect_options(shadow_heartbeat_timeout="10m")
    with pytest.raises(TypeError, match="shadow_heartbeat_timeout must be seconds"):
        ktconnect.connect_options(shadow_heartbeat_timeout=True)


def test_a_missing_kubeconfig_file_raises_config_error_naming_it(tmp_path) -> None:
    missing = tmp_path / "nowhere.kubeconfig"
    with pytest.raises(ktconnect.ConfigError, match=f"cannot read kubeconfig {missing}") as info:
        ktconnect.Session.connect(kubeconfig=missing)
    # The Rust source chain is kept as the cause.
    assert info.value.__cause__ is not None
    assert "No such file or directory" in str(info.value.__cause__)


def test_a_kubeconfig_context_that_does_not_exist_raises_config_error(namespace: Namespace) -> None:
    with pytest.raises(ktconnect.ConfigError, match="with context `nope`") as info:
        ktconnect.Session.connect(kubeconfig=namespace.kubeconfig, context="nope")
    assert "kubectl config get-contexts" in str(info.value)


def test_a_namespace_that_does_not_exist_raises_not_found_saying_how_to_create_it(
    lab: Lab,
) -> None:
    with pytest.raises(ktconnect.NotFound, match="namespace `kt-no-such-ns` does not exist") as info:
        ktconnect.Session.connect(kubeconfig=lab.admin_kubeconfig, namespace="kt-no-such-ns")
    assert isinstance(info.value, LookupError)
    assert info.value.kind == "not_found" and info.value.namespace == "kt-no-such-ns"
    assert info.value.variant == "namespace_not_found"
    assert "kubectl create namespace kt-no-such-ns" in str(info.value)
    assert "::" not in str(info.value)  # no Rust API names


@pytest.mark.parametrize(
    "options, verb, resource",
    [
        # By default kt first looks for its agent's parts (ConfigMaps) in the namespace.
        ({}, "list", "configmaps"),
        # With a shadow image, the first object kt creates is the shadow pod (the
        # kt-shadow flavour has no Secret).
        ({"shadow_image": "kt.invalid/kt-shadow:0.1.0"}, "create", "pods"),
    ],
)
def test_a_namespace_outside_the_role_raises_forbidden_naming_the_role(
    namespace: Namespace, options: dict, verb: str, resource: str
) -> None:
    with pytest.raises(ktconnect.Forbidden, match=f"you may not {verb} {resource}") as info:
        ktconnect.Session.connect(kubeconfig=namespace.kubeconfig, namespace="kube-system", **options)
    assert isinstance(info.value, PermissionError)
    assert info.value.kind == "forbidden"
    assert info.value.verb == verb and info.value.resource == resource
    assert "kt-core/rbac/connect.yaml" in str(info.value)


def test_a_name_that_does_not_resolve_raises_name_not_found_listing_what_was_tried(
    kt_session: ktconnect.Session, namespace: Namespace
) -> None:
    with pytest.raises(ktconnect.NameNotFound, match="`no-such-service` does not resolve") as info:
        kt_session.resolve("no-such-service")
    assert isinstance(info.value, ktconnect.NotFound)
    assert info.value.kind == "not_found" and info.value.variant == "name_not_found"
    assert info.value.name == "no-such-service"
    assert f"no-such-service.{namespace.name}.svc.cluster.local" in info.value.tried


@pytest.mark.parametrize(
    "target, port, exc, message",
    [
        ("svc/no-such-service", 80, ktconnect.NotFound, "Service `no-such-service` not found"),
        ("pod/no-such-pod", 80, ktconnect.NotFound, "pod `no-such-pod` not found"),
        ("pod/", 80, ktconnect.InvalidArgument, "invalid target `pod/`"),
        ("", 80, ktconnect.InvalidArgument, "invalid target ``"),
        ("svc/echo", 0, ktconnect.InvalidArgument, r"port 0 is not a port number \(1-65535\)"),
        ("svc/echo", 65536, ktconnect.InvalidArgument, "port 65536 is not a port number"),
        (80, "svc/echo", TypeError, "target must be a str"),
        ("svc/echo", "80", TypeError, "port must be an int, not str"),
        ("svc/echo", None, TypeError, "port must be an int, not None"),
    ],
)
def test_bad_forward_targets_and_ports_raise_clear_errors(
    kt_session: ktconnect.Session, target, port, exc, message
) -> None:
    with pytest.raises(exc, match=message):
        kt_session.forward(target, port)


def test_resolve_of_something_that_is_not_a_name_raises_type_error(
    kt_session: ktconnect.Session,
) -> None:
    with pytest.raises(TypeError, match="name must be a str, not None"):
        kt_session.resolve(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a str, not bytes"):
        kt_session.resolve(b"echo")  # type: ignore[arg-type]


def test_sessions_cannot_be_made_without_connect() -> None:
    with pytest.raises(TypeError, match="Session.connect"):
        ktconnect.Session()


VPN_PROBE = r"""
import json, sys, ktconnect
kubeconfig, namespace, marker = sys.argv[1:4]
try:
    ktconnect.Session.connect(
        kubeconfig=kubeconfig, namespace=namespace, labels={"kt-test": marker},
        vpn=ktconnect.VpnOptions(),
    )
except ktconnect.KtError as e:
    print(json.dumps({"type": type(e).__name__, "kind": e.kind, "message": str(e),
                      "permission_error": isinstance(e, PermissionError)}))
else:
    print(json.dumps({"type": None}))
"""


def test_vpn_mode_without_cap_net_admin_raises_needs_capability_and_creates_nothing(
    namespace: Namespace,
) -> None:
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop CAP_NET_ADMIN"
    marker = "vpn-" + os.urandom(4).hex()
    done = subprocess.run(
        [
            setpriv,
            "--inh-caps=-all",
            "--bounding-set=-net_admin",
            sys.executable,
            "-c",
            VPN_PROBE,
            namespace.kubeconfig,
            namespace.name,
            marker,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["type"] == "NeedsCapability", result
    assert result["kind"] == "needs_capability" and result["permission_error"]
    assert "CAP_NET_ADMIN" in result["message"] and "proxy mode" in result["message"]
    assert namespace.kubectl("get", "pods,secrets", "-l", f"kt-test={marker}", "-o", "name") == ""


FORKED = r"""
import os, sys, ktconnect
try:  # starts the runtime in the parent
    ktconnect.Session.connect(kubeconfig="/nonexistent/kubeconfig")
except ktconnect.ConfigError:
    pass
pid = os.fork()
if pid == 0:
    try:
        ktconnect.Session.connect(kubeconfig="/nonexistent/kubeconfig")
    except RuntimeError as e:
        print("child:", e, flush=True)
        os._exit(0)
    os._exit(1)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_gets_an_error_instead_of_a_hang() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", FORKED], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "forked from one that already used it" in done.stdout
    assert '"spawn"' in done.stdout
