/*
 * xs_internal.h - private to hv/xs_*.c, their unit tests and the fuzzer.
 *
 * Two layers:
 *  - the store (xs_store.c): the xenstore database as a pure data structure, no I/O. Nodes keyed
 *    by canonical path, Xen's permission model, generation counts, optimistic transactions in
 *    the style of C xenstored (every node a transaction touches is recorded with the generation
 *    it had; commit fails with -EAGAIN when any of them changed), per-domain node quotas. Changes
 *    are reported through an event callback, from which the server matches watches.
 *  - the server (xs_server.c): sockets, framing, dispatch of XS_* messages, watches, domains.
 *    It can also run a connection without a socket (in-memory), which the fuzzer uses.
 *
 * All functions return 0 or a negative errno.
 */
#ifndef SLUICE_HV_XS_INTERNAL_H
#define SLUICE_HV_XS_INTERNAL_H

/* errno.h first: xs_wire.h defines the xsd_errors table only when EINVAL is known. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <xen/xen.h>
#include <xen/io/xs_wire.h>

#include "hv/xs_server.h"

/* Permission bits, as xenstored's XS_PERM_*; OWNER is computed, never stored in a node. */
#define XS_P_NONE  0u
#define XS_P_READ  1u
#define XS_P_WRITE 2u
#define XS_P_OWNER 4u

/** Generation of a node that does not exist. */
#define XS_NO_GEN UINT64_MAX

/** Big enough for any canonical path (XENSTORE_ABS_PATH_MAX) plus its NUL. */
#define XS_PATH_BUF (XENSTORE_ABS_PATH_MAX + 1)

/** Max characters of one "b65535" permission string, with its NUL. */
#define XS_PERM_STR_MAX 8

/** One permission entry: the first of a node's list names the owner and everyone's default. */
struct xs_perm {
	domid_t id;    /**< domain the entry is about */
	uint8_t perms; /**< XS_P_READ | XS_P_WRITE */
};

/** Store limits; they apply to unprivileged domains only (dom0 is unlimited). 0 = no limit. */
struct xs_store_limits {
	uint32_t max_value_bytes;    /**< value size of one node */
	uint32_t max_nodes_per_dom;  /**< nodes one domain may own */
	uint32_t max_perms_per_node; /**< entries in a SET_PERMS list (xenstored: 5) */
	uint32_t max_txn_nodes;	     /**< nodes one transaction may touch (xenstored: 1024) */
	uint32_t max_txn_bytes;	     /**< bytes one transaction may copy or add (its overlay) */
};

/**
 * A change, reported once per modified node. For a change made inside a transaction the event
 * is reported when (and only if) the transaction commits.
 */
struct xs_event {
	const char *path;	     /**< canonical path (or "@introduceDomain"...) */
	int exact;		     /**< 1: only watches on exactly @path; 0: @path and parents */
	const struct xs_perm *perms; /**< the node's perms at the change, NULL if unknown */
	uint32_t nperms;
	const struct xs_perm
	    *old_perms; /**< perms before the change (SET_PERMS, commit), or NULL */
	uint32_t old_nperms;
};

typedef void (*xs_event_fn)(void *arg, const struct xs_event *ev);

struct xs_store;
struct xs_txn;

/**
 * A store holding "/", "/tool", "/tool/xenstored" and the special nodes "@introduceDomain" and
 * "@releaseDomain", all owned by dom0 with no access for others, as xenstored starts.
 * @fn (may be NULL) receives every change outside transactions and every committed one.
 */
int xs_store_new(struct xs_store **out, const struct xs_store_limits *lim, xs_event_fn fn,
		 void *arg);
void xs_store_free(struct xs_store *st);

/**
 * Turn a client's path into the canonical absolute one in @out (XS_PATH_BUF bytes): checks the
 * characters (alphanumerics and -/_@), resolves a relative path under /local/domain/<domid>,
 * refuses "//", a trailing "/", and lengths beyond XENSTORE_ABS_PATH_MAX or, for a guest,
 * XENSTORE_REL_PATH_MAX below its /local/domain/<id>/ (all -EINVAL, as xenstored). A path
 * starting with '@' is accepted only with @allow_special. *relative (may be NULL) tells whether
 * the input was relative.
 */
int xs_canonicalize(domid_t domid, const char *in, int allow_special, char *out, int *relative);

/** Access @domid has to a node with @perms: XS_P_* bits (dom0 and the owner get everything). */
unsigned int xs_perm_for(domid_t domid, const struct xs_perm *perms, uint32_t nperms);

/**
 * Parse @n NUL-terminated strings "r1" "b0" ... from @s into @out. Returns 0 or -EINVAL (bad
 * letter or domid; @out is then partly written).
 */
int xs_perms_parse(const char *s, uint32_t n, struct xs_perm *out);

/** Format one entry ("b12") into @buf (XS_PERM_STR_MAX bytes); returns its length. */
int xs_perm_format(const struct xs_perm *p, char *buf);

/*
 * Operations, acting as @domid, inside @t (NULL: directly on the database). @path must be
 * canonical (xs_canonicalize). Errors as xenstored: -ENOENT, -EACCES (no permission, also when
 * the caller may not even learn whether the node exists), -EPERM (guest changing an owner),
 * -EINVAL, -ENOSPC (quotas: value size, nodes per domain, perms per node, transaction size;
 * a transaction that hit one can no longer commit),
 * -ENOMEM. Pointers returned into the store stay valid until the next change to the store or @t.
 */
int xs_store_read(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		  const char **val, uint32_t *len);
/** Write a value, creating missing parents (which inherit their parent's perms). */
int xs_store_write(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		   const void *val, uint32_t len);
/** Create @path (and missing parents) with an empty value; an existing node is left alone. */
int xs_store_mkdir(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path);
/** Remove @path and everything below; a missing node whose parent exists is not an error. */
int xs_store_rm(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path);
/** The NUL-separated child names of @path, in creation order, and the node's generation. */
int xs_store_directory(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		       const char **children, uint32_t *len, uint64_t *gen);
int xs_store_get_perms(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		       const struct xs_perm **perms, uint32_t *n);
/** Replace the perms of @path (owner or dom0 only; a guest may not change the owner). */
int xs_store_set_perms(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		       const struct xs_perm *perms, uint32_t n);

/** Begin a transaction for @domid. */
int xs_store_txn_start(struct xs_store *st, domid_t domid, struct xs_txn **out);
/**
 * Commit (@commit != 0) or abort a transaction, and free it in every case. Commit fails with
 * -EAGAIN if any node the transaction read or wrote changed since, -ENOSPC if it hit a quota.
 */
int xs_store_txn_end(struct xs_txn *t, int commit);

/** Report an event on an existing node (the special watches); -ENOENT if there is none. */
int xs_store_fire(struct xs_store *st, const char *path);

/**
 * A domain is gone: nodes it owned become dom0's, its other permission entries are dropped
 * (so a later domain reusing the id inherits nothing).
 */
void xs_store_domain_gone(struct xs_store *st, domid_t domid);

/**
 * May @domid see @ev? As xenstored: read access by the old perms, the node's perms, or (for a
 * node being deleted or not readable) its parent's; special events need read on the special
 * node. dom0 sees everything.
 */
int xs_store_event_visible(struct xs_store *st, const struct xs_event *ev, domid_t domid);

/** Nodes currently owned by @domid (committed state). */
uint32_t xs_store_nodes_owned(const struct xs_store *st, domid_t domid);

/** Number of nodes in the committed database, special nodes included. */
uint32_t xs_store_nr_nodes(const struct xs_store *st);

/*
 * Server internals used by the fuzzer and tests: a connection without a socket. Bytes fed are
 * processed as that connection's input stream; its output accumulates until drained.
 */
struct xs_conn;

/** Create an in-memory connection acting as @domid. */
int xs_server_conn_mem(struct xs_server *xs, domid_t domid, struct xs_conn **out);
/**
 * Process @len input bytes. Returns 0, or -ECONNRESET once the server has closed the connection
 * (bad frame, output overflow); the connection is then freed and must not be used again.
 */
int xs_server_conn_feed(struct xs_conn *c, const void *buf, size_t len);
/** Take the queued output: calls @fn for each queued frame (header + payload), then drops it. */
void xs_server_conn_drain(struct xs_conn *c, void (*fn)(void *arg, const void *buf, size_t len),
			  void *arg);
/** Close an in-memory connection. */
void xs_server_conn_close(struct xs_conn *c);

#endif
