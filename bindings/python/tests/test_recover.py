"""``ktconnect.recover_system_dns()``: undoes the system DNS changes a crashed kt left
behind, as ``ktctl recover`` does. The restore records are pointed at a temporary
directory with ``KT_STATE_DIR``, the hosts file at a temporary file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def _hosts_record(path: str, identity_of: str, pid: int) -> dict:
    """A restore record for kt session s1's hosts block in ``path``; ``identity_of`` is
    the file whose device and inode the record carries."""
    return {
        "kind": "hosts",
        "pid": pid,
        "time": 0,
        "path": path,
        "session": "s1",
        "newline_added": False,
        "created": False,
        "identity": {
            "file": _dev_ino(identity_of),
            "parent": _dev_ino(os.path.dirname(identity_of)),
            "net_ns": _dev_ino("/proc/self/ns/net"),
            "mnt_ns": _dev_ino("/proc/self/ns/mnt"),
        },
    }


def _left_by_a_crash(tmp_path: Path) -> tuple[Path, Path]:
    """A hosts file with kt session s1's block, and an empty record directory."""
    hosts = tmp_path / "hosts"
    hosts.write_text(
        ORIGINAL + "# kt session s1 begin\n10.96.0.10\tweb.dev.svc.cluster.local web\n# kt session s1 end\n"
    )
    records = tmp_path / "state" / "restore"
    records.mkdir(parents=True)
    os.chmod(tmp_path / "state", 0o700)
    os.chmod(records, 0o700)
    return hosts, records


def test_recover_system_dns_removes_the_hosts_entries_a_crashed_kt_left(tmp_path: Path) -> None:
    # The machine's /etc/hosts is never touched: the child runs in its own mount
    # namespace where a temporary file is bind-mounted over /etc/hosts, as
    # `ip netns exec` does with /etc/netns/<ns>/hosts.
    hosts, records = _left_by_a_crash(tmp_path)
    pid = _dead_pid()
    record = _hosts_record("/etc/hosts", str(hosts), pid)
    (records / "hosts-s1.json").write_text(json.dumps(record))
    os.chmod(records / "hosts-s1.json", 0o600)
    child = (
        "import json, ktconnect\n"
        "first = ktconnect.recover_system_dns()\n"
        "print(json.dumps([first, ktconnect.recover_system_dns()]))\n"
    )
    script = f'mount --bind "{hosts}" /etc/hosts && exec "{sys.executable}" -c \'{child}\''
    env = dict(os.environ, KT_STATE_DIR=str(tmp_path / "state"))
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    first, again = json.loads(out.stdout)
    assert first == [f"hosts entries of kt session s1 in /etc/hosts (pid {pid})"]
    assert again == []  # and again: nothing left
    assert hosts.read_text() == ORIGINAL
    assert list(records.iterdir()) == []  # the record is gone once done


def test_a_record_naming_a_file_kt_never_changes_is_not_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A forged record pointing at any other file (here a temporary one standing in for
    # a file such as /etc/shadow) is left alone: kt restores only the system DNS files.
    hosts, records = _left_by_a_crash(tmp_path)
    before = hosts.read_text()
    record = _hosts_record(str(hosts), str(hosts), _dead_pid())
    (records / "hosts-s1.json").write_text(json.dumps(record))
    os.chmod(records / "hosts-s1.json", 0o600)
    monkeypatch.setenv("KT_STATE_DIR", str(tmp_path / "state"))

    assert ktconnect.recover_system_dns() == []
    assert hosts.read_text() == before


def test_an_unreadable_record_directory_raises_vpn_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "restore").write_text("not a directory")
    monkeypatch.setenv("KT_STATE_DIR", str(tmp_path))
    with pytest.raises(ktconnect.VpnError, match="system DNS: cannot list restore records in") as info:
        ktconnect.recover_system_dns()
    assert info.value.kind == "vpn" and isinstance(info.value, OSError)
