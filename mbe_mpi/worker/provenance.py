"""The node facts QCEngine writes into a kept AtomicResult's provenance (CPU brand, host, user), found once
per node and boot rather than once per QC process.

QCEngine fills ``provenance`` from ``qcengine.config.get_global``, which asks py-cpuinfo for the CPU's
brand once per process. py-cpuinfo runs itself in a subprocess that measures the clock over a
one-second sleep: 1.1 s of wall time and 1.2 s of CPU on this 2-core host, paid at the first kept
result (``cluster_results: all``) by every QC child -- each worker's, again after every restart, and in
every run. :func:`ensure` runs py-cpuinfo's own command once, keeps its answer in the user's cache
folder under the host's name and the kernel's boot id, and hands that answer to ``get_global`` in every
later process on the node, so QCEngine stores what it would have found itself. Without a boot id (not
Linux) or a writable cache folder, QCEngine finds the facts its own way, as before.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import qcengine

from ..files import write_atomically

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 60.0  # seconds; py-cpuinfo takes ~1 s, one stuck longer is left for QCEngine's own way
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def cache_folder() -> Path:
    """``$XDG_CACHE_HOME/mbe_mpi`` or ``~/.cache/mbe_mpi``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mbe_mpi"


def node_prefix() -> str:
    """``cpuinfo-<host>``: the start of this node's file names (the host name made safe for a file name)."""
    host = "".join(c if c.isalnum() or c in "-._" else "_" for c in socket.gethostname()) or "host"
    return f"cpuinfo-{host}"


def cache_file() -> Path | None:
    """Where this node's answer is kept for this boot (a shared home holds one file per node), or None."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return None
    return cache_folder() / f"{node_prefix()}-{boot}.json" if boot else None


def ensure() -> None:
    """Fill QCEngine's node facts: from this node's kept answer, or from py-cpuinfo's command (then kept)."""
    if getattr(qcengine.config, "_global_values", None) is not None:  # this process (or its parent) has them
        return
    path = cache_file()
    info = _read(path) if path is not None else None
    if info is None and path is not None:
        info = _probe()
        if info is not None:
            _keep(path, info)
    if info is None:
        qcengine.config.get_global()
        return
    import cpuinfo

    # get_global calls cpuinfo.get_cpu_info() once; it gets the answer the same command gave on this node.
    original = cpuinfo.get_cpu_info
    cpuinfo.get_cpu_info = lambda: info
    try:
        qcengine.config.get_global()
    finally:
        cpuinfo.get_cpu_info = original


def _read(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "brand_raw" in info else None


def _probe() -> dict[str, Any] | None:
    """What ``cpuinfo.get_cpu_info()`` returns, from the command it runs itself."""
    try:
        source = importlib.import_module("cpuinfo.cpuinfo").__file__
        proc = subprocess.run([sys.executable, str(source), "--json"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=PROBE_TIMEOUT, check=True)
        info = json.loads(proc.stdout)
    except Exception:
        logger.debug("py-cpuinfo gave no answer", exc_info=True)
        return None
    return info if isinstance(info, dict) else None


def _keep(path: Path, info: dict[str, Any]) -> None:
    """Write atomically (processes on the node may race; each writes the same); drop this node's older boots."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(info))
        # a boot id is a UUID: a node whose name only starts with this one's keeps its files
        earlier = re.compile(re.escape(node_prefix()) + r"-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.json")
        for old in path.parent.iterdir():
            if old != path and earlier.fullmatch(old.name):
                with contextlib.suppress(OSError):
                    old.unlink()
    except OSError:
        logger.debug("could not keep the CPU facts in %s", path, exc_info=True)
