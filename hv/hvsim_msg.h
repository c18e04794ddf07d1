/*
 * hvsim_msg.h - framing of the hv control protocol (hvsim_proto.h) for both ends: send and
 * receive one SEQPACKET message with its fds, and the client's request/reply call.
 */
#ifndef SLUICE_HV_HVSIM_MSG_H
#define SLUICE_HV_HVSIM_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "hv/hvsim_proto.h"

/** One message as it travels. */
struct hvsim_msg {
	struct hvsim_hdr hdr;
	uint8_t payload[HVSIM_MSG_MAX - sizeof(struct hvsim_hdr)];
};

/**
 * Send one message carrying @nfds fds (at most HVSIM_MAX_FDS; the caller keeps them open).
 * @flags adds to MSG_NOSIGNAL (e.g. MSG_DONTWAIT). Returns 0, -EAGAIN (would block), -EPIPE
 * (peer gone), -EMSGSIZE or -errno.
 */
int hvsim_msg_send(int sock, uint32_t type, uint32_t seq, int32_t status, const void *payload,
		   uint32_t len, const int *fds, unsigned nfds, int flags);

/**
 * Receive one message into @m. On success *len is the bytes received (header included, not
 * yet validated) and fds[0..*nfds) the fds that came with it (the caller owns them; at most
 * HVSIM_MAX_FDS, the kernel drops any beyond). Returns 0, -EPIPE at end of stream (or an
 * empty message), -EAGAIN (MSG_DONTWAIT and nothing queued), -EMSGSIZE (message longer than
 * HVSIM_MSG_MAX: consumed, its fds closed) or -errno.
 */
int hvsim_msg_recv(int sock, struct hvsim_msg *m, size_t *len, int *fds, unsigned *nfds, int flags);

/** Close fds[0..n). */
void hvsim_close_fds(int *fds, unsigned n);

/** A client's connection to one of hvsimd's hv sockets. */
struct hvsim_chan {
	int fd;
	uint32_t seq; /**< last request sequence number */
	/** Called for each notice (seq 0) that arrives; may be NULL. */
	void (*notice)(void *arg, const struct hvsim_msg *m, size_t len);
	void *arg;
};

/**
 * Connect @c to the socket at @path (blocking, close-on-exec). @c->notice and @c->arg are kept.
 * Returns 0, -ENAMETOOLONG, -ENOENT or -ECONNREFUSED (no hvsimd there), or -errno.
 */
int hvsim_chan_connect(struct hvsim_chan *c, const char *path);

void hvsim_chan_close(struct hvsim_chan *c);

/**
 * Send a request and wait for its reply, passing notices that arrive meanwhile to the notice
 * callback. The reply's payload goes to @rep (at most @rep_cap bytes; *rep_len gets its
 * length, may be NULL when @rep_cap is 0) and its fds to @rfds: on success exactly @want_fds
 * of them (the caller owns them), else none. Returns the reply's status (0 or -errno from
 * hvsimd), -EPIPE when hvsimd went away, or -EPROTO for a reply that does not fit the request.
 */
int hvsim_chan_call(struct hvsim_chan *c, uint32_t type, const void *req, uint32_t req_len,
		    const int *fds, unsigned nfds, void *rep, uint32_t rep_cap, uint32_t *rep_len,
		    int *rfds, unsigned want_fds);

/**
 * Process the notices queued on @c without blocking. Returns the number processed, or -EPIPE
 * when hvsimd went away, or -EPROTO when something other than a notice was queued.
 */
int hvsim_chan_drain(struct hvsim_chan *c);

#endif
