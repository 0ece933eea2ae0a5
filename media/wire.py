"""The short way between the socket and the forwarder, for RTP only.

aiortc moves every datagram through an asyncio queue into the DTLS transport's receive task,
and every sent packet through three layers of coroutines down to the socket. For a server
that only forwards, that is most of the cost of a packet. So, once a peer connection's DTLS
handshake is done, its SRTP media packets are taken at the ICE connection's datagram
callback: decrypted with the transport's SRTP session, parsed, and handed to the forwarder
in the same call, which encrypts each copy with the subscriber's session and writes it to
the subscriber's socket — no queue, no task switch, no thread (the copies in C,
``media/fanout.c``, on what ``Wire.c`` holds). Everything else (DTLS, STUN, SRTCP) still
takes aiortc's way, so aiortc keeps the control of the connection.

This reaches into the transports' internals (the SRTP sessions, the nominated ICE pair), only
for the server's own connections; the pinned aiortc version and the tests hold it in place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]

from media._fanout import ffi as fanout_ffi
from media._fanout import lib as fanout_lib

logger = logging.getLogger(__name__)


def now_ms() -> int:
    """The forwarder's one clock for arrival times (any monotonic milliseconds will do)."""
    return int(time.monotonic() * 1000)


class Protect:
    """libsrtp's ``srtp_protect`` on one session: the very call ``pylibsrtp.Session.protect``
    makes, into a buffer of its own that is reused, without that method's per-packet checks
    and allocations (a fifth of the forwarder's own cost of a copy). Reaches into the
    session's C handle; the pinned pylibsrtp version and the tests hold it in place."""

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # keeps the C session alive
        self._handle = session._srtp[0]
        self._cdata = ffi.new("char[]", BUFFER)
        self._buffer = ffi.buffer(self._cdata)
        self._length = ffi.new("int *")
        self._protect = lib.srtp_protect

    def __call__(self, data: bytes) -> bytes:
        size = len(data)
        if size > BUFFER - pylibsrtp.SRTP_MAX_TRAILER_LEN:
            raise ValueError("packet is too long")
        self._buffer[0:size] = data
        self._length[0] = size
        status = self._protect(self._handle, self._cdata, self._length)
        if status:
            raise pylibsrtp.Error(f"srtp_protect failed: {status}")
        result: bytes = self._buffer[0 : self._length[0]]
        return result


BUFFER = 1500  # bytes, as pylibsrtp's own


class Wire:
    """Sends SRTP and SRTCP on one connected DTLS transport, synchronously.

    It also keeps ``c``, the transport's side of the forwarding path's C part
    (``media.fanout``): on a direct pair, a duplicate of the pair's socket, its address and
    the transport's sending SRTP session, so forwarded copies are protected and sent there
    without coming back to Python. ``c`` follows the transport: it is set when the DTLS
    transport connects or the nominated pair changes, and turned off (its socket closed)
    when the transport stops being connected or the wire is closed.
    """

    def __init__(self, transport: RTCDtlsTransport) -> None:
        self._dtls = transport
        self._pending: set[asyncio.Future[None]] = set()
        self._protect: Protect | None = None
        self._sent = 0
        # The nominated pair's socket and address, looked up again only when the pair
        # changes (it is chosen once per connection).
        self._pair: CandidatePair | None = None
        self._sendto: Callable[[bytes, tuple[str, int]], None] | None = None
        self._address: tuple[str, int] = ("", 0)
        self.c: Any = fanout_ffi.new("struct fanout_wire *")
        self.c.fd = -1
        self._c_pair: CandidatePair | None = None
        self._c_session: pylibsrtp.Session | None = None  # keeps the handle in ``c`` alive
        self._c_fd: weakref.finalize[Any, Wire] | None = None
        self._closed = False
        transport.on("statechange", self.refresh)
        _watch_nominated(transport.transport._connection, self.refresh)
        self.refresh()

    @property
    def sent(self) -> int:
        """Packets sent, by Python and by the C part."""
        return self._sent + int(self.c.sent)

    @property
    def dropped(self) -> int:
        """Forwarded copies libsrtp or the socket refused (a full socket buffer)."""
        return int(self.c.dropped)

    def refresh(self) -> None:
        """Point ``c`` at the transport as it is now."""
        dtls = self._dtls
        pair = None
        if not self._closed and dtls._state is State.CONNECTED:
            pair = dtls.transport._connection._nominated.get(1)
        if pair is self._c_pair and (pair is not None or self.c.mode == fanout_lib.WIRE_OFF):
            return
        self._turn_off()
        self._c_pair = pair
        if pair is None:
            return
        protocol = pair.protocol
        sock = None
        if type(protocol) is StunProtocol and protocol.transport is not None:
            sock = protocol.transport.get_extra_info("socket")
        if sock is None:  # a relayed pair: its coroutine (``send``), from Python
            self.c.mode = fanout_lib.WIRE_PYTHON
            return
        try:
            self._connect(pair, sock)
        except OSError:  # no descriptor left, an address it cannot read: Python sends
            logger.warning("media_wire_python", exc_info=True)
            self._turn_off()
            self._c_pair = pair
            self.c.mode = fanout_lib.WIRE_PYTHON

    def _connect(self, pair: CandidatePair, sock: Any) -> None:
        host, port = pair.remote_addr[0], pair.remote_addr[1]
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
        )[0]
        flowinfo, scope = (address[2], address[3]) if len(address) == 4 else (0, 0)
        session = self._dtls._tx_srtp
        fd = os.dup(sock.fileno())
        # The duplicate is the wire's own: closed when the wire turns off or is collected,
        # and never a number some other socket could have taken meanwhile.
        self._c_fd = weakref.finalize(self, os.close, fd)
        self._c_session = session
        handle = int(ffi.cast("uintptr_t", session._srtp[0]))
        host_bytes = str(address[0]).split("%")[0].encode()
        if fanout_lib.fanout_connect(
            self.c, fd, handle, PROTECT, family, host_bytes, port, flowinfo, scope
        ):
            raise OSError("the pair's address cannot be read")

    def close(self) -> None:
        """Stop sending from the C part and close its socket (the connection is closing)."""
        self._closed = True
        self._turn_off()

    def _turn_off(self) -> None:
        self.c.mode = fanout_lib.WIRE_OFF
        self.c.fd = -1
        self._c_pair = None
        self._c_session = None
        if self._c_fd is not None:
            self._c_fd()
            self._c_fd = None

    def send(self, data: bytes) -> None:
        """Protect and send an RTP or RTCP packet; silently nothing when not connected."""
        dtls = self._dtls
        if dtls._state is not State.CONNECTED:
            return
        try:
            if 191 < data[1] < 209:  # RTCP packet types, as aiortc tells them (RFC 5761)
                protected = dtls._tx_srtp.protect_rtcp(data)
            else:
                protect = self._protect
                if protect is None:  # the session exists once the handshake is done
                    protect = self._protect = Protect(dtls._tx_srtp)
                protected = protect(data)
        except (pylibsrtp.Error, ValueError, IndexError):
            return
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            return
        if pair is not self._pair:
            self._choose(pair)
        self._sent += 1
        if self._sendto is not None:
            self._sendto(protected, self._address)
        else:  # a relayed pair (the server has none of its own): its coroutine, then
            task = asyncio.ensure_future(pair.protocol.send_data(protected, pair.remote_addr))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _choose(self, pair: CandidatePair) -> None:
        self._pair = pair
        protocol = pair.protocol
        self._address = pair.remote_addr
        # What StunProtocol.send_data does, without its coroutine.
        self._sendto = protocol.transport.sendto if type(protocol) is StunProtocol else None


# libsrtp's srtp_protect as pylibsrtp's build exports it, for the C part to call.
PROTECT = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))


class _Nominated(dict[int, CandidatePair]):
    """aioice's nominated pairs of a connection, telling the wires when they change."""

    def __init__(self, pairs: dict[int, CandidatePair]) -> None:
        super().__init__(pairs)
        self.listeners: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def __setitem__(self, key: int, value: CandidatePair) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: int) -> None:
        super().__delitem__(key)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def pop(self, key: int, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._changed()
        return value


def _watch_nominated(connection: Connection, listener: Callable[[], None]) -> None:
    pairs = connection._nominated
    if type(pairs) is not _Nominated:
        pairs = _Nominated(pairs)
        connection._nominated = pairs
    pairs.listeners.append(listener)


def take_rtp(transport: RTCDtlsTransport, deliver: Callable[[bytes, int], None]) -> None:
    """From now on, hand ``transport``'s incoming SRTP media packets, decrypted, to
    ``deliver`` with their arrival time as soon as their datagram arrives. Call once the DTLS
    handshake is done.

    The hook sits on the connection's sockets (aioice's ``StunProtocol``), before aioice
    tries to read each datagram as STUN: a datagram whose first byte is 128-191 is RTP or
    RTCP (RFC 7983), never STUN, and RTP goes straight to ``deliver``. Everything else
    (STUN, DTLS, SRTCP) takes the usual way, so aiortc keeps the control of the connection.
    """
    connection: Connection = transport.transport._connection
    if "data_received" in vars(connection):
        return
    original = connection.data_received
    unprotect = transport._rx_srtp.unprotect
    connected = State.CONNECTED

    def data_received(data: bytes, component: int) -> None:
        # SRTP, not SRTCP (RTCP packet types 192-208 in the second byte, as aiortc tells
        # them apart); anything else goes aiortc's way.
        if (
            len(data) > 12
            and 127 < data[0] < 192
            and not 191 < data[1] < 209
            and transport._state is connected
        ):
            try:
                plain = unprotect(data)
            except (pylibsrtp.Error, ValueError):
                return  # forged, replayed or malformed: dropped, as aiortc would
            deliver(plain, now_ms())
            return
        original(data, component)

    # Instance attributes shadow the methods for this one connection and its sockets only.
    vars(connection)["data_received"] = data_received
    for protocol in connection._protocols:
        if type(protocol) is StunProtocol:
            _shortcut(protocol, data_received)


def _shortcut(protocol: StunProtocol, data_received: Callable[[bytes, int], None]) -> None:
    original = protocol.datagram_received
    component = protocol.local_candidate.component if protocol.local_candidate else 1

    def datagram_received(data: bytes | str, addr: tuple[Any, ...]) -> None:
        if type(data) is bytes and len(data) > 12 and 127 < data[0] < 192:
            data_received(data, component)
        else:
            original(data, addr)

    vars(protocol)["datagram_received"] = datagram_received


def release_media(transport: RTCDtlsTransport) -> None:
    """Undo ``take_rtp`` (the connection is closing: nothing more to deliver)."""
    connection = transport.transport._connection
    vars(connection).pop("data_received", None)
    for protocol in connection._protocols:
        vars(protocol).pop("datagram_received", None)
