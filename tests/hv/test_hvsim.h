/*
 * test_hvsim.h - a private hvsimd for hv tests: the daemon library run in a forked child in a
 * fresh directory under the harness's temp dir, plus toolstack calls over its control socket.
 */
#ifndef SLUICE_TESTS_HV_TEST_HVSIM_H
#define SLUICE_TESTS_HV_TEST_HVSIM_H

#include <stdint.h>
#include <sys/types.h>

#include <xen/xen.h>

struct hvsim_fix {
	pid_t pid;     /**< the child running hvsimd, 0 when stopped */
	char dir[128]; /**< its directory */
};

/** Start hvsimd in a new directory; returns once DIR/hv.sock accepts. 0 or -errno. */
int fix_start(struct hvsim_fix *f);

/** SIGTERM the daemon and reap it. Returns its exit status (0 on a clean exit) or -1. */
int fix_stop(struct hvsim_fix *f);

/** DOMAIN_CREATE / DOMAIN_DESTROY over DIR/hv.sock. Return 0 or the -errno hvsimd answered. */
int fix_create(const struct hvsim_fix *f, const char *name, uint64_t mem_bytes, domid_t *domid);
int fix_destroy(const struct hvsim_fix *f, domid_t domid);

/**
 * Map @domid's grant table as dom0 does (DOMAIN_GET_MEM), to inspect or forge entries the way
 * a guest could. Returns the table or NULL; unmap with fix_unmap_table().
 */
void *fix_map_table(const struct hvsim_fix *f, domid_t domid, uint32_t *nr_entries);
void fix_unmap_table(void *table, uint32_t nr_entries);

/** Poll @fd for POLLIN for up to @ms. 1 readable, 0 timeout. */
int fix_wait_readable(int fd, int ms);

#endif
