"""Listening sockets: turn a failed bind into one line that names the setting and the fix."""

from __future__ import annotations

import errno
import socket

from callpulse.exceptions import SettingsError


def bind_problem(setting: str, host: str, port: int, exc: OSError) -> SettingsError:
    """The SettingsError for a failed bind of host:port, which `setting` chose."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        reason, fix = "unknown host", "use an IP address of this machine, such as 127.0.0.1 or 0.0.0.0"
    elif exc.errno == errno.EADDRINUSE:
        reason, fix = "port in use", f"stop what listens on port {port}, or choose a free port with {setting}"
    elif exc.errno == errno.EADDRNOTAVAIL:
        reason = "not an address of this machine"
        fix = f"set {setting} to one of its addresses: 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
    elif exc.errno == errno.EACCES:
        reason, fix = "permission denied", f"ports below 1024 need privileges: choose a port above 1023 with {setting}"
    else:
        reason, fix = exc.strerror or type(exc).__name__, f"choose another address with {setting}"
    return SettingsError(f"{setting} is {where}, which cannot be bound ({reason}): {fix}")


def check_bindable(host: str, port: int, *, setting: str) -> None:
    """Bind host:port and let go at once, so a taken port is one clear line before a server starts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _name, address in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
    except OSError as exc:
        raise bind_problem(setting, host, port, exc) from exc
