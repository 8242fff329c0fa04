"""``Session.udp_channel``: one UDP flow as send/recv of whole datagrams, without a
local socket, against the echo app's UDP port (9001, as the UDP forward test)."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

import ktconnect
from conftest import Namespace

ECHO_UDP_PORT = 9001


def _echo_once(channel: ktconnect.DatagramChannel, datagram: bytes) -> bytes:
    """Sends ``datagram`` until the echo answers (UDP may lose one); the answer."""
    for _ in range(5):
        channel.send(datagram)
        try:
            return channel.recv(timeout=5)
        except ktconnect.Timeout:
            continue
    raise AssertionError("no UDP reply from the echo in 5 tries")


def test_a_datagram_sent_on_a_udp_channel_comes_back_from_the_echo(
    kt_session: ktconnect.Session, namespace: Namespace
) -> None:
    cluster_ip = namespace.kubectl("get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}")
    with kt_session.udp_channel("echo", ECHO_UDP_PORT) as channel:
        assert channel.target == "echo" and channel.port == ECHO_UDP_PORT
        assert channel.peer_addr == (cluster_ip, ECHO_UDP_PORT)
        assert not channel.closed
        for size in (1, 1200, 16 * 1024):
            datagram = os.urandom(size)
            assert _echo_once(channel, datagram) == datagram
        # bytearray is taken too; the largest datagram a flow carries goes through.
        big = bytearray(os.urandom(65507))
        assert _echo_once(channel, big) == bytes(big)
        assert "echo" in repr(channel)
    assert channel.closed


def test_a_datagram_too_large_for_udp_raises_invalid_argument(
    kt_session: ktconnect.Session,
) -> None:
    with kt_session.udp_channel("svc/echo", ECHO_UDP_PORT) as channel:
        with pytest.raises(ktconnect.InvalidArgument, match="65508-byte datagram is longer than the 65507") as info:
            channel.send(b"x" * 65508)
        assert isinstance(info.value, ValueError) and info.value.kind == "invalid_argument"
        # The flow is still good after the refusal.
        assert _echo_once(channel, b"still here") == b"still here"
        with pytest.raises(TypeError, match="datagram must be bytes, not str"):
            channel.send("text")  # type: ignore[arg-type]


def test_recv_with_nothing_to_receive_raises_timeout(kt_session: ktconnect.Session) -> None:
    with kt_session.udp_channel("echo", ECHO_UDP_PORT) as channel:
        with pytest.raises(ktconnect.Timeout, match="no datagram from echo port 9001 within") as info:
            channel.recv(timeout=0.3)
        assert isinstance(info.value, TimeoutError) and info.value.kind == "timeout"


def test_closing_a_channel_ends_a_recv_waiting_on_another_thread(
    kt_session: ktconnect.Session,
) -> None:
    channel = kt_session.udp_channel("echo", ECHO_UDP_PORT)
    outcome: list = []

    def wait() -> None:
        try:
            channel.recv()
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            outcome.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()
    channel.close()
    waiter.join(timeout=30)
    assert not waiter.is_alive(), "recv did not return after close"
    assert len(outcome) == 1 and isinstance(outcome[0], ktconnect.Closed), outcome
    assert outcome[0].kind == "closed" and "is closed" in str(outcome[0])
    with pytest.raises(ktconnect.Closed):
        channel.send(b"after close")
    channel.close()  # again: nothing to do


def test_a_udp_channel_of_a_closed_session_raises_closed(namespace: Namespace) -> None:
    session = ktconnect.Session.connect(**namespace.connect_options())
    channel = session.udp_channel("echo", ECHO_UDP_PORT)
    assert _echo_once(channel, b"before close") == b"before close"
    session.close()
    with pytest.raises(ktconnect.Closed, match="the session is closed") as info:
        channel.send(b"after close")
    assert info.value.kind == "closed"
    with pytest.raises(ktconnect.Closed) as info:
        channel.recv(timeout=30)
    assert info.value.kind == "closed"


def test_udp_channel_async_echoes_a_datagram(kt_session: ktconnect.Session) -> None:
    async def main() -> bytes:
        async with await kt_session.udp_channel_async("echo", ECHO_UDP_PORT) as channel:
            for _ in range(5):
                await channel.send_async(b"async datagram")
                try:
                    return await channel.recv_async(timeout=5)
                except ktconnect.Timeout:
                    continue
        raise AssertionError("no UDP reply from the echo in 5 tries")

    assert asyncio.run(main()) == b"async datagram"


def test_udp_channel_to_a_missing_service_raises_not_found(kt_session: ktconnect.Session) -> None:
    with pytest.raises(ktconnect.NotFound, match="Service `no-such-service` not found") as info:
        kt_session.udp_channel("svc/no-such-service", ECHO_UDP_PORT)
    assert info.value.kind == "not_found"
