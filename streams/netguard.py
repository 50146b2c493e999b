"""Which addresses the fetcher may connect to (SSRF defence, deny by default)."""

from __future__ import annotations

import ipaddress
import re
import socket

from processors import errors

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Hosts spelled as numbers in any of the forms inet_aton accepts: 2130706433, 0177.1, 0x7f.0.0.1
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}\.?$", re.I)


def literal_address(host: str) -> IPAddress | None:
    """The address a host names directly (IPv6, dotted quad or an odd IPv4 spelling), else None."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
        except OSError:
            raise errors.PermanentError(
                errors.SSRF_DENIED, f"malformed numeric host {host!r}") from None
    return None


def is_public(address: IPAddress) -> bool:
    """True for globally routable unicast addresses only."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (
            address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return is_public(embedded)
        if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64 maps IPv4 too
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return bool(address.is_global) and not address.is_multicast


def vet(address: IPAddress, allow_private: bool) -> None:
    """Raise ``ssrf_denied`` unless ``address`` may be fetched from."""
    if allow_private and not address.is_multicast and not address.is_unspecified:
        return
    if not is_public(address):
        raise errors.PermanentError(errors.SSRF_DENIED, f"address {address} is not public")
