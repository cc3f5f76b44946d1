"""Which sockets listen, for which processes, on which addresses (Linux /proc): the loopback
assertion of the serve and batch tests (issue #18 item 4)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

# TCP LISTEN is state 0A; an unconnected bound UDP socket is 07.
_TABLES = (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07"))


def _addr(hexaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # /proc prints IPv6 as four little-endian 32-bit words
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return ipaddress.IPv6Address(words)


def _inodes(pids: list[int]) -> dict[int, int]:
    """socket inode -> pid for every socket the processes hold."""
    out: dict[int, int] = {}
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds[:100000]:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                out[int(link[8:-1])] = pid
    return out


def listening(pids: list[int]) -> list[tuple[int, str, str, int]]:
    """(pid, protocol, address, port) of every listening / bound-unconnected socket of
    ``pids``."""
    owners = _inodes(pids)
    found = []
    for table, state in _TABLES:
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != state:
                continue
            inode = int(f[9])
            if inode in owners:
                host, port = f[1].split(":")
                found.append((owners[inode], table, str(_addr(host)), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    a = ipaddress.ip_address(address)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return a.is_loopback


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo and len(out) < 10000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def assert_loopback_only(pids: list[int], at_least: int = 1) -> list[tuple[int, str, str, int]]:
    """Every listening socket of ``pids`` is on a loopback address, and there are at least
    ``at_least`` of them (so the check is not vacuous)."""
    socks = listening(pids)
    outside = [s for s in socks if not is_loopback(s[2])]
    assert not outside, f"sockets listening outside loopback: {outside}"
    assert len(socks) >= at_least, f"expected >= {at_least} listening sockets, found {socks}"
    return socks
