/*
 * xs_fuzz.c - libFuzzer target for the xenstore server's parser and dispatcher. The input is
 * one connection's byte stream, fed to a fresh in-memory server exactly as socket reads would
 * deliver it; a dom0 bystander connection watches everything, so watch delivery runs too.
 *
 * Input layout: byte 0 picks the connection's domain (bits 0-1: dom0, guest 1, guest 2) and
 * how the stream is cut into reads (bits 2-7: chunk size, 0 = all at once). The rest is the
 * stream. Besides the sanitizers, every frame the server sends is checked against the wire
 * rules (length within XENSTORE_PAYLOAD_MAX, a reply type a client can get).
 */
#include "common/log.h"
#include "hv/loop.h"
#include "hv/xs_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level("err");
	return 0;
}

/* The wire contract for what the server sends: a violation is a bug, so crash. */
static void check_frame(void *arg, const void *buf, size_t len)
{
	struct xsd_sockmsg h;

	(void)arg;
	if (len < sizeof(h))
		__builtin_trap();
	memcpy(&h, buf, sizeof(h));
	if (h.len != len - sizeof(h) || h.len > XENSTORE_PAYLOAD_MAX || h.type >= XS_TYPE_COUNT)
		__builtin_trap();
	if (h.type == XS_WATCH_EVENT && (h.req_id != 0 || h.tx_id != 0))
		__builtin_trap();
	/* Error replies and watch events carry NUL-terminated strings. */
	if ((h.type == XS_ERROR || h.type == XS_WATCH_EVENT) &&
	    (h.len == 0 || ((const char *)buf)[len - 1] != '\0'))
		__builtin_trap();
}

static void home(struct xs_server *xs, unsigned int id)
{
	char p[32], perm[16];

	snprintf(p, sizeof(p), "/local/domain/%u", id);
	snprintf(perm, sizeof(perm), "n%u", id);
	if (xs_server_write(xs, p, "", 0) || xs_server_set_perms(xs, p, perm, strlen(perm) + 1) ||
	    xs_server_introduce(xs, (domid_t)id))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const domid_t doms[4] = {0, 1, 2, 1};
	struct hv_loop *loop;
	struct xs_server *xs;
	struct xs_conn *c, *watcher;
	size_t chunk, off;
	int alive = 1;

	if (size < 1)
		return 0;
	if (hv_loop_new(&loop) || xs_server_new(&xs, loop, NULL, NULL))
		abort();
	home(xs, 1);
	home(xs, 2);
	if (xs_server_conn_mem(xs, 0, &watcher) || xs_server_conn_mem(xs, doms[data[0] & 3], &c))
		abort();
	{
		static const char w[] = "\x04\0\0\0"
					"\0\0\0\0"
					"\0\0\0\0"
					"\x04\0\0\0"
					"/\0w\0";
		static const char w2[] = "\x04\0\0\0"
					 "\0\0\0\0"
					 "\0\0\0\0"
					 "\x11\0\0\0"
					 "@releaseDomain\0r\0";

		if (xs_server_conn_feed(watcher, w, sizeof(w) - 1) ||
		    xs_server_conn_feed(watcher, w2, sizeof(w2) - 1))
			abort();
	}
	chunk = data[0] >> 2;
	data++;
	size--;
	if (!chunk)
		chunk = size ? size : 1;
	for (off = 0; off < size && alive; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;

		if (xs_server_conn_feed(c, data + off, n))
			alive = 0;
		else
			xs_server_conn_drain(c, check_frame, NULL);
		xs_server_conn_drain(watcher, check_frame, NULL);
	}
	if (alive)
		xs_server_conn_close(c);
	xs_server_conn_close(watcher);
	xs_server_free(xs);
	hv_loop_free(loop);
	return 0;
}
