"""The pytest plugin, as a user meets it: a fresh pytest run (a subprocess, so the
plugin is found through its ``pytest11`` entry point) of a test file that only asks
for fixtures."""

from __future__ import annotations

import ast
import pathlib

import pytest

import ktconnect
from conftest import Namespace

USER_TESTS = """
import ktconnect

def test_session_fixture_is_connected(kt_session):
    assert isinstance(kt_session, ktconnect.Session)
    assert kt_session.namespace == "{ns}"
    assert kt_session.resolve("echo")

def test_requests_fixture_reaches_echo(kt_requests):
    assert kt_requests.get("http://echo/hello", timeout=30).json()["namespace"] == "{ns}"

def test_httpx_fixture_reaches_echo(kt_httpx):
    assert kt_httpx.get("http://echo.{ns}/hello").json()["path"] == "/hello"

def test_env_fixture_has_the_proxy(kt_env, kt_session):
    assert kt_env["HTTP_PROXY"] == kt_session.http_proxy_url
"""


def test_plugin_fixtures_work_with_command_line_options(
    pytester: pytest.Pytester, namespace: Namespace
) -> None:
    pytester.makepyfile(test_user=USER_TESTS.format(ns=namespace.name))
    result = pytester.runpytest_subprocess(
        f"--kt-kubeconfig={namespace.kubeconfig}", f"--kt-namespace={namespace.name}", "-v"
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([f"ktconnect: kubeconfig={namespace.kubeconfig}, namespace={namespace.name}"])


def test_plugin_reads_ini_settings_and_environment(
    pytester: pytest.Pytester, namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(f"[pytest]\nkt_namespace = {namespace.name}\n")
    monkeypatch.setenv("KT_KUBECONFIG", namespace.kubeconfig)
    pytester.makepyfile(test_user=USER_TESTS.format(ns=namespace.name))
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=4)


def test_a_session_that_cannot_connect_is_an_error_of_each_test_not_a_skip(
    pytester: pytest.Pytester, lab, namespace: Namespace
) -> None:
    pytester.makepyfile(
        test_user="""
def test_one(kt_session):
    pass

def test_two(kt_session):
    pass
"""
    )
    result = pytester.runpytest_subprocess(
        f"--kt-kubeconfig={lab.admin_kubeconfig}", "--kt-namespace=kt-no-such-ns"
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*NotFound: namespace `kt-no-such-ns` does not exist*"])


def test_plugin_rejects_a_bad_flavour_with_the_options_message(
    pytester: pytest.Pytester, namespace: Namespace
) -> None:
    pytester.makepyfile(test_user="def test_one(kt_session):\n    pass\n")
    result = pytester.runpytest_subprocess(
        f"--kt-kubeconfig={namespace.kubeconfig}", "--kt-flavour=dropbear"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*InvalidArgument: flavour: invalid shadow flavour `dropbear`*"])


def test_plugin_passes_the_base_image_and_the_agent_dir_from_flags_ini_and_environment(
    pytester: pytest.Pytester, namespace: Namespace, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """An agent directory without the agent: each test that uses kt_session errors with
    kt's message naming the missing file."""
    pytester.makepyfile(test_user="def test_one(kt_session):\n    pass\n")
    cluster = (f"--kt-kubeconfig={namespace.kubeconfig}", f"--kt-namespace={namespace.name}")
    shown = f"ktconnect: agent_dir={tmp_path}, base_image=busybox:1.37, kubeconfig={namespace.kubeconfig}, namespace={namespace.name}"
    refused = f"*InvalidArgument: cannot ship {tmp_path}/kt-shadow to the cluster*build-static*"
    flags = pytester.runpytest_subprocess(*cluster, f"--kt-agent-dir={tmp_path}", "--kt-base-image=busybox:1.37")
    flags.assert_outcomes(errors=1)
    flags.stdout.fnmatch_lines([shown, refused])
    pytester.makeini(f"[pytest]\nkt_agent_dir = {tmp_path}\n")
    monkeypatch.setenv("KT_BASE_IMAGE", "busybox:1.37")
    configured = pytester.runpytest_subprocess(*cluster)
    configured.assert_outcomes(errors=1)
    configured.stdout.fnmatch_lines([shown, refused])


def test_stubs_declare_every_native_name_with_the_same_exception_bases() -> None:
    stub = pathlib.Path(ktconnect._native.__file__).with_name("_native.pyi")
    assert stub.exists(), "the .pyi stub is shipped beside the native module"
    assert stub.with_name("py.typed").exists()
    tree = ast.parse(stub.read_text())
    declared = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            declared[node.name] = [ast.unparse(b) for b in node.bases]
        elif isinstance(node, ast.FunctionDef):
            declared[node.name] = None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared[node.target.id] = None
    native = ktconnect._native
    public = {n for n in dir(native) if not n.startswith("_")} | {"__version__"}
    assert public <= set(declared), f"not in the stub: {sorted(public - set(declared))}"
    for name, bases in declared.items():
        obj = getattr(native, name, None)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert [b.__name__ for b in obj.__bases__] == bases, name
