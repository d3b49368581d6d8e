"""IP addresses and networks named in a setting (APP_TRUSTED_PROXIES, APP_METRICS_ALLOW), and
the address this host is reached at by another one."""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NotAnAddress(ValueError):
    pass


class AddressSet:
    """Comma-separated IPs and CIDRs, e.g. `127.0.0.0/8, ::1, 10.1.2.3`; empty holds none.
    Written out (no `*`, no host names): a typo is refused at startup, never a silent hole."""

    def __init__(self, text: str, setting: str) -> None:
        self.networks: list[Network] = []
        for entry in (entry.strip() for entry in text.split(",")):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise NotAnAddress(
                    f"APP_{setting.upper()}: {entry!r} is not an IP address or network "
                    "(write e.g. 10.0.0.5, 10.0.0.0/8 or ::1, comma-separated)"
                ) from None

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: str | None) -> bool:
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # e.g. a unix socket, or a garbled forwarded address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 client of a dual-stack socket
        return any(address in network for network in self.networks)


@lru_cache(maxsize=16)
def address_set(text: str, setting: str) -> AddressSet:
    """The parsed set, once per distinct setting value (it is asked on every request)."""
    return AddressSet(text, setting)


def address_toward(url: str) -> str | None:
    """This host's own address on the route to `url`'s host (e.g. the broker's): the one a
    process on that side of the network can reach it at. No packet is sent (a UDP socket's
    connect only picks the route); None when there is no route or no host in the URL."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    try:
        family = socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((parts.hostname, parts.port or 9))
            address: str = probe.getsockname()[0]
    except OSError:
        return None
    return address
