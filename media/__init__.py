"""Video meetings: the server's peer connections and the forwarding of encoded media.

Each participant opens one peer connection to the server; the server hands every RTP packet
of a publisher straight on to the other participants it may reach — never decoding or
re-encoding — rewriting only what each subscriber needs (SSRC, sequence number, timestamp,
payload type, header extensions). Who may reach whom is a pure function of the room's state
(``media.routing``). No Socket.IO or HTTP here: the signaling layer calls ``MediaRoom``.
"""
