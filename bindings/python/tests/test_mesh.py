"""Mesh from Python, against the lab, in a namespace enforcing the restricted Pod
Security Standard, as a ServiceAccount bound to the shipped Roles only: a pod in the
cluster calls the Service with the mesh's header and gets the answer of a server in
this process, without it (or with another value) the echo app's; a second mesh with
the same header value is a Conflict; after the ``with`` block the Service and the
Deployment equal a snapshot taken before and no kt object is left."""

from __future__ import annotations

import asyncio
import json

import pytest

import ktconnect
from ktconnect import events
from conftest import Namespace
from test_swap import (  # noqa: F401 - fixtures used by name
    LocalServer,
    curl,
    inbound,
    kt_objects_but,
    local,
    session,
    snapshot,
    swap_objects,
    wait_answer,
)


def test_a_mesh_sends_requests_with_its_header_here_and_the_rest_to_the_echo_pods(
    inbound: Namespace, session: ktconnect.Session, local: LocalServer
) -> None:
    svc_before = snapshot(inbound, "service/echo")
    deploy_before = snapshot(inbound, "deployment/echo")
    seen: list = []

    # A malformed rule is refused before anything happens, saying what is accepted.
    with pytest.raises(ktconnect.InvalidArgument, match="mixes `&&` and `||`"):
        session.mesh("svc/echo", f"{local.port}:80", rule="a=1 && /x || b=2")

    with session.mesh("svc/echo", f"{local.port}:80", on_event=seen.append) as mesh:
        assert isinstance(mesh, ktconnect.Mesh)
        header = mesh.header
        assert header is not None and list(header) == ["version"], header
        value = header["version"]
        assert value and mesh.rule == f"version={value}"
        assert mesh.service == "echo"
        assert mesh.ports == [(local.port, 8080)]
        assert mesh.router and mesh.pod_name and mesh.router != mesh.pod_name
        assert mesh.id and not mesh.closed

        # With the header: this process; without it, or another value: the echo pods.
        wait_answer(inbound, "http://echo/mine", local.token, headers=header)
        plain = json.loads(curl(inbound, "http://echo/plain"))
        assert plain["path"] == "/plain" and plain["pod"] in inbound.echo_pods()
        other = json.loads(curl(inbound, "http://echo/other", {"version": f"not-{value}"}))
        assert other["path"] == "/other"
        assert curl(inbound, "http://echo/again", header) == local.token
        assert mesh.connections >= 2

        # A second mesh with the same header value is refused, naming the first.
        during = snapshot(inbound, "service/echo")
        with pytest.raises(ktconnect.Conflict) as refused:
            session.mesh("svc/echo", "18081:80", rule=f"version:{value}", check_local=False)
        assert refused.value.kind == "conflict" and value in str(refused.value)
        assert snapshot(inbound, "service/echo") == during
        assert curl(inbound, "http://echo/still", header) == local.token

        stream = mesh.events(timeout=120)

    assert mesh.closed
    kinds = [type(e) for e in stream]
    assert events.Listening in kinds
    assert events.Routed in kinds
    assert events.Inbound in kinds
    assert kinds[-1] is events.Closed
    routed = [e for e in seen if isinstance(e, events.Routed)]
    assert routed and routed[0].rule == f"version={value}" and routed[0].service == "echo"

    assert snapshot(inbound, "service/echo") == svc_before
    assert snapshot(inbound, "deployment/echo") == deploy_before
    assert kt_objects_but(inbound, session.id) == ""
    assert swap_objects(inbound, mesh.id) == ""
    # The header no longer matters: the echo pods answer it.
    wait_answer(inbound, "http://echo/back", '"path":"/back"', headers=header)
    mesh.close()  # again: nothing to do


def test_a_mesh_from_asyncio_with_a_regex_rule_has_no_header_to_send(
    inbound: Namespace, local: LocalServer
) -> None:
    async def main() -> None:
        async with ktconnect.Session.connect_async(**inbound.connect_options()) as s:
            mesh = await s.mesh_async("svc/echo", [f"{local.port}:80"], rule="x-dev~^py-a.*")
            async with mesh:
                assert mesh.header is None and mesh.rule == "x-dev~^py-a.*"
                await asyncio.to_thread(
                    wait_answer, inbound, "http://echo/", local.token, headers={"x-dev": "py-async"}
                )
                plain = await asyncio.to_thread(curl, inbound, "http://echo/p", {"x-dev": "b"})
                assert json.loads(plain)["path"] == "/p"
            assert mesh.closed
            assert kt_objects_but(inbound, s.id) == ""

    before = snapshot(inbound, "service/echo")
    asyncio.run(main())
    assert snapshot(inbound, "service/echo") == before


def test_the_kt_mesh_fixture_meshes_for_the_test_and_closes_at_teardown(
    pytester: pytest.Pytester, inbound: Namespace
) -> None:
    before = snapshot(inbound, "service/echo")
    pytester.makepyfile(
        test_user='''
import ktconnect

def test_mesh(kt_mesh):
    mesh = kt_mesh("svc/echo", "18082:80", rule="version=fixture", check_local=False)
    assert isinstance(mesh, ktconnect.Mesh) and not mesh.closed
    assert mesh.header == {"version": "fixture"}
    with open("mesh-id", "w") as f:
        f.write(mesh.id)
'''
    )
    result = pytester.runpytest_subprocess(
        f"--kt-kubeconfig={inbound.kubeconfig}", f"--kt-namespace={inbound.name}", "-v"
    )
    result.assert_outcomes(passed=1)
    mesh_id = (pytester.path / "mesh-id").read_text()
    # Teardown closed it: the Service is as before and nothing of the mesh is left.
    assert snapshot(inbound, "service/echo") == before
    assert swap_objects(inbound, mesh_id) == ""
