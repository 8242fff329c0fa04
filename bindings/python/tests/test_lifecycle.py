"""Opening and closing sessions (blocking API): events, close, context managers,
use after close, garbage collection."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading

import pytest

import ktconnect
from ktconnect import events
from conftest import Namespace


def test_events_run_from_creating_to_closed(namespace: Namespace) -> None:
    seen_by_callback: list = []
    session = ktconnect.Session.connect(**namespace.connect_options(), on_event=seen_by_callback.append)
    stream = session.events(timeout=120)
    session.close()
    kinds = [e.kind for e in stream]  # ends by itself after Closed
    # The first session in a namespace uploads kt's agent before it creates its pod.
    first = 1 if kinds[0] == "uploading" else 0
    assert kinds[first] == "creating" and kinds[-2:] == ["closing", "closed"], kinds
    assert kinds.index("ready") < kinds.index("tunnel_up") < kinds.index("closing")
    # Typed events with their fields.
    everything = list(session.events())
    creating = everything[first]
    assert isinstance(creating, events.Creating)
    assert creating.namespace == namespace.name and creating.pod == session.pod_name
    up = next(e for e in everything if isinstance(e, events.TunnelUp))
    assert up.http_proxy == session.http_proxy_addr and up.socks5 == session.socks5_addr
    assert str(up) == up.message and "tunnel up" in up.message
    assert isinstance(everything[-1], events.Closed)
    # on_event saw the same events, as they happened.
    assert [e.kind for e in seen_by_callback] == [e.kind for e in everything]


def test_close_is_idempotent_and_leaves_nothing_labelled_with_the_session(
    namespace: Namespace,
) -> None:
    session = ktconnect.Session.connect(**namespace.connect_options())
    assert namespace.objects_of_session(session.id) != []  # the pod
    session.close()
    assert session.closed
    assert namespace.objects_of_session(session.id) == []
    session.close()  # again: nothing to do, no error
    assert namespace.objects_of_session(session.id) == []


def test_with_block_closes_the_session_even_when_the_body_raises(namespace: Namespace) -> None:
    with pytest.raises(RuntimeError, match="body failed"):
        with ktconnect.Session.connect(**namespace.connect_options()) as session:
            assert session.resolve("echo")
            raise RuntimeError("body failed")
    assert session.closed
    assert namespace.objects_of_session(session.id) == []


def test_every_call_after_close_raises_closed(namespace: Namespace) -> None:
    session = ktconnect.Session.connect(**namespace.connect_options())
    session.close()
    for call in (
        lambda: session.resolve("echo"),
        lambda: session.forward("svc/echo", 80),
        lambda: session.forward_udp("echo", 9001),
        lambda: session.udp_channel("echo", 9001),
    ):
        with pytest.raises(ktconnect.Closed, match="the session is closed") as info:
            call()
        assert info.value.kind == "closed"
    # What does not need the tunnel still answers.
    assert session.id and session.pod_name
    assert session.env()["HTTP_PROXY"] == session.http_proxy_url


def test_waiting_for_an_event_that_does_not_come_raises_timeout(
    kt_session: ktconnect.Session,
) -> None:
    stream = kt_session.events()
    while stream.try_next() is not None:  # drain the history
        pass
    with pytest.raises(ktconnect.Timeout, match="no session event within") as info:
        stream.next(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(ktconnect.InvalidArgument, match="timeout"):
        stream.next(timeout=-1)


def test_sessions_are_usable_from_several_threads_at_once(kt_session: ktconnect.Session) -> None:
    results: list = []
    errors: list = []

    def work() -> None:
        try:
            results.append(kt_session.resolve("echo"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(results) == 8 and all(r == results[0] for r in results)


def test_a_session_dropped_without_close_is_closed_in_the_background(
    namespace: Namespace,
) -> None:
    session = ktconnect.Session.connect(**namespace.connect_options())
    session_id = session.id
    ktconnect._session._open_sessions.discard(session)  # as if never registered
    del session
    gc.collect()
    assert namespace.wait_gone(f"kt.dev/session={session_id}") == []


INTERRUPTED_CONNECT = r"""
import os, signal, sys, ktconnect
kubeconfig, namespace, marker = sys.argv[1:4]
# As at a terminal: Python leaves SIGINT ignored when it inherits it ignored (a test
# run started in the background by a non-interactive shell, e.g. `testbed/check &`).
signal.signal(signal.SIGINT, signal.default_int_handler)

def on_event(event):
    if event.kind == "creating":  # the pod is being made: interrupt as a user would
        os.kill(os.getpid(), signal.SIGINT)

try:
    ktconnect.Session.connect(kubeconfig=kubeconfig, namespace=namespace,
                              labels={"kt-test": marker}, on_event=on_event)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
print("connected", flush=True)
"""


def test_ctrl_c_during_a_blocking_connect_interrupts_it_and_exit_removes_the_shadow(
    namespace: Namespace,
) -> None:
    marker = "sigint-" + os.urandom(4).hex()
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_CONNECT, namespace.kubeconfig, namespace.name, marker],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.stdout.strip() == "interrupted", (done.stdout, done.stderr)
    assert done.returncode == 3
    # The process waited at exit for the abandoned connect to be closed: nothing is left
    # right after it ended.
    assert namespace.kubectl("get", "pods,secrets", "-l", f"kt-test={marker}", "-o", "name") == ""
