/*
 * hvsim.h - hvsimd, the userspace hypervisor, as a library: hvsimd_main.c is a thin main over
 * it, and tests run it in a child process. One instance owns one directory:
 *
 *   DIR/hvsimd.lock                   held (flock) while an instance runs in DIR
 *   DIR/xenstore.sock                 xenstore, acting as dom0 (the xs_server)
 *   DIR/hv.sock                       the hv control protocol (hvsim_proto.h), as dom0
 *   DIR/domains/<domid>/xenstore.sock xenstore, acting as that guest
 *   DIR/domains/<domid>/hv.sock       the hv control protocol, acting as that guest
 *   DIR/names/<name> -> ../domains/<domid>
 *
 * It runs single-threaded in an hv_loop: domains, grant-table memory, event-channel ports and
 * the xenstore server all live in that one thread.
 */
#ifndef SLUICE_HV_HVSIM_H
#define SLUICE_HV_HVSIM_H

#include <signal.h>

struct hvsim;

/**
 * Set up an instance in @dir (created, with missing parents, if absent): take the lock, replace
 * sockets and domain directories a dead instance left behind, listen on the dom0 sockets and
 * create dom0's xenstore nodes. The process should ignore SIGPIPE.
 * Returns 0, -EBUSY (another live hvsimd holds @dir), -ENAMETOOLONG (@dir too long for the
 * socket paths below it), or -errno.
 */
int hvsim_new(struct hvsim **out, const char *dir);

/** Serve until *stop becomes non-zero (a signal handler may set it). Returns 0 or -errno. */
int hvsim_run(struct hvsim *s, volatile sig_atomic_t *stop);

/**
 * Destroy every guest domain (as `hvctl domain destroy` would), close every connection, remove
 * every socket, symlink and directory the instance made (the lock file stays), and free @s.
 */
void hvsim_free(struct hvsim *s);

#endif
