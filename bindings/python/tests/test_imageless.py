"""The imageless shadow from Python: with no shadow image, kt ships its agent into the
namespace (ConfigMaps, once) and runs it on an image the node already has.

Each test gets a fresh namespace (``testbed/test-namespace``, restricted Pod Security,
kt's Role only) with nothing of kt's in it yet."""

from __future__ import annotations

from typing import Iterator, List

import pytest

import ktconnect
from conftest import Lab, Namespace, make_namespace
from ktconnect import events

# Everything kt may create in a namespace, found by kt's label.
KT_OBJECTS = "pods,secrets,configmaps,services,leases"
MANAGED_BY_KT = "app.kubernetes.io/managed-by=kt"


@pytest.fixture
def fresh_namespace(lab: Lab) -> Iterator[Namespace]:
    yield from make_namespace(lab, "py-imageless")


def _kt_objects(ns: Namespace) -> List[str]:
    return ns.kubectl("get", KT_OBJECTS, "-l", MANAGED_BY_KT, "-o", "name").split()


def test_an_agent_dir_without_the_agent_is_an_invalid_argument_naming_the_file(
    fresh_namespace: Namespace, tmp_path
) -> None:
    seen: List[events.Event] = []
    with pytest.raises(ktconnect.InvalidArgument) as info:
        ktconnect.Session.connect(
            **fresh_namespace.connect_options(), agent_dir=tmp_path, on_event=seen.append
        )
    assert isinstance(info.value, ValueError)
    assert info.value.kind == "invalid_argument" and info.value.variant == "agent_invalid"
    message = str(info.value)
    assert f"{tmp_path}/kt-shadow" in message, message
    assert "build-static" in message, message
    # Refused before anything was made: no event, nothing of kt's in the namespace.
    assert seen == []
    assert _kt_objects(fresh_namespace) == []


def test_a_default_connect_uploads_the_agent_once_and_works(fresh_namespace: Namespace) -> None:
    options = fresh_namespace.connect_options()
    with ktconnect.Session.connect(**options) as first:
        assert first.resolve("echo")
    uploads = [e for e in first.events() if isinstance(e, events.Uploading)]
    assert len(uploads) == 1, [str(e) for e in first.events()]
    upload = uploads[0]
    assert upload.kind == "uploading" and upload.namespace == fresh_namespace.name
    assert upload.parts >= 2 and upload.bytes > 0  # the loader and kt-shadow's parts
    assert "uploading kt's agent" in upload.message
    # Uploaded once: the next session reuses the parts.
    with ktconnect.Session.connect(**options) as second:
        assert second.resolve("echo")
    assert not [e for e in second.events() if isinstance(e, events.Uploading)]
