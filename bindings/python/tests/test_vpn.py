"""VPN mode from Python, entirely inside the lab's laptop network namespace (which
reaches only the API server): a plain urllib request with no proxy reaches the echo
Service by its cluster name, and closing puts the namespace's links, routes and
resolver files back as they were. Nothing here touches the machine's own network.

(Without CAP_NET_ADMIN, VPN mode raises NeedsCapability: see test_errors.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import Lab, Namespace, echo_reply

LAPTOP_NS = "ktlab-laptop"

VPN_SCRIPT = r"""
import json, sys, urllib.request, ktconnect
kubeconfig, namespace = sys.argv[1:3]
vpn = ktconnect.VpnOptions(dns="resolv-conf")
with ktconnect.Session.connect(kubeconfig=kubeconfig, namespace=namespace, vpn=vpn) as session:
    url = f"http://echo.{namespace}.svc.cluster.local/hello"
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with no_proxy.open(url, timeout=30) as response:
        body = response.read().decode()
    info = session.vpn
    print(json.dumps({"id": session.id, "device": info["device"], "routes": info["routes"],
                      "dns_mode": info["dns_mode"], "dns_addr": list(session.dns_addr),
                      "body": body}), flush=True)
"""


def _laptop_state() -> str:
    """The laptop namespace's links, routes and resolver files."""
    parts = []
    for args in (["-o", "link", "show"], ["route", "show", "table", "all"], ["-6", "route", "show", "table", "all"]):
        done = subprocess.run(["ip", "-n", LAPTOP_NS, *args], capture_output=True, text=True, check=True)
        parts.append(done.stdout)
    for name in ("resolv.conf", "hosts"):
        parts.append(Path(f"/etc/netns/{LAPTOP_NS}/{name}").read_text())
    return "\n".join(parts)


def _laptop_kubeconfig(lab: Lab, namespace: Namespace, tmp_path: Path) -> Path:
    """The test namespace's scoped kubeconfig, with the API server's address as the
    laptop reaches it."""
    laptop_server = re.search(r"server:\s*(\S+)", Path(lab.env["KT_LAPTOP_KUBECONFIG"]).read_text())
    assert laptop_server, "the lab's laptop kubeconfig names no server"
    scoped = Path(namespace.kubeconfig).read_text()
    server = re.search(r'server: "?(https://[^",}\s]+)', scoped)
    assert server, "the test kubeconfig names no server"
    path = tmp_path / "laptop.kubeconfig"
    path.write_text(scoped.replace(server.group(1), laptop_server.group(1)))
    return path


def test_vpn_mode_in_the_laptop_namespace_reaches_echo_without_a_proxy_and_restores_everything(
    lab: Lab, namespace: Namespace, tmp_path: Path
) -> None:
    kubeconfig = _laptop_kubeconfig(lab, namespace, tmp_path)
    before = _laptop_state()
    done = subprocess.run(
        ["ip", "netns", "exec", LAPTOP_NS, sys.executable, "-c", VPN_SCRIPT, str(kubeconfig), namespace.name],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    reply = echo_reply(result["body"].encode())
    assert reply["host"] == f"echo.{namespace.name}.svc.cluster.local"
    assert reply["pod"] in namespace.echo_pods()
    assert result["device"] and result["routes"]
    assert result["dns_mode"] == "resolv-conf" and result["dns_addr"][1] > 0
    assert _laptop_state() == before, "VPN mode left the laptop namespace changed"
    assert namespace.objects_of_session(result["id"]) == []
