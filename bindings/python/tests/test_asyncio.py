"""The asyncio API: ``async with``, awaitable operations, async event iteration,
cancellation. Each test runs its own event loop with ``asyncio.run``."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

import ktconnect
from conftest import Namespace, echo_reply


async def _raw_get(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /hello HTTP/1.0\r\nHost: echo\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


def test_async_with_session_fetches_forwards_resolves_and_closes(namespace: Namespace) -> None:
    async def main() -> tuple:
        async with ktconnect.Session.connect_async(**namespace.connect_options()) as session:
            async with httpx.AsyncClient(proxy=session.httpx_proxy(), timeout=30) as client:
                r = await client.get(f"http://echo.{namespace.name}.svc.cluster.local/hello")
            host, port = await session.forward_async("svc/echo", 80)
            raw = await _raw_get(host, port)
            ips = await session.resolve_async("echo")
            udp = await session.forward_udp_async("echo", 9001)
            # Several operations at once on one session.
            many = await asyncio.gather(*(session.resolve_async("echo") for _ in range(5)))
        kinds = [e.kind async for e in session.events(timeout=60)]
        return session, r, raw, ips, udp, many, kinds

    session, r, raw, ips, udp, many, kinds = asyncio.run(main())
    pods = namespace.echo_pods()
    assert r.status_code == 200 and r.json()["pod"] in pods
    assert echo_reply(raw.partition(b"\r\n\r\n")[2])["pod"] in pods
    cluster_ip = namespace.kubectl("get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}")
    assert ips == [cluster_ip] and all(m == ips for m in many)
    assert udp[0] == "127.0.0.1" and udp[1] > 0
    # The first session in a namespace uploads kt's agent before it creates its pod.
    assert kinds[1 if kinds[0] == "uploading" else 0] == "creating" and kinds[-1] == "closed", kinds
    assert session.closed
    assert namespace.objects_of_session(session.id) == []


def test_awaited_connect_then_close_async_twice_leaves_nothing(namespace: Namespace) -> None:
    async def main() -> ktconnect.Session:
        session = await ktconnect.Session.connect_async(**namespace.connect_options())
        assert namespace.objects_of_session(session.id) != []
        await session.close_async()
        await session.close_async()
        with pytest.raises(ktconnect.Closed):
            await session.resolve_async("echo")
        with pytest.raises(ktconnect.Closed):
            await session.forward_async("svc/echo", 80)
        return session

    session = asyncio.run(main())
    assert namespace.objects_of_session(session.id) == []


def test_connect_async_is_a_coroutine_that_create_task_accepts(namespace: Namespace) -> None:
    async def main() -> ktconnect.Session:
        task = asyncio.create_task(ktconnect.Session.connect_async(**namespace.connect_options()))
        session = await task
        async with session:
            assert await session.resolve_async("echo")
        return session

    session = asyncio.run(main())
    assert session.closed and namespace.objects_of_session(session.id) == []


def test_cancelling_a_connect_removes_the_shadow_it_was_creating(namespace: Namespace) -> None:
    marker = "cancel-" + os.urandom(4).hex()

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        created = asyncio.Event()

        def on_event(event: ktconnect.Event) -> None:  # on a kt thread
            if event.kind == "creating":
                loop.call_soon_threadsafe(created.set)

        task = asyncio.create_task(
            ktconnect.Session.connect_async(
                **namespace.connect_options(), labels={"kt-test": marker}, on_event=on_event
            )
        )
        await asyncio.wait_for(created.wait(), 60)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        # The connect won the race: close it like any session.
        await task.result().close_async()
        return False

    asyncio.run(main())
    assert namespace.wait_gone(f"kt-test={marker}") == []


def test_async_errors_are_the_same_exceptions_as_blocking_ones(namespace: Namespace) -> None:
    async def main() -> None:
        with pytest.raises(ktconnect.InvalidArgument, match="flavour: invalid shadow flavour `dropbear`"):
            ktconnect.Session.connect_async(flavour="dropbear")  # raised before any await
        async with ktconnect.Session.connect_async(**namespace.connect_options()) as session:
            with pytest.raises(ktconnect.NameNotFound, match="does not resolve"):
                await session.resolve_async("no-such-service")
            with pytest.raises(ktconnect.NotFound, match="Service `no-such-service` not found"):
                await session.forward_async("svc/no-such-service", 80)
            with pytest.raises(TypeError, match="port must be an int"):
                await session.forward_async("svc/echo", "80")

    asyncio.run(main())
