"""The server's ICE candidate: one UDP socket per peer connection, in the configured range.

aioice binds an ephemeral port on every address of the host and announces each. A server
behind a firewall needs a known port range, and behind a 1:1 NAT (most clouds) it must
announce its public address, which no local interface carries. aioice offers neither, so
when either is configured the server binds the one socket itself and hands it to the ICE
connection as its only host candidate, before aiortc would gather (gathering then finds the
work done). Only aioice's connection internals are touched, and only for the server's own
connections.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import random
import socket

from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol, get_host_addresses
from aioice.turn import UDP_SOCKET_BUFFER_SIZE

from media.config import MediaConfig


class NoMediaPort(RuntimeError):
    """Every port of the configured range is taken."""


def announced_address(config: MediaConfig) -> str:
    """The address browsers are told to send to."""
    if config.public_address is not None:
        return config.public_address
    if (
        config.bind_address is not None
        and not ipaddress.ip_address(config.bind_address).is_unspecified
    ):
        return config.bind_address
    found = get_host_addresses(use_ipv4=True, use_ipv6=False)
    if not found:
        raise NoMediaPort("no IPv4 address to announce: set CONCILIA_MEDIA_PUBLIC_ADDRESS")
    return found[0]


async def bind_host_candidate(connection: Connection, config: MediaConfig) -> Candidate:
    """Bind the connection's socket within the port range and make it its only candidate."""
    loop = asyncio.get_running_loop()
    bind = config.bind_address or "0.0.0.0"  # noqa: S104 (the operator's choice to announce)
    announced = announced_address(config)
    if config.port_min is not None and config.port_max is not None:
        ports = list(range(config.port_min, config.port_max + 1))
        start = random.randrange(len(ports))  # noqa: S311 (spreads the ports, not a secret)
        ports = ports[start:] + ports[:start]
    else:
        ports = [0]
    for port in ports:
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: StunProtocol(connection), local_addr=(bind, port)
            )
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise
        break
    else:
        raise NoMediaPort(f"no free UDP port in {config.port_min}-{config.port_max}")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER_SIZE)
    bound_port = transport.get_extra_info("sockname")[1]
    candidate = Candidate(
        foundation=candidate_foundation("host", "udp", announced),
        component=1,
        transport="udp",
        priority=candidate_priority(1, "host"),
        host=announced,
        port=bound_port,
        type="host",
    )
    protocol.local_candidate = candidate
    # What Connection.gather_candidates would have recorded; it then sees gathering done.
    connection._protocols.append(protocol)
    connection._local_candidates.append(candidate)
    connection._local_candidates_start = True
    connection._local_candidates_end = True
    return candidate
