/*
 * xs_server.h - the xenstore daemon inside hvsimd: the real xenstore wire protocol
 * (<xen/io/xs_wire.h>) over unix sockets, one listening socket per domain, Xen's permission
 * model, watches, transactions and xenstored-like quotas.
 *
 * hvsimd creates one server, listens on DIR/xenstore.sock as dom0, and for each guest domain it
 * creates listens on DIR/domains/<domid>/xenstore.sock as that domain. Every connection on a
 * listener acts as the listener's domain. The server runs inside the caller's hv_loop; it never
 * blocks and never exits on bad input: a malformed frame gets an error reply or a closed
 * connection, and other connections carry on.
 */
#ifndef SLUICE_HV_XS_SERVER_H
#define SLUICE_HV_XS_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <xen/xen.h>

struct hv_loop;
struct xs_server;

/** Limits, as xenstored's command-line quotas. Zero fields take the defaults below. */
struct xs_limits {
	uint32_t max_value_bytes;   /**< value size per node (default 2048, xenstored's quota-maxsize) */
	uint32_t max_nodes_per_dom; /**< nodes a guest may own (default 1000, quota-nent) */
	uint32_t max_watches_per_dom; /**< watches per guest (default 128, quota-nwatch) */
	uint32_t max_trans_per_conn; /**< open transactions per connection (default 10, quota-ntrans) */
	uint32_t max_conns_per_dom; /**< connections per guest socket (default 64) */
};

/** Hooks into the rest of hvsimd. */
struct xs_server_hooks {
	/** Does domain @domid exist in the hypervisor? Used by XS_INTRODUCE. 1 yes, 0 no. */
	int (*domain_exists)(void *arg, domid_t domid);
	void *arg;
};

/** Create a server attached to @loop. @lim may be NULL (defaults). Returns 0 or -errno. */
int xs_server_new(struct xs_server **out, struct hv_loop *loop, const struct xs_limits *lim,
		  const struct xs_server_hooks *hooks);

/** Close every listener and connection, remove the listeners' socket files, free everything. */
void xs_server_free(struct xs_server *xs);

/**
 * Listen on a new unix socket at @path (an existing stale file is replaced); every connection
 * accepted on it acts as @domid. Returns 0 or -errno.
 */
int xs_server_listen(struct xs_server *xs, const char *path, domid_t domid);

/**
 * A domain came to life: mark it introduced and fire @introduceDomain. hvsimd calls this after
 * creating the domain's /local/domain/<domid> nodes and its listener.
 */
int xs_server_introduce(struct xs_server *xs, domid_t domid);

/**
 * A domain is gone: close its listener and connections (removing the socket file), drop its
 * watches and transactions, remove /local/domain/<domid>, and fire @releaseDomain.
 */
int xs_server_release(struct xs_server *xs, domid_t domid);

/*
 * Direct access for hvsimd itself, acting as dom0 outside any transaction. Watches fire as for
 * a client's write. Return 0 or -errno (-ENOENT, -EINVAL, -E2BIG, ...).
 */
int xs_server_write(struct xs_server *xs, const char *path, const void *val, size_t len);
int xs_server_rm(struct xs_server *xs, const char *path);
/** @perms is the XS_SET_PERMS form: "b1" "r0" ... as a NUL-separated list of @len bytes. */
int xs_server_set_perms(struct xs_server *xs, const char *path, const char *perms, size_t len);
/** Read a node's value into a malloc'd NUL-terminated buffer (*val, *len without the NUL). */
int xs_server_read(struct xs_server *xs, const char *path, char **val, size_t *len);

#endif
