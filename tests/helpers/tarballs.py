"""Tar streams for archive-mode tests (PROTOCOL.md section 7)."""

import io
import tarfile


def tar_bytes(members, fmt=tarfile.GNU_FORMAT):
    """members: list of (TarInfo, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return buf.getvalue()


def file_entry(name, data, mode=0o644, mtime=1_600_000_000):
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = mtime
    return info, data
