"""Checks shared by the API server and the rating UI: bind addresses, Host headers, bearer tokens, headers."""

from __future__ import annotations

import hmac
import ipaddress

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str, extra: list[str] | tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Host header names a server accepts; None = any.

    Against DNS rebinding: a web page whose own name the attacker re-points to 127.0.0.1 reaches a local server
    from the victim's browser, but its requests still carry the attacker's name in Host. A wildcard bind without
    --allowed-host accepts any name: the server cannot know every name and address it is reached by (a container
    behind a published port never sees the host's), and a key or token is required there instead.
    """
    if bind_host in WILDCARD_HOSTS and not extra:
        return None
    names = [*LOOPBACK_NAMES, *([] if bind_host in WILDCARD_HOSTS else [bind_host]), *extra]
    return tuple(dict.fromkeys(n.strip("[]").lower() for n in names))


def host_name(header: str) -> str:
    """The name part of a Host header: 'Example:80' -> 'example', '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else header
    name, sep, port = header.rpartition(":")
    return name if sep and port.isdigit() else header


def host_allowed(header: str | None, allowed: tuple[str, ...] | None) -> bool:
    return allowed is None or host_name(header or "") in allowed


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive (RFC 7235)."""
    scheme, _, token = (header or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
