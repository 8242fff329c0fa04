"""Reaching the cluster through one shared session (the plugin's ``kt_session``):
proxies with requests and httpx, forwards with raw sockets, DNS, environment; and a
session of its own whose proxies require credentials (``proxy_auth=True``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import requests

import ktconnect
from conftest import Namespace, echo_reply


def _get_raw(host: str, port: int, http_host: str) -> bytes:
    """An HTTP/1.0 GET of /hello over a plain socket; the whole answer."""
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(f"GET /hello HTTP/1.0\r\nHost: {http_host}\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_requests_reaches_echo_by_its_short_name_through_the_http_proxy(
    kt_session: ktconnect.Session, namespace: Namespace
) -> None:
    r = requests.get("http://echo/hello", proxies=kt_session.requests_proxies(), timeout=30)
    assert r.status_code == 200
    reply = r.json()
    assert reply["path"] == "/hello"
    assert reply["namespace"] == namespace.name
    assert reply["pod"] in namespace.echo_pods()


def test_httpx_reaches_echo_by_its_full_service_name_through_the_http_proxy(
    kt_session: ktconnect.Session, namespace: Namespace
) -> None:
    url = f"http://echo.{namespace.name}.svc.cluster.local/hello"
    with httpx.Client(proxy=kt_session.httpx_proxy(), timeout=30) as client:
        r = client.get(url)
    assert r.status_code == 200
    reply = r.json()
    assert reply["host"] == f"echo.{namespace.name}.svc.cluster.local"
    assert reply["pod"] in namespace.echo_pods()


def test_plugin_http_fixtures_send_requests_through_the_session(
    kt_requests: requests.Session, kt_httpx: httpx.Client, namespace: Namespace
) -> None:
    pods = namespace.echo_pods()
    assert kt_requests.get(f"http://echo.{namespace.name}/hello", timeout=30).json()["pod"] in pods
    assert kt_httpx.get(f"http://echo.{namespace.name}/hello").json()["pod"] in pods


def test_socks5_proxy_connects_to_echo_by_name_with_remote_dns(
    kt_session: ktconnect.Session, namespace: Namespace
) -> None:
    """A SOCKS5 client written out by hand (no library): greeting, CONNECT to the
    domain name ``echo`` (resolved in the cluster), then HTTP."""
    with socket.create_connection(kt_session.socks5_addr, timeout=30) as s:
        s.sendall(b"\x05\x01\x00")  # version 5, one method: no authentication
        assert s.recv(2) == b"\x05\x00"
        name = b"echo"
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + (80).to_bytes(2, "big"))
        reply = b""
        while len(reply) < 10:  # version, status, reserved, IPv4 address and port
            chunk = s.recv(10 - len(reply))
            assert chunk, "the SOCKS5 proxy closed the connection"
            reply += chunk
        assert reply[:2] == b"\x05\x00", f"SOCKS5 CONNECT refused: {reply!r}"
        s.sendall(b"GET /hello HTTP/1.0\r\nHost: echo\r\n\r\n")
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert echo_reply(answer.partition(b"\r\n\r\n")[2])["pod"] in namespace.echo_pods()


def test_forward_to_the_echo_service_answers_a_raw_socket_get(
    kt_session: ktconnect.Session, namespace: Namespace
) -> None:
    host, port = kt_session.forward("svc/echo", 80)
    assert host == "127.0.0.1" and port > 0
    answer = _get_raw(host, port, "echo")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    assert echo_reply(body)["pod"] in namespace.echo_pods()


def test_tcp_echo_through_a_forward_returns_every_byte_unchanged(
    kt_session: ktconnect.Session,
) -> None:
    host, port = kt_session.forward("echo", 9000)
    payload = os.urandom(256 * 1024)
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # the echo answers after the half-close
        received = bytearray()
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
    assert len(received) == len(payload)
    assert bytes(received) == payload


def test_udp_forward_relays_a_datagram_to_the_echo_and_back(
    kt_session: ktconnect.Session,
) -> None:
    host, port = kt_session.forward_udp("echo", 9001)
    datagram = b"kt-udp-" + os.urandom(32).hex().encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        # UDP may lose a datagram: a few tries, each answered or timed out.
        for _ in range(5):
            s.sendto(datagram, (host, port))
            try:
                reply, _ = s.recvfrom(65536)
                break
            except socket.timeout:
                continue
        else:
            raise AssertionError("no UDP reply from the echo in 5 tries")
    assert reply == datagram


def test_resolve_echo_gives_the_service_cluster_ip(
    kt_session: ktconnect.Session, namespace: Namespace
) -> None:
    cluster_ip = namespace.kubectl("get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}")
    assert kt_session.resolve("echo") == [cluster_ip]
    assert kt_session.resolve(f"echo.{namespace.name}.svc.cluster.local") == [cluster_ip]


def test_env_sends_a_child_process_through_the_session(
    kt_session: ktconnect.Session, namespace: Namespace
) -> None:
    env = kt_session.env()
    host, port = kt_session.http_proxy_addr
    shost, sport = kt_session.socks5_addr
    assert env["HTTP_PROXY"] == env["http_proxy"] == f"http://{host}:{port}"
    assert env["HTTPS_PROXY"] == env["https_proxy"] == f"http://{host}:{port}"
    assert env["ALL_PROXY"] == env["all_proxy"] == f"socks5h://{shost}:{sport}"
    assert "127.0.0.1" in env["NO_PROXY"].split(",")
    assert env["NODE_USE_ENV_PROXY"] == "1"
    # A child that knows nothing about kt: urllib honours HTTP_PROXY.
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://echo/hello', timeout=30).read().decode())",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert echo_reply(child.stdout.encode())["pod"] in namespace.echo_pods()


def test_session_describes_its_pod_proxies_and_dns(
    kt_session: ktconnect.Session, namespace: Namespace
) -> None:
    assert kt_session.namespace == namespace.name
    labels = namespace.kubectl(
        "get", "pod", kt_session.pod_name, "-o", "jsonpath={.metadata.labels.kt\\.dev/session}"
    )
    assert labels == kt_session.id
    assert kt_session.http_proxy_url == "http://%s:%d" % kt_session.http_proxy_addr
    assert kt_session.socks5_url == "socks5h://%s:%d" % kt_session.socks5_addr
    assert kt_session.requests_proxies() == {
        "http": kt_session.http_proxy_url,
        "https": kt_session.http_proxy_url,
    }
    assert kt_session.dns_server  # the cluster DNS, as the shadow reaches it
    assert kt_session.dns_addr is None and kt_session.vpn is None  # proxy mode
    assert not kt_session.closed
    assert kt_session.id in repr(kt_session)


def test_the_example_script_fetches_echo_through_the_proxy(namespace: Namespace) -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "python" / "connect.py"
    done = subprocess.run(
        [sys.executable, str(example), "--kubeconfig", namespace.kubeconfig, "--namespace", namespace.name],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    first, _, body = done.stdout.partition("\n")
    assert first.startswith(f"GET http://echo.{namespace.name}/hello via http://127.0.0.1:")
    assert echo_reply(body.encode())["pod"] in namespace.echo_pods()
    assert "kt: closed" in done.stderr


def test_the_bench_prints_one_line_per_measurement(namespace: Namespace) -> None:
    bench = Path(__file__).resolve().parents[3] / "benches" / "bindings" / "bench.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--kubeconfig", namespace.kubeconfig, "--namespace", namespace.name, "--runs", "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["connect", "resolve", "connect", "resolve"]
    assert all(float(line.split()[1]) > 0 for line in lines)


def test_proxy_auth_puts_credentials_in_the_urls_and_the_proxies_require_them(
    namespace: Namespace,
) -> None:
    with ktconnect.Session.connect(**namespace.connect_options(), proxy_auth=True) as session:
        host, port = session.http_proxy_addr
        shost, sport = session.socks5_addr
        url = session.http_proxy_url
        assert url.startswith("http://") and url.endswith(f"@{host}:{port}"), url
        userinfo = url[len("http://") : url.rindex("@")]
        assert ":" in userinfo
        assert session.socks5_url == f"socks5h://{userinfo}@{shost}:{sport}"
        env = session.env()
        assert env["HTTP_PROXY"] == env["https_proxy"] == url
        assert env["ALL_PROXY"] == session.socks5_url
        assert userinfo not in repr(session)
        # Without the credentials: 407 from the proxy.
        bare = {"http": f"http://{host}:{port}"}
        refused = requests.get("http://echo/hello", proxies=bare, timeout=30)
        assert refused.status_code == 407
        assert refused.headers["Proxy-Authenticate"].startswith("Basic")
        # With them (requests reads them from the URL): the echo's reply.
        r = requests.get("http://echo/hello", proxies=session.requests_proxies(), timeout=30)
        assert r.status_code == 200
        assert r.json()["pod"] in namespace.echo_pods()
        # A child process given env() authenticates by itself (urllib's ProxyHandler).
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import urllib.request; print(urllib.request.urlopen('http://echo/auth', timeout=30).read().decode())",
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode == 0, child.stderr
        assert echo_reply(child.stdout.encode())["path"] == "/auth"
    assert namespace.objects_of_session(session.id) == []


def test_proxy_auth_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="proxy_auth must be a bool, not int"):
        ktconnect.connect_options(proxy_auth=1)
    assert "proxy_auth=True" in repr(ktconnect.connect_options(proxy_auth=True))
