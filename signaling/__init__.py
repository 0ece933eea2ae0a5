"""The Socket.IO server of the meeting rooms (namespace ``/meeting``)."""
