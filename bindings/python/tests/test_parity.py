"""Every public option, operation and function of kt-core is reachable from Python.

kt-core keeps the lists (``kt_core::surface``, exported as ``_native.SURFACE``); a
setting or an operation added there without a keyword, method or function here fails
these tests."""

from __future__ import annotations

import inspect

import ktconnect
from ktconnect import _native

# kt-core builder name -> the Python keyword, where Python spells it differently:
# builders called once per entry take a mapping or a list here.
CONNECT_RENAMED = {
    "label": "labels",
    "annotation": "annotations",
    "image_pull_secret": "image_pull_secrets",
    "node_selector": "node_selector",
}
VPN_RENAMED = {
    "no_discovery": "discover",  # discover=False
}


def _keywords(func) -> set:
    return {
        name
        for name, p in inspect.signature(func).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _missing(names, keywords, renamed) -> list:
    return [n for n in names if renamed.get(n, n) not in keywords]


def test_the_surface_lists_come_from_kt_core() -> None:
    surface = _native.SURFACE
    assert set(surface) == {
        "CONNECT_OPTIONS",
        "VPN_OPTIONS",
        "SESSION_OPERATIONS",
        "FUNCTIONS",
        "SWAP_OPTIONS",
        "EXPOSE_OPTIONS",
        "SWAP_OPERATIONS",
        "EXPOSE_OPERATIONS",
        "MESH_OPTIONS",
        "MESH_OPERATIONS",
    }
    assert "shadow_heartbeat_timeout" in surface["CONNECT_OPTIONS"]
    assert "udp_channel" in surface["SESSION_OPERATIONS"]
    assert "swap" in surface["SESSION_OPERATIONS"]
    assert "recover_system_dns" in surface["FUNCTIONS"] and "clean" in surface["FUNCTIONS"]
    assert "restore_ttl" in surface["SWAP_OPTIONS"]
    assert "service_type" in surface["EXPOSE_OPTIONS"]
    assert "connections" in surface["SWAP_OPERATIONS"]
    assert "service" in surface["EXPOSE_OPERATIONS"]
    assert "restore_ttl" in surface["MESH_OPTIONS"]
    assert "header" in surface["MESH_OPERATIONS"]


def test_every_connect_option_of_kt_core_is_a_keyword_of_session_connect() -> None:
    names = _native.SURFACE["CONNECT_OPTIONS"]
    for func in (
        ktconnect.Session.connect,
        ktconnect.Session.connect_async,
        ktconnect.connect_options,
        ktconnect.ConnectOptions,
    ):
        missing = _missing(names, _keywords(func), CONNECT_RENAMED)
        assert not missing, f"{func.__qualname__} has no keyword for kt-core's {missing}"


def test_every_vpn_option_of_kt_core_is_a_keyword_of_vpn_options() -> None:
    missing = _missing(_native.SURFACE["VPN_OPTIONS"], _keywords(ktconnect.VpnOptions), VPN_RENAMED)
    assert not missing, f"VpnOptions has no keyword for kt-core's {missing}"


def test_every_session_operation_of_kt_core_is_a_session_method_or_property() -> None:
    missing = [
        op for op in _native.SURFACE["SESSION_OPERATIONS"] if not hasattr(ktconnect.Session, op)
    ]
    assert not missing, f"ktconnect.Session lacks kt-core's {missing}"
    # Each blocking operation that waits has its asyncio twin.
    for op in ("resolve", "forward", "forward_udp", "udp_channel", "swap", "expose", "mesh", "close"):
        assert inspect.iscoroutinefunction(getattr(ktconnect.Session, f"{op}_async")), op


def test_every_swap_and_expose_option_of_kt_core_is_a_keyword() -> None:
    for names, funcs in (
        ("SWAP_OPTIONS", (ktconnect.Session.swap, ktconnect.Session.swap_async)),
        ("EXPOSE_OPTIONS", (ktconnect.Session.expose, ktconnect.Session.expose_async)),
        ("MESH_OPTIONS", (ktconnect.Session.mesh, ktconnect.Session.mesh_async)),
    ):
        for func in funcs:
            missing = _missing(_native.SURFACE[names], _keywords(func), {})
            assert not missing, f"{func.__qualname__} has no keyword for kt-core's {missing}"


def test_every_swap_and_expose_operation_of_kt_core_is_a_member_of_the_handle() -> None:
    for names, cls in (
        ("SWAP_OPERATIONS", ktconnect.Swap),
        ("EXPOSE_OPERATIONS", ktconnect.Expose),
        ("MESH_OPERATIONS", ktconnect.Mesh),
    ):
        missing = [op for op in _native.SURFACE[names] if not hasattr(cls, op)]
        assert not missing, f"ktconnect.{cls.__name__} lacks kt-core's {missing}"
        assert inspect.iscoroutinefunction(cls.close_async)
        # `with` and `async with` close it.
        for method in ("__enter__", "__exit__", "__aenter__", "__aexit__"):
            assert hasattr(cls, method), (cls, method)


def test_every_function_of_kt_core_is_a_module_function() -> None:
    missing = [f for f in _native.SURFACE["FUNCTIONS"] if not callable(getattr(ktconnect, f, None))]
    assert not missing, f"ktconnect lacks kt-core's functions {missing}"
    assert set(_native.SURFACE["FUNCTIONS"]) <= set(ktconnect.__all__)
    # The ones that talk to the cluster have their asyncio twin.
    for f in ("clean", "recover"):
        assert inspect.iscoroutinefunction(getattr(ktconnect, f"{f}_async")), f


def test_the_check_fails_for_a_name_python_does_not_have() -> None:
    """The comparison itself: a new kt-core name with no keyword is reported."""
    names = list(_native.SURFACE["CONNECT_OPTIONS"]) + ["brand_new_setting"]
    assert _missing(names, _keywords(ktconnect.Session.connect), CONNECT_RENAMED) == [
        "brand_new_setting"
    ]
