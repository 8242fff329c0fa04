"""pytest plugin: a kt session for your tests.

Installed with the package (entry point ``pytest11``), so a test just asks for it::

    def test_web_answers(kt_requests):
        assert kt_requests.get("http://web.dev/healthz").ok

    def test_db(kt_session):
        host, port = kt_session.forward("svc/postgres", 5432)

Fixtures:

- ``kt_session`` (session scope): one :class:`ktconnect.Session` for the whole run,
  opened on first use and closed at the end. A failure to connect is an error of every
  test that uses it (never a skip).
- ``kt_connect_options`` (session scope): the keyword arguments of
  :meth:`ktconnect.Session.connect`; override it in a ``conftest.py`` to compute them.
- ``kt_requests``: a ``requests.Session`` whose traffic goes through the session's
  HTTP proxy; ``kt_httpx``: an ``httpx.Client`` likewise (each closed after the test).
- ``kt_env``: ``os.environ`` plus :meth:`ktconnect.Session.env`, for ``subprocess``.
- ``kt_swap``: a factory, ``kt_swap(target, expose, **options)`` calls
  :meth:`ktconnect.Session.swap` on ``kt_session`` and returns the
  :class:`ktconnect.Swap`; every swap it made is closed when the test ends (the
  cluster is put back even when the test fails)::

      def test_web_calls_my_local_build(kt_swap, my_server):
          swap = kt_swap("deploy/web", f"{my_server.port}:80")
          ...  # pods calling `web` reach my_server

- ``kt_mesh``: likewise, ``kt_mesh(target, expose, **options)`` calls
  :meth:`ktconnect.Session.mesh` and returns the :class:`ktconnect.Mesh`, closed when
  the test ends::

      def test_my_build_answers_my_requests(kt_mesh, kt_requests, my_server):
          mesh = kt_mesh("svc/web", f"{my_server.port}:80")
          assert kt_requests.get("http://web/", headers=mesh.header).ok

Configuration, first found wins: command-line option, ini setting, environment:

- ``--kt-kubeconfig`` / ``kt_kubeconfig`` / ``KT_KUBECONFIG`` (kt itself then falls
  back to ``KUBECONFIG`` and ``~/.kube/config``);
- ``--kt-context`` / ``kt_context`` / ``KT_CONTEXT``;
- ``--kt-namespace`` / ``kt_namespace`` / ``KT_NAMESPACE``;
- ``--kt-shadow-image`` / ``kt_shadow_image`` / ``KT_SHADOW_IMAGE`` (default: none,
  kt ships its agent into the namespace);
- ``--kt-base-image`` / ``kt_base_image`` / ``KT_BASE_IMAGE`` (the image the shipped
  agent runs on when no running pod lends one);
- ``--kt-agent-dir`` / ``kt_agent_dir`` / ``KT_AGENT_DIR`` (a directory with
  ``kt-shadow`` to ship instead of the agent built into kt);
- ``--kt-flavour`` / ``kt_flavour`` / ``KT_FLAVOUR`` (``kt-shadow`` or ``openssh``);
- ``--kt-pod-ready-timeout`` / ``kt_pod_ready_timeout`` / ``KT_POD_READY_TIMEOUT``
  (seconds).

Unset settings take kt's defaults (the kubeconfig's current context and namespace).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from ._inbound import Mesh, Ports, Swap
from ._session import Session

# (option dest / ini name, environment variables, help)
_SETTINGS = (
    ("kt_kubeconfig", ("KT_KUBECONFIG",), "kubeconfig file (default: KUBECONFIG, ~/.kube/config)"),
    ("kt_context", ("KT_CONTEXT",), "kubeconfig context (default: the current one)"),
    ("kt_namespace", ("KT_NAMESPACE",), "namespace of the shadow pod (default: the context's)"),
    (
        "kt_shadow_image",
        ("KT_SHADOW_IMAGE",),
        "shadow image (default: none, kt ships its agent into the namespace)",
    ),
    (
        "kt_base_image",
        ("KT_BASE_IMAGE",),
        "image the shipped agent runs on when no running pod lends one (default: registry.k8s.io/pause:3.10)",
    ),
    (
        "kt_agent_dir",
        ("KT_AGENT_DIR",),
        "directory with kt-shadow to ship (default: the agent built into kt)",
    ),
    ("kt_flavour", ("KT_FLAVOUR",), 'shadow flavour: "kt-shadow" (default) or "openssh"'),
    ("kt_pod_ready_timeout", ("KT_POD_READY_TIMEOUT",), "seconds the shadow pod may take to be ready"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ktconnect", "kt session for tests (ktconnect)")
    for name, env, help_text in _SETTINGS:
        flag = "--" + name.replace("_", "-")
        group.addoption(flag, dest=name, default=None, help=f"{help_text}; env {', '.join(env)}")
        parser.addini(name, help=help_text, default=None)


def _setting(config: pytest.Config, name: str, env: Tuple[str, ...]) -> Optional[str]:
    value = config.getoption(name, default=None)
    if value:
        return str(value)
    value = config.getini(name)
    if value:
        return str(value)
    for var in env:
        value = os.environ.get(var)
        if value:
            return value
    return None


def _options_from_config(config: pytest.Config) -> Dict[str, Any]:
    values = {name: _setting(config, name, env) for name, env, _ in _SETTINGS}
    options: Dict[str, Any] = {}
    if values["kt_kubeconfig"]:
        options["kubeconfig"] = values["kt_kubeconfig"]
    if values["kt_context"]:
        options["context"] = values["kt_context"]
    if values["kt_namespace"]:
        options["namespace"] = values["kt_namespace"]
    if values["kt_shadow_image"]:
        options["shadow_image"] = values["kt_shadow_image"]
    if values["kt_base_image"]:
        options["base_image"] = values["kt_base_image"]
    if values["kt_agent_dir"]:
        options["agent_dir"] = values["kt_agent_dir"]
    if values["kt_flavour"]:
        options["flavour"] = values["kt_flavour"]
    if values["kt_pod_ready_timeout"]:
        try:
            options["pod_ready_timeout"] = float(values["kt_pod_ready_timeout"])
        except ValueError:
            raise pytest.UsageError(
                f"kt_pod_ready_timeout must be a number of seconds, not {values['kt_pod_ready_timeout']!r}"
            ) from None
    return options


def pytest_report_header(config: pytest.Config) -> Optional[str]:
    options = _options_from_config(config)
    if not options:
        return None
    shown = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"ktconnect: {shown}"


@pytest.fixture(scope="session")
def kt_connect_options(pytestconfig: pytest.Config) -> Dict[str, Any]:
    """Keyword arguments of ``Session.connect`` for ``kt_session``, from the
    command line, ini file and environment. Override it to compute them."""
    return _options_from_config(pytestconfig)


@pytest.fixture(scope="session")
def kt_session(kt_connect_options: Dict[str, Any]) -> Iterator[Session]:
    """One kt session for the test run, closed at the end."""
    session = Session.connect(**kt_connect_options)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def kt_env(kt_session: Session) -> Dict[str, str]:
    """``os.environ`` plus the session's proxy variables, for child processes."""
    return {**os.environ, **kt_session.env()}


@pytest.fixture
def kt_requests(kt_session: Session) -> Iterator[Any]:
    """A ``requests.Session`` that sends every request through the kt session's HTTP
    proxy (cluster names work: ``http://web.dev/``)."""
    try:
        import requests
    except ImportError:
        pytest.fail("the kt_requests fixture needs the requests package: pip install requests")
    client = requests.Session()
    client.trust_env = False  # the session's proxy, not the environment's
    client.proxies.update(kt_session.requests_proxies())
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kt_httpx(kt_session: Session) -> Iterator[Any]:
    """An ``httpx.Client`` that sends every request through the kt session's HTTP
    proxy."""
    try:
        import httpx
    except ImportError:
        pytest.fail("the kt_httpx fixture needs the httpx package: pip install httpx")
    with httpx.Client(proxy=kt_session.httpx_proxy(), trust_env=False) as client:
        yield client


@pytest.fixture
def kt_swap(kt_session: Session) -> Iterator[Callable[..., Swap]]:
    """A factory: ``kt_swap(target, expose, **options)`` swaps ``target`` with
    ``kt_session`` (the arguments of :meth:`ktconnect.Session.swap`); every swap made
    is closed at teardown, the last made first."""
    yield from _closing_factory(kt_session.swap)


@pytest.fixture
def kt_mesh(kt_session: Session) -> Iterator[Callable[..., Mesh]]:
    """A factory: ``kt_mesh(target, expose, **options)`` meshes ``target`` with
    ``kt_session`` (the arguments of :meth:`ktconnect.Session.mesh`); every mesh made
    is closed at teardown, the last made first."""
    yield from _closing_factory(kt_session.mesh)


def _closing_factory(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """The body of ``kt_swap`` and ``kt_mesh``: yields ``make``, then closes every
    handle it made, the last made first (all of them, then raises the first
    failure)."""
    made: List[Any] = []

    def factory(target: str, expose: Ports, **options: Any) -> Any:
        handle = make(target, expose, **options)
        made.append(handle)
        return handle

    try:
        yield factory
    finally:
        failures = []
        for handle in reversed(made):
            try:
                handle.close()
            except Exception as e:  # noqa: BLE001 - close the others, then report
                failures.append(e)
        if failures:
            raise failures[0]
