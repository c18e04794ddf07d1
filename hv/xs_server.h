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

/**
 * Limits, as xenstored's command-line quotas. Zero fields take the defaults below. The quotas
 * bind guests only (dom0 is unlimited, as in xenstored); exceeding one answers ENOSPC, which is
 * what xenstored sends (xs_wire.h has no EQUOTA).
 */
struct xs_limits {
	uint32_t max_value_bytes;     /**< value size (default 2048, xenstored's node-size) */
	uint32_t max_nodes_per_dom;   /**< nodes a guest may own (default 1000, quota-nent) */
	uint32_t max_watches_per_dom; /**< watches per guest (default 128, quota-nwatch) */
	uint32_t max_trans_per_dom;   /**< open transactions per guest, all connections (10) */
	uint32_t max_conns_per_dom;   /**< connections per guest (64); more are closed at once */
	uint32_t max_conn_out_bytes;  /**< output queued per connection (1 MiB); a client that
				       *   lets more pile up (never reads) is disconnected */
};

/** Hooks into the rest of hvsimd. */
struct xs_server_hooks {
	/**
	 * Does domain @domid exist in the hypervisor? Used by XS_INTRODUCE and
	 * xs_server_introduce, which refuse (EINVAL) a domain that does not. 1 yes, 0 no.
	 * NULL: every domid exists.
	 */
	int (*domain_exists)(void *arg, domid_t domid);
	void *arg;
};

/**
 * Create a server attached to @loop. @lim and @hooks may be NULL (defaults). The store starts
 * as xenstored's: "/", "/tool/xenstored", "@introduceDomain", "@releaseDomain", all dom0's.
 * Everything runs inside @loop's thread: no function here may be called from another thread
 * while the loop runs. Returns 0 or -ENOMEM.
 */
int xs_server_new(struct xs_server **out, struct hv_loop *loop, const struct xs_limits *lim,
		  const struct xs_server_hooks *hooks);

/** Close every listener and connection, remove the listeners' socket files, free everything. */
void xs_server_free(struct xs_server *xs);

/**
 * Listen on a new unix socket at @path (an existing stale file is replaced); every connection
 * accepted on it acts as @domid. The socket gets the process umask's mode: the caller protects
 * it (the dom0 socket is privileged). Returns 0, -ENAMETOOLONG or -errno from socket/bind.
 */
int xs_server_listen(struct xs_server *xs, const char *path, domid_t domid);

/**
 * A domain came to life: mark it introduced and fire @introduceDomain. hvsimd calls this after
 * creating the domain's /local/domain/<domid> nodes and its listener. Introducing an introduced
 * domain is a no-op. Returns 0, -EINVAL (domid 0, reserved, or the domain_exists hook says no).
 */
int xs_server_introduce(struct xs_server *xs, domid_t domid);

/**
 * A domain is gone: close its listeners and connections (removing the socket files), drop its
 * watches and transactions, remove /local/domain/<domid>, hand the nodes it still owns elsewhere
 * to dom0 and drop its permission entries (a later domain reusing the id inherits nothing),
 * mark it not introduced, and fire @releaseDomain. Returns 0 or -EINVAL (domid 0 or reserved).
 */
int xs_server_release(struct xs_server *xs, domid_t domid);

/*
 * Direct access for hvsimd itself, acting as dom0 outside any transaction. Paths are absolute
 * (a relative one resolves under /local/domain/0). Write creates missing parents, which inherit
 * their parent's perms (so set a domain's home perms before writing below it). Watches fire as
 * for a client's write. Return 0 or -errno: -EINVAL (bad path or perms, rm of "/"), -ENOENT
 * (rm: parent missing too; read/set_perms: no node), -E2BIG (value over XENSTORE_PAYLOAD_MAX),
 * -ENOMEM.
 */
int xs_server_write(struct xs_server *xs, const char *path, const void *val, size_t len);
int xs_server_rm(struct xs_server *xs, const char *path);
/**
 * @perms is the XS_SET_PERMS form: NUL-terminated strings of @len bytes in all, e.g.
 * "n5\0r0\0" = owner domain 5 (full access), nobody else, dom0 read (dom0 bypasses anyway).
 * The special nodes "@introduceDomain" and "@releaseDomain" are accepted too.
 */
int xs_server_set_perms(struct xs_server *xs, const char *path, const char *perms, size_t len);
/**
 * Read a node's value into a malloc'd NUL-terminated buffer the caller frees (*val; *len, if
 * @len is not NULL, without the NUL).
 */
int xs_server_read(struct xs_server *xs, const char *path, char **val, size_t *len);

#endif
