/*
 * blkctl.h - what the blkctl command's files share: finding out whether blkbackd runs on a
 * pool, talking to it over its control socket (protocol in blkback/ctl.h), and Xen's virtual
 * disk names. Private to tools/blkctl*.c.
 */
#ifndef SLUICE_TOOLS_BLKCTL_H
#define SLUICE_TOOLS_BLKCTL_H

#include <json-c/json.h>
#include <stdint.h>

/** How long blkctl waits for one answer (a detach waits for the guest's Closed handshake). */
#define BLKCTL_REPLY_TIMEOUT_MS 60000
/** Largest answer accepted: stats of every vbd of a big host fit many times over. */
#define BLKCTL_REPLY_MAX (16u << 20)

/** A pool as blkctl sees it: either a connection to its daemon or the daemon's lock. */
struct blkctl_daemon {
	int fd;	     /**< connected control socket, or -1 when blkbackd is not running */
	int lock_fd; /**< POOL/blkbackd.lock held by us while blkbackd is not running, or -1 */
	char *in;    /**< bytes received and not yet consumed */
	size_t in_len, in_cap;
};

/**
 * Find out whether blkbackd runs on @pool. Returns 0 with d->fd connected when it runs; 0 with
 * d->fd == -1 when it does not, in which case d->lock_fd holds POOL/blkbackd.lock (if that file
 * exists) so that no daemon starts while blkctl changes the pool offline. Errors: -EACCES (no
 * permission to use the socket), -EAGAIN (a daemon holds the lock but does not answer: it is
 * starting or stopping), -ENAMETOOLONG, or -errno of connect().
 */
int blkctl_daemon_open(const char *pool, struct blkctl_daemon *d);

/** Close the connection and release the lock; @d may then be opened again. */
void blkctl_daemon_close(struct blkctl_daemon *d);

/**
 * Send @req (not consumed) as one line and wait for one answer line, parsed into *ans (the
 * caller puts it). The answer must be a JSON object with a boolean "ok". Returns 0, -EPIPE (the
 * daemon closed the connection), -ETIMEDOUT, -EPROTO (not a valid answer), -E2BIG (answer too
 * long) or -errno.
 */
int blkctl_call(struct blkctl_daemon *d, json_object *req, json_object **ans);

/** Print "blkctl: " + the message + a newline on stderr. Returns 1 (the exit status). */
int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * Xen's number for a whole-disk virtual device name (docs/man/xen-vbd-interface.7): "xvda" ..
 * "xvdp" are 202<<8 | disk<<4; "xvdq" and beyond ("xvdaa", up to four letters) are
 * 1<<28 | disk<<8. Partitions and other names are refused. Returns 0 or -EINVAL.
 */
int blkctl_vdev_devid(const char *vdev, uint32_t *devid);

/*
 * Dedup volumes (blkctl_dedup.c): through blkbackd when it runs, else on the store directly
 * (under the daemon's lock). Each prints its result or one "blkctl: " line; returns the exit
 * status. The *_cmd functions take the command's argc/argv (argv[0] is the command).
 */
int blkctl_dedup_create(const char *pool, const char *name, uint64_t size);
int blkctl_dedup_delete(const char *pool, const char *name);
int blkctl_dedup_snapshot(const char *pool, int argc, char **argv);
int blkctl_dedup_clone(const char *pool, int argc, char **argv);
int blkctl_dedup_gc(const char *pool, int argc, char **argv);
int blkctl_dedup_fsck(const char *pool, int argc, char **argv);
int blkctl_dedup_import(const char *pool, int argc, char **argv);
int blkctl_dedup_export(const char *pool, int argc, char **argv);
int blkctl_dedup_pool(const char *pool, int argc, char **argv);
/** Resize a dedup volume: online through blkbackd (guests see it), or offline. */
int blkctl_dedup_resize(const char *pool, const char *name, uint64_t size, int shrink);
/** The dedup store's volumes (ctl_dedup.h's shape), or NULL after saying why. */
json_object *blkctl_dedup_vols(const char *pool);
/** Add origin, mapped_bytes, share_bytes, readonly to the dedup entries of a list --json array. */
void blkctl_dedup_annotate(const char *pool, json_object *arr);

#endif
