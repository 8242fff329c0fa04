"""``ktconnect.recover_system_dns()``: undoes the system DNS changes a crashed kt left
behind, as ``ktctl recover`` does. The restore records are pointed at a temporary
directory with ``KT_STATE_DIR``, the hosts file at a temporary file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import ktconnect

ORIGINAL = "127.0.0.1\tlocalhost\n"


def _dev_ino(path: str) -> list:
    st = os.stat(path)
    return [st.st_dev, st.st_ino]


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_with_nothing_recorded_recover_system_dns_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KT_STATE_DIR", str(tmp_path))
    assert ktconnect.recover_system_dns() == []


def test_recover_system_dns_removes_the_hosts_entries_a_crashed_kt_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(
        ORIGINAL + "# kt session s1 begin\n10.96.0.10\tweb.dev.svc.cluster.local web\n# kt session s1 end\n"
    )
    records = tmp_path / "state" / "restore"
    records.mkdir(parents=True)
    pid = _dead_pid()
    record = {
        "kind": "hosts",
        "pid": pid,
        "time": 0,
        "path": str(hosts),
        "session": "s1",
        "newline_added": False,
        "created": False,
        "identity": {
            "file": _dev_ino(str(hosts)),
            "parent": _dev_ino(str(tmp_path)),
            "net_ns": _dev_ino("/proc/self/ns/net"),
            "mnt_ns": _dev_ino("/proc/self/ns/mnt"),
        },
    }
    (records / "hosts-s1.json").write_text(json.dumps(record))
    os.chmod(records / "hosts-s1.json", 0o600)
    monkeypatch.setenv("KT_STATE_DIR", str(tmp_path / "state"))

    done = ktconnect.recover_system_dns()

    assert done == [f"hosts entries of kt session s1 in {hosts} (pid {pid})"]
    assert hosts.read_text() == ORIGINAL
    assert list(records.iterdir()) == []  # the record is gone once done
    assert ktconnect.recover_system_dns() == []  # and again: nothing left


def test_an_unreadable_record_directory_raises_vpn_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "restore").write_text("not a directory")
    monkeypatch.setenv("KT_STATE_DIR", str(tmp_path))
    with pytest.raises(ktconnect.VpnError, match="system DNS: cannot list restore records in") as info:
        ktconnect.recover_system_dns()
    assert info.value.kind == "vpn" and isinstance(info.value, OSError)
