"""IP addresses and networks named in a setting (APP_TRUSTED_PROXIES, APP_METRICS_ALLOW)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

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
