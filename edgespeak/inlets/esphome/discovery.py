"""mDNS: ``<name>._esphomelib._tcp.local.`` with the TXT records Home Assistant reads, so it
offers to add the device by itself (zeroconf library).

The instance name and the host name are both the device name: Home Assistant's config flow
takes the name from the host, and aioesphomeapi's reconnect logic watches the PTR and A
records of those names. Bound to one address (``[esphome] host``), only that interface is
used (tests use 127.0.0.1); bound to 0.0.0.0, every interface, advertising their IPv4
addresses.
"""

from __future__ import annotations

import logging
import socket

import ifaddr
from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edgespeak.inlets.esphome.device import Device

log = logging.getLogger(__name__)
SERVICE = "_esphomelib._tcp.local."


def _addresses(host: str) -> list[str]:
    """The IPv4 addresses to advertise for a server bound to ``host``."""
    if host not in ("", "0.0.0.0"):
        return [host]
    found = [
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
    ]
    return found or ["127.0.0.1"]


class Advertiser:
    """Registers the service while the server runs (:meth:`start`, :meth:`close`)."""

    def __init__(self, device: Device, host: str) -> None:
        self._device = device
        self._host = host
        self._zeroconf: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    async def start(self, port: int) -> None:
        """Announce the service on ``port``. Raises OSError when mDNS cannot start."""
        addresses = _addresses(self._host)
        interfaces = InterfaceChoice.All if self._host in ("", "0.0.0.0") else addresses
        name = self._device.name
        self._info = AsyncServiceInfo(
            SERVICE,
            f"{name}.{SERVICE}",
            addresses=[socket.inet_aton(a) for a in addresses],
            port=port,
            properties=self._device.txt(),
            server=f"{name}.local.",
        )
        self._zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        await self._zeroconf.async_register_service(self._info, allow_name_change=True)
        log.info("advertising %s.%s on %s port %d", name, SERVICE, ", ".join(addresses), port)

    async def close(self) -> None:
        """Withdraw the service (a goodbye packet) and stop mDNS. Never raises."""
        zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is None:
            return
        try:
            if self._info is not None:
                await zeroconf.async_unregister_service(self._info)
            await zeroconf.async_close()
        except Exception as exc:  # shutting down: nothing to do about it but say so
            log.warning("stopping mDNS: %s", exc)
