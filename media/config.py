"""How the media server is set up, and the ICE servers a browser is given.

The server's own peer connections use no STUN or TURN server: they announce host candidates
on the configured address (the public one behind a 1:1 NAT) and UDP port range. Browsers
may need STUN (to learn their own public address) and TURN (when UDP to the server is
blocked); ``ice_servers`` gives each participant the list, with time-limited TURN credentials
when a shared secret is configured (the "TURN REST API" scheme of coturn's
``use-auth-secret``: the user name is ``expiry:participant``, the password the base64
HMAC-SHA1 of it under the secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from aiortc.rtcicetransport import parse_stun_turn_uri

from core.settings import Settings

TURN_CREDENTIAL_SECONDS = 6 * 3600  # covers a meeting slot, its grace and a reconnection


@dataclass(frozen=True)
class MediaConfig:
    """The media settings (``CONCILIA_MEDIA_*``), checked once."""

    bind_address: str | None = None
    public_address: str | None = None
    port_min: int | None = None
    port_max: int | None = None
    ice_server_urls: tuple[str, ...] = ()
    turn_secret: str | None = None
    turn_username: str | None = None
    turn_password: str | None = None
    video_codecs: tuple[str, ...] = ("VP8", "H264")
    connect_seconds: float = 30.0
    max_slots: int = 8  # receiving m-lines of each kind one offer may open

    def __post_init__(self) -> None:
        for url in self.ice_server_urls:
            parse_stun_turn_uri(url)  # ValueError names the malformed URL

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaConfig:
        secret = settings.media_turn_secret
        password = settings.media_turn_password
        return cls(
            bind_address=settings.media_bind_address,
            public_address=settings.media_public_address,
            port_min=settings.media_port_min,
            port_max=settings.media_port_max,
            ice_server_urls=tuple(settings.media_ice_server_urls),
            turn_secret=secret.get_secret_value() if secret is not None else None,
            turn_username=settings.media_turn_username,
            turn_password=password.get_secret_value() if password is not None else None,
            video_codecs=tuple(settings.media_video_codec_names),
            connect_seconds=float(settings.media_connect_seconds),
        )

    @property
    def own_candidates(self) -> bool:
        """Whether the server binds and announces its host candidate itself (an address, a
        public address or a port range is set), rather than on every interface."""
        return (
            self.bind_address is not None
            or self.public_address is not None
            or self.port_min is not None
        )

    def ice_servers(self, participant: str, now: float) -> list[dict[str, Any]]:
        """The ``iceServers`` for one participant's ``RTCPeerConnection`` (browser format).

        ``now`` is the Unix time; TURN credentials from the secret expire
        ``TURN_CREDENTIAL_SECONDS`` later.
        """
        stun = [u for u in self.ice_server_urls if u.startswith(("stun:", "stuns:"))]
        turn = [u for u in self.ice_server_urls if u.startswith(("turn:", "turns:"))]
        servers: list[dict[str, Any]] = []
        if stun:
            servers.append({"urls": stun})
        if turn:
            if self.turn_secret is not None:
                username = f"{int(now) + TURN_CREDENTIAL_SECONDS}:{participant}"
                digest = hmac.new(
                    self.turn_secret.encode(), username.encode(), hashlib.sha1
                ).digest()
                credential = base64.b64encode(digest).decode()
                servers.append({"urls": turn, "username": username, "credential": credential})
            elif self.turn_username is not None:
                servers.append(
                    {
                        "urls": turn,
                        "username": self.turn_username,
                        "credential": self.turn_password or "",
                    }
                )
            else:
                servers.append({"urls": turn})
        return servers
