"""Processes of this machine as /proc shows them: whether one still runs, and its children."""

from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone (or never there)
        return None
    return stat.rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie counts as dead (a container's init may be slow to reap,
    or never reap)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int, needle: str = "") -> list[int]:
    """The processes whose parent is ``pid`` (and whose command line holds ``needle``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None or int(fields[1]) != pid:
            continue
        if needle:
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if needle not in cmdline:
                continue
        found.append(int(entry.name))
    return found
