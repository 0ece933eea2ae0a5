"""Builds ``media._fanout`` (cffi, API mode) from ``media/fanout.c`` when the project is
installed (``setup.py`` names it in ``cffi_modules``)."""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define FANOUT_BUFFER ...
    #define FANOUT_TRAILER ...
    #define FANOUT_JOIN_WINDOW ...
    #define WIRE_OFF ...
    #define WIRE_DIRECT ...
    #define WIRE_PYTHON ...

    struct fanout_wire {
        int mode;
        int fd;
        uint64_t sent;
        uint64_t dropped;
        ...;
    };

    struct fanout_slot {
        struct fanout_wire *wire;
        int started;
        int waiting;
        int synced;
        int joining;
        int has_last_ms;
        uint16_t start;
        uint16_t seq_offset;
        uint16_t last_seq;
        uint16_t epoch_start;
        uint32_t ts_offset;
        uint32_t last_ts;
        uint32_t clock;
        int64_t last_ms;
        uint64_t packets;
        uint64_t octets;
        int16_t out_pt[128];
        uint32_t ssrc;
        uint8_t head[...];
        int head_length;
        uint8_t tail[...];
        int tail_length;
        uint8_t plain[...];
        int plain_length;
        int width;
        int pending;
        uint8_t buffer[...];
    };

    int fanout_connect(struct fanout_wire *wire, int fd, uintptr_t session,
                       uintptr_t protect, int family, const char *host, int port,
                       uint32_t flowinfo, uint32_t scope);
    int fanout(struct fanout_slot **slots, int count, const uint8_t *payload,
               int payload_length, int marker, int payload_type, int seq, uint32_t ts,
               int padding, const uint8_t *varying, int varying_length, int64_t arrival_ms);
    """
)
ffibuilder.set_source(
    "media._fanout",
    (Path(__file__).parent / "fanout.c").read_text(),
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
