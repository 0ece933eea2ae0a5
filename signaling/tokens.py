"""Room tokens: short-lived, signed proofs that the meeting page let this account in.

A connection to ``/meeting`` must carry both the portal's session cookie and a room token for
the same account; the token names the meeting, so no event ever needs to. A token is
``<meeting>.<account>.<expiry>.<signature>`` with an HMAC-SHA256 signature under the service's
secret; it lives two minutes (the page fetches a fresh one before each reconnection).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.errors import ErrorCode, UserError
from core.ids import keyed_hash, same

TOKEN_TTL = timedelta(minutes=2)
TOKEN_MAX = 200  # characters; anything longer is not one of ours


@dataclass(frozen=True)
class RoomPass:
    meeting_id: uuid.UUID
    account_id: uuid.UUID
    expires_at: datetime


class RoomTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, meeting: str, account: str, expiry: str) -> str:
        return keyed_hash(self._secret, "room-token", meeting, account, expiry)

    def issue(self, meeting_id: uuid.UUID, account_id: uuid.UUID, now: datetime) -> str:
        expiry = str(int((now + TOKEN_TTL).timestamp()))
        meeting, account = str(meeting_id), str(account_id)
        return f"{meeting}.{account}.{expiry}.{self._sign(meeting, account, expiry)}"

    def check(self, token: object, now: datetime) -> RoomPass:
        """The pass in ``token``; a forged, malformed or expired one is refused alike."""
        if not isinstance(token, str) or len(token) > TOKEN_MAX:
            raise UserError(ErrorCode.TOKEN_INVALID)
        parts = token.split(".")
        if len(parts) != 4:
            raise UserError(ErrorCode.TOKEN_INVALID)
        meeting, account, expiry, signature = parts
        if not same(signature, self._sign(meeting, account, expiry)):
            raise UserError(ErrorCode.TOKEN_INVALID)
        try:
            expires_at = datetime.fromtimestamp(int(expiry), tz=now.tzinfo)
            found = RoomPass(uuid.UUID(meeting), uuid.UUID(account), expires_at)
        except (ValueError, OverflowError):
            raise UserError(ErrorCode.TOKEN_INVALID) from None
        if expires_at <= now:
            raise UserError(ErrorCode.TOKEN_INVALID)
        return found
