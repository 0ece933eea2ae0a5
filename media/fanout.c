/* The forwarding path's inner loop: one publisher's packet to every slot that carries it.
 *
 * For each slot: its payload type, sequence number and timestamp for the packet (joining the
 * source where its numbering stands), its header with the header extensions its receiver
 * negotiated, the unchanged payload; then, on a connected wire, libsrtp's srtp_protect (the
 * function pylibsrtp's build exports, handed over from Python with the session's handle)
 * and sendto on the wire's socket. The same work was Python code per copy: here it is one
 * call per packet. The decisions that are rare (keyframes, bindings, RTCP) stay in Python
 * (media/forwarding.py), which also reads and sets these structures' fields.
 *
 * Built by cffi (media/fanout_build.py) when the project is installed.
 */

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#define FANOUT_BUFFER 1500    /* bytes of a packet, SRTP trailer included (as pylibsrtp) */
#define FANOUT_TRAILER 144    /* SRTP_MAX_TRAILER_LEN */
#define FANOUT_TEMPLATE 48    /* bytes of a header extension block, at most */
#define FANOUT_JOIN_WINDOW 1024

#define WIRE_OFF 0      /* not connected: copies are counted, not sent */
#define WIRE_DIRECT 1   /* protected and sent here */
#define WIRE_PYTHON 2   /* left in the slot for Python to send (a relayed pair) */

typedef int (*fanout_protect_fn)(void *session, void *packet, int *length);

struct fanout_wire {
    int mode;
    int fd;                       /* a duplicate of the pair's socket, owned by the wire */
    void *session;                /* the transport's sending srtp_t */
    fanout_protect_fn protect;
    struct sockaddr_storage address;
    socklen_t address_length;
    uint64_t sent;
    uint64_t dropped;             /* refused by libsrtp or by the socket */
};

struct fanout_slot {
    struct fanout_wire *wire;     /* NULL: every copy is left for Python to send */
    int started;
    int waiting;                  /* video waits for a keyframe: skipped here */
    int synced;
    int joining;
    int has_last_ms;
    uint16_t start;               /* the source's first sequence number since the sync */
    uint16_t seq_offset;
    uint16_t last_seq;            /* the newest sequence number sent */
    uint16_t epoch_start;         /* the first sequence number sent since the sync */
    uint32_t ts_offset;
    uint32_t last_ts;
    uint32_t clock;
    int64_t last_ms;
    uint64_t packets;
    uint64_t octets;
    int16_t out_pt[128];          /* the source's payload type -> the slot's, -1: none */
    uint32_t ssrc;
    uint8_t head[FANOUT_TEMPLATE];  /* extension block before the varying bytes */
    int head_length;
    uint8_t tail[FANOUT_TEMPLATE];  /* and after them */
    int tail_length;
    uint8_t plain[FANOUT_TEMPLATE]; /* the block when there are no varying bytes */
    int plain_length;
    int width;                    /* varying bytes the template takes: 3, 1 or 0 */
    int pending;                  /* bytes of a plain packet waiting for Python */
    uint8_t buffer[FANOUT_BUFFER];
};

static int newer(uint16_t a, uint16_t b)
{
    return a != b && (uint16_t)(a - b) < 0x8000;
}

static int address(struct fanout_wire *wire, int family, const char *host, int port,
                   uint32_t flowinfo, uint32_t scope)
{
    memset(&wire->address, 0, sizeof(wire->address));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&wire->address;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
            return -1;
        wire->address_length = sizeof(*in);
        return 0;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&wire->address;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        in6->sin6_flowinfo = htonl(flowinfo);
        in6->sin6_scope_id = scope;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            return -1;
        wire->address_length = sizeof(*in6);
        return 0;
    }
    return -1;
}

/* Point ``wire`` at a socket and an address, with the session that protects what it sends.
 * -1: the address cannot be read (the wire is left off). */
static int fanout_connect(struct fanout_wire *wire, int fd, uintptr_t session,
                          uintptr_t protect, int family, const char *host, int port,
                          uint32_t flowinfo, uint32_t scope)
{
    wire->mode = WIRE_OFF;
    if (address(wire, family, host, port, flowinfo, scope) != 0)
        return -1;
    wire->fd = fd;
    wire->session = (void *)session;
    wire->protect = (fanout_protect_fn)protect;
    wire->mode = WIRE_DIRECT;
    return 0;
}

static void sync_to(struct fanout_slot *slot, uint16_t seq, uint32_t ts, int64_t arrival_ms)
{
    int64_t elapsed = 0;
    int64_t advance;
    if (slot->has_last_ms && arrival_ms > slot->last_ms)
        elapsed = arrival_ms - slot->last_ms;
    advance = elapsed * (int64_t)slot->clock / 1000;
    if (advance < 1)
        advance = 1;
    slot->seq_offset = (uint16_t)(slot->last_seq + 1 - seq);
    slot->ts_offset = (uint32_t)(slot->last_ts + (uint32_t)advance - ts);
    slot->start = seq;
    slot->epoch_start = (uint16_t)(slot->last_seq + 1);
    slot->joining = 1;
    slot->synced = 1;
    slot->waiting = 0;
}

/* One packet to ``count`` slots. Returns the slots left with a plain packet for Python to
 * send, plus 65536 times the slots skipped while they wait for a keyframe. */
static int fanout(struct fanout_slot **slots, int count, const uint8_t *payload,
                  int payload_length, int marker, int payload_type, int seq, uint32_t ts,
                  int padding, const uint8_t *varying, int varying_length, int64_t arrival_ms)
{
    int pending = 0, waiting = 0;
    int i;
    uint8_t stack[FANOUT_BUFFER];
    if (payload_length < 0 || padding < 0 || padding > 255 || payload_type < 0 || payload_type > 127)
        return 0;
    for (i = 0; i < count; i++) {
        struct fanout_slot *slot = slots[i];
        struct fanout_wire *wire = slot->wire;
        uint8_t *out;
        const uint8_t *extensions;
        int extensions_length, length, pt;
        uint16_t out_seq;
        uint32_t out_ts;
        if (!slot->started)
            continue;
        pt = slot->out_pt[payload_type];
        if (pt < 0)
            continue;
        if (slot->waiting) {
            waiting++;
            continue;
        }
        if (varying_length > 0 && varying_length == slot->width) {
            extensions = NULL;
            extensions_length = slot->head_length + varying_length + slot->tail_length;
        } else {
            extensions = slot->plain;
            extensions_length = slot->plain_length;
        }
        length = 12 + extensions_length + payload_length + padding;
        if (length > FANOUT_BUFFER - FANOUT_TRAILER)
            continue; /* more than one SRTP packet holds: before any state changes */
        if (!slot->synced) {
            sync_to(slot, (uint16_t)seq, ts, arrival_ms);
        } else if (slot->joining) {
            if ((uint16_t)seq != slot->start && !newer((uint16_t)seq, slot->start))
                continue; /* from before the slot joined: its subscriber never had it */
            if ((uint16_t)((uint16_t)seq - slot->start) >= FANOUT_JOIN_WINDOW)
                slot->joining = 0;
        }
        out_seq = (uint16_t)(seq + slot->seq_offset);
        out_ts = ts + slot->ts_offset;
        out = (wire != NULL && wire->mode == WIRE_DIRECT) ? stack : slot->buffer;
        out[0] = (uint8_t)((extensions_length ? 0x90 : 0x80) | (padding ? 0x20 : 0));
        out[1] = (uint8_t)((marker ? 0x80 : 0) | pt);
        out[2] = (uint8_t)(out_seq >> 8);
        out[3] = (uint8_t)out_seq;
        out[4] = (uint8_t)(out_ts >> 24);
        out[5] = (uint8_t)(out_ts >> 16);
        out[6] = (uint8_t)(out_ts >> 8);
        out[7] = (uint8_t)out_ts;
        out[8] = (uint8_t)(slot->ssrc >> 24);
        out[9] = (uint8_t)(slot->ssrc >> 16);
        out[10] = (uint8_t)(slot->ssrc >> 8);
        out[11] = (uint8_t)slot->ssrc;
        if (extensions != NULL) {
            memcpy(out + 12, extensions, (size_t)extensions_length);
        } else {
            memcpy(out + 12, slot->head, (size_t)slot->head_length);
            memcpy(out + 12 + slot->head_length, varying, (size_t)varying_length);
            memcpy(out + 12 + slot->head_length + varying_length, slot->tail,
                   (size_t)slot->tail_length);
        }
        memcpy(out + 12 + extensions_length, payload, (size_t)payload_length);
        if (padding) {
            memset(out + length - padding, 0, (size_t)padding - 1);
            out[length - 1] = (uint8_t)padding;
        }
        if (newer(out_seq, slot->last_seq)) {
            slot->last_seq = out_seq;
            slot->last_ts = out_ts;
            slot->last_ms = arrival_ms;
            slot->has_last_ms = 1;
        }
        slot->packets++;
        slot->octets += (uint64_t)payload_length;
        if (wire == NULL || wire->mode == WIRE_PYTHON) {
            slot->pending = length;
            pending++;
        } else if (wire->mode == WIRE_DIRECT) {
            int protected_length = length;
            if (wire->protect(wire->session, out, &protected_length) != 0
                || sendto(wire->fd, out, (size_t)protected_length, MSG_DONTWAIT,
                          (struct sockaddr *)&wire->address, wire->address_length) < 0)
                wire->dropped++;
            else
                wire->sent++;
        }
    }
    return pending + 65536 * waiting;
}
