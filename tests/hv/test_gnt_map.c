/*
 * test_gnt_map.c - grant tables through hv.h on a running hvsimd: a guest context grants, a
 * dom0 gnttab handle maps (pages and contiguous), every refusal, flags seen in the guest's
 * table, read-only mappings that really are read-only, dead domains, and a guest process
 * that goes away and comes back.
 */
#include "hv/hv.h"
#include "hv/hvsim_gnt.h"
#include "tests/harness.h"
#include "tests/hv/test_hvsim.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct hvsim_fix fix;
static domid_t domid;

static int suite_init(void)
{
	if (fix_start(&fix))
		return 1;
	return fix_create(&fix, "gntguest", 32ull << 20, &domid) ? 1 : 0;
}

static int suite_clean(void)
{
	return fix_stop(&fix) == 0 ? 0 : 1;
}

struct env {
	struct hv *guest;
	struct hv *dom0;
	struct hv_gnttab *g;
	uint8_t *mem;
	size_t mem_len;
};

static int env_open(struct env *e)
{
	memset(e, 0, sizeof(*e));
	if (hv_guest_open(&e->guest, fix.dir, "gntguest"))
		return -1;
	if (hv_open(&e->dom0, HV_KIND_SIM, fix.dir))
		return -1;
	if (hv_gnttab_open(e->dom0, &e->g))
		return -1;
	e->mem = hv_guest_mem(e->guest, &e->mem_len);
	return 0;
}

static void env_close(struct env *e)
{
	hv_gnttab_close(e->g);
	hv_close(e->dom0);
	hv_close(e->guest);
}

/* Grant @n fresh frames to dom0, filling frame i with byte (seed + i). */
static void grant_n(struct env *e, uint32_t n, int readonly, uint8_t seed, grant_ref_t *refs,
		    uint32_t *frames)
{
	for (uint32_t i = 0; i < n; i++) {
		CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_frames(e->guest, 1, &frames[i]), 0);
		CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_gref(e->guest, &refs[i]), 0);
		memset(e->mem + (size_t)frames[i] * HV_PAGE_SIZE, seed + i, HV_PAGE_SIZE);
		CU_ASSERT_EQUAL_FATAL(hv_guest_grant(e->guest, refs[i], 0, frames[i], readonly), 0);
	}
}

static void ungrant_n(struct env *e, uint32_t n, const grant_ref_t *refs, const uint32_t *frames)
{
	for (uint32_t i = 0; i < n; i++) {
		CU_ASSERT_EQUAL(hv_guest_end_access(e->guest, refs[i]), 0);
		hv_guest_free_gref(e->guest, refs[i]);
		hv_guest_free_frames(e->guest, frames[i], 1);
	}
}

static void test_guest_basics(void)
{
	struct env e;
	grant_ref_t ref;
	uint32_t f1, f2;

	CU_ASSERT_EQUAL_FATAL(env_open(&e), 0);
	CU_ASSERT_EQUAL(hv_domid(e.guest), domid);
	CU_ASSERT(hv_guest_nr_grants(e.guest) >= 16384);
	CU_ASSERT_EQUAL(e.mem_len, 32u << 20);
	/* The toolstack's reserved entries are never handed out. */
	CU_ASSERT_EQUAL(hv_guest_alloc_gref(e.guest, &ref), 0);
	CU_ASSERT(ref >= GNTTAB_NR_RESERVED_ENTRIES);
	hv_guest_free_gref(e.guest, ref);
	/* Frames: contiguous runs, bounds. */
	CU_ASSERT_EQUAL(hv_guest_alloc_frames(e.guest, 16, &f1), 0);
	CU_ASSERT_EQUAL(hv_guest_alloc_frames(e.guest, 16, &f2), 0);
	CU_ASSERT(f2 >= f1 + 16 || f2 + 16 <= f1);
	CU_ASSERT_EQUAL(hv_guest_alloc_frames(e.guest, 0, &f2), -EINVAL);
	CU_ASSERT_EQUAL(hv_guest_alloc_frames(e.guest, 8193, &f2), -EINVAL);
	hv_guest_free_frames(e.guest, f1, 16);
	hv_guest_free_frames(e.guest, f2, 16);
	/* All 8192 frames can be had in one run once free. */
	CU_ASSERT_EQUAL(hv_guest_alloc_frames(e.guest, 8192, &f1), 0);
	CU_ASSERT_EQUAL(hv_guest_alloc_frames(e.guest, 1, &f2), -ENOMEM);
	hv_guest_free_frames(e.guest, f1, 8192);
	/* Granting checks the frame and the ref. */
	CU_ASSERT_EQUAL(hv_guest_grant(e.guest, 100, 0, 8192, 0), -EINVAL);
	CU_ASSERT_EQUAL(hv_guest_grant(e.guest, hv_guest_nr_grants(e.guest), 0, 0, 0), -EINVAL);
	/* A dom0 context has no guest side; a guest context cannot map. */
	CU_ASSERT_EQUAL(hv_guest_alloc_gref(e.dom0, &ref), -EOPNOTSUPP);
	{
		struct hv_gnttab *gg;

		CU_ASSERT_EQUAL(hv_gnttab_open(e.guest, &gg), -EOPNOTSUPP);
	}
	env_close(&e);
}

static void test_map_pages_batch(void)
{
	grant_ref_t refs[11];
	uint32_t frames[11];
	void *addrs[11];
	int status[11];
	uint32_t nr;
	grant_entry_v1_t *table = fix_map_table(&fix, domid, &nr);
	struct env e;

	CU_ASSERT_PTR_NOT_NULL_FATAL(table);
	CU_ASSERT_EQUAL_FATAL(env_open(&e), 0);
	grant_n(&e, 11, 0, 0x40, refs, frames);

	CU_ASSERT_EQUAL(
	    hv_gnttab_map_pages(e.g, domid, 11, refs, HV_PROT_READ | HV_PROT_WRITE, addrs, status),
	    0);
	for (int i = 0; i < 11; i++) {
		uint8_t *p = addrs[i];

		CU_ASSERT_EQUAL(status[i], 0);
		CU_ASSERT_EQUAL(p[0], 0x40 + i);
		CU_ASSERT_EQUAL(p[HV_PAGE_SIZE - 1], 0x40 + i);
		CU_ASSERT_EQUAL(hvsim_gnt_flags(table, refs[i]),
				GTF_permit_access | GTF_reading | GTF_writing);
		/* The backend's write lands in the guest's page. */
		p[7] = 0xee;
		CU_ASSERT_EQUAL(e.mem[(size_t)frames[i] * HV_PAGE_SIZE + 7], 0xee);
		CU_ASSERT_EQUAL(hv_guest_end_access(e.guest, refs[i]), -EBUSY);
	}
	CU_ASSERT_EQUAL(
	    hv_gnttab_unmap_pages(e.g, domid, 11, refs, HV_PROT_READ | HV_PROT_WRITE, addrs), 0);
	for (int i = 0; i < 11; i++)
		CU_ASSERT_EQUAL(hvsim_gnt_flags(table, refs[i]), GTF_permit_access);
	/* Unmapping again is refused: this handle holds no such pin. */
	CU_ASSERT_EQUAL(
	    hv_gnttab_unmap_pages(e.g, domid, 1, refs, HV_PROT_READ | HV_PROT_WRITE, addrs),
	    -EINVAL);
	ungrant_n(&e, 11, refs, frames);
	env_close(&e);
	fix_unmap_table(table, nr);
}

static void test_map_refusals(void)
{
	grant_ref_t refs[6], good[2];
	uint32_t frames[2], nr, fr;
	void *addrs[6];
	int status[6];
	grant_entry_v1_t *table = fix_map_table(&fix, domid, &nr);
	struct env e;

	CU_ASSERT_PTR_NOT_NULL_FATAL(table);
	CU_ASSERT_EQUAL_FATAL(env_open(&e), 0);
	grant_n(&e, 1, 0, 1, &good[0], &frames[0]);
	grant_n(&e, 1, 1, 2, &good[1], &frames[1]);

	refs[0] = good[0];
	refs[1] = hv_guest_nr_grants(e.guest);				  /* bad ref */
	CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_gref(e.guest, &refs[2]), 0); /* not granted */
	CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_gref(e.guest, &refs[3]), 0); /* wrong domain */
	CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_frames(e.guest, 1, &fr), 0);
	CU_ASSERT_EQUAL(hv_guest_grant(e.guest, refs[3], 5, fr, 0), 0);
	refs[4] = good[1]; /* read-only, mapped writable */
	/* A frame outside guest memory, written straight into the table as a guest could. */
	CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_gref(e.guest, &refs[5]), 0);
	CU_ASSERT_EQUAL(hvsim_gnt_grant(table, nr, refs[5], 0, 8192, 0), 0);

	CU_ASSERT_EQUAL(
	    hv_gnttab_map_pages(e.g, domid, 6, refs, HV_PROT_READ | HV_PROT_WRITE, addrs, status),
	    5);
	CU_ASSERT_EQUAL(status[0], 0);
	CU_ASSERT_EQUAL(status[1], -EINVAL);
	CU_ASSERT_EQUAL(status[2], -EPERM);
	CU_ASSERT_EQUAL(status[3], -EACCES);
	CU_ASSERT_EQUAL(status[4], -EROFS);
	CU_ASSERT_EQUAL(status[5], -EFAULT);
	for (int i = 1; i < 6; i++)
		CU_ASSERT_PTR_NULL(addrs[i]);
	/* Each refusal names its reason. */
	CU_ASSERT(strstr(hv_strerror(status[3]), "another domain") != NULL);
	CU_ASSERT(strstr(hv_strerror(status[4]), "read-only") != NULL);
	/* Only what mapped is unmapped. */
	CU_ASSERT_EQUAL(
	    hv_gnttab_unmap_pages(e.g, domid, 1, refs, HV_PROT_READ | HV_PROT_WRITE, addrs), 0);
	/* A bad protection is refused outright. */
	CU_ASSERT_EQUAL(hv_gnttab_map_pages(e.g, domid, 1, refs, 0, addrs, status), 1);
	CU_ASSERT_EQUAL(status[0], -EINVAL);
	/* An unknown domain. */
	CU_ASSERT_EQUAL(hv_gnttab_map_pages(e.g, 999, 1, refs, HV_PROT_READ, addrs, status), 1);
	CU_ASSERT_EQUAL(status[0], -ESRCH);

	CU_ASSERT_EQUAL(hv_guest_end_access(e.guest, refs[3]), 0);
	CU_ASSERT_EQUAL(hv_guest_end_access(e.guest, refs[5]), 0);
	hv_guest_free_frames(e.guest, fr, 1);
	ungrant_n(&e, 2, good, frames);
	env_close(&e);
	fix_unmap_table(table, nr);
}

/*
 * A read-only grant is mapped read-only: the kernel refuses to store into it (read(2) into the
 * page fails with EFAULT rather than faulting, so no signal handler is involved).
 */
static void test_readonly_is_readonly(void)
{
	grant_ref_t ref;
	uint32_t frame;
	void *addr, *rw;
	int status, pfd[2];
	struct env e;

	CU_ASSERT_EQUAL_FATAL(env_open(&e), 0);
	grant_n(&e, 1, 1, 0x5a, &ref, &frame);
	CU_ASSERT_EQUAL(hv_gnttab_map_pages(e.g, domid, 1, &ref, HV_PROT_READ, &addr, &status), 0);
	CU_ASSERT_EQUAL(((uint8_t *)addr)[100], 0x5a);
	CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
	CU_ASSERT_EQUAL(write(pfd[1], "x", 1), 1);
	CU_ASSERT_EQUAL(read(pfd[0], (uint8_t *)addr + 100, 1), -1);
	CU_ASSERT_EQUAL(errno, EFAULT);
	CU_ASSERT_EQUAL(e.mem[(size_t)frame * HV_PAGE_SIZE + 100], 0x5a);
	/* The same page granted writable is mapped writable. */
	CU_ASSERT_EQUAL(hv_guest_end_access(e.guest, ref), -EBUSY);
	CU_ASSERT_EQUAL(hv_gnttab_unmap_pages(e.g, domid, 1, &ref, HV_PROT_READ, &addr), 0);
	CU_ASSERT_EQUAL(hv_guest_end_access(e.guest, ref), 0);
	CU_ASSERT_EQUAL(hv_guest_grant(e.guest, ref, 0, frame, 0), 0);
	CU_ASSERT_EQUAL(
	    hv_gnttab_map_pages(e.g, domid, 1, &ref, HV_PROT_READ | HV_PROT_WRITE, &rw, &status),
	    0);
	CU_ASSERT_EQUAL(read(pfd[0], (uint8_t *)rw + 100, 1), 1);
	CU_ASSERT_EQUAL(e.mem[(size_t)frame * HV_PAGE_SIZE + 100], 'x');
	CU_ASSERT_EQUAL(
	    hv_gnttab_unmap_pages(e.g, domid, 1, &ref, HV_PROT_READ | HV_PROT_WRITE, &rw), 0);
	close(pfd[0]);
	close(pfd[1]);
	ungrant_n(&e, 1, &ref, &frame);
	env_close(&e);
}

static void test_map_contig(void)
{
	grant_ref_t refs[4], bad[3];
	uint32_t frames[4], nr;
	grant_entry_v1_t *table = fix_map_table(&fix, domid, &nr);
	uint8_t *p;
	void *addr;
	struct env e;

	CU_ASSERT_PTR_NOT_NULL_FATAL(table);
	CU_ASSERT_EQUAL_FATAL(env_open(&e), 0);
	/* Scattered frames: allocate with gaps so the region is not contiguous in the guest. */
	for (int i = 0; i < 4; i++) {
		uint32_t gap;

		CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_frames(e.guest, 1, &gap), 0);
		grant_n(&e, 1, 0, 0x10 * (i + 1), &refs[3 - i], &frames[3 - i]);
		hv_guest_free_frames(e.guest, gap, 1);
	}
	CU_ASSERT_EQUAL_FATAL(
	    hv_gnttab_map_contig(e.g, domid, 4, refs, HV_PROT_READ | HV_PROT_WRITE, &addr), 0);
	p = addr;
	for (int i = 0; i < 4; i++) {
		CU_ASSERT_EQUAL(p[i * HV_PAGE_SIZE], 0x10 * (4 - i));
		CU_ASSERT_EQUAL(p[i * HV_PAGE_SIZE + HV_PAGE_SIZE - 1], 0x10 * (4 - i));
		CU_ASSERT_EQUAL(hvsim_gnt_flags(table, refs[i]),
				GTF_permit_access | GTF_reading | GTF_writing);
	}
	/* A write through the region lands in the guest's frame. */
	p[2 * HV_PAGE_SIZE + 9] = 0x99;
	CU_ASSERT_EQUAL(e.mem[(size_t)frames[2] * HV_PAGE_SIZE + 9], 0x99);
	CU_ASSERT_EQUAL(hv_gnttab_unmap_contig(e.g, addr, 3), -EINVAL);
	CU_ASSERT_EQUAL(hv_gnttab_unmap_contig(e.g, addr, 4), 0);
	for (int i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(hvsim_gnt_flags(table, refs[i]), GTF_permit_access);

	/* All or nothing: one bad ref fails the map and leaves nothing pinned. */
	bad[0] = refs[0];
	bad[1] = refs[1];
	CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_gref(e.guest, &bad[2]), 0);
	CU_ASSERT_EQUAL(hv_gnttab_map_contig(e.g, domid, 3, bad, HV_PROT_READ, &addr), -EPERM);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(table, refs[0]), GTF_permit_access);
	CU_ASSERT_EQUAL(hvsim_gnt_flags(table, refs[1]), GTF_permit_access);
	hv_guest_free_gref(e.guest, bad[2]);
	CU_ASSERT_EQUAL(hv_gnttab_map_contig(e.g, domid, 0, refs, HV_PROT_READ, &addr), -EINVAL);

	ungrant_n(&e, 4, refs, frames);
	env_close(&e);
	fix_unmap_table(table, nr);
}

/* Closing a gnttab handle releases what it still maps, as closing gntdev does. */
static void test_close_releases(void)
{
	grant_ref_t refs[3];
	uint32_t frames[3], nr;
	grant_entry_v1_t *table = fix_map_table(&fix, domid, &nr);
	void *addrs[3], *region;
	int status[3];
	struct env e;

	CU_ASSERT_PTR_NOT_NULL_FATAL(table);
	CU_ASSERT_EQUAL_FATAL(env_open(&e), 0);
	grant_n(&e, 3, 0, 0x30, refs, frames);
	CU_ASSERT_EQUAL(hv_gnttab_map_pages(e.g, domid, 2, refs, HV_PROT_READ, addrs, status), 0);
	CU_ASSERT_EQUAL(
	    hv_gnttab_map_contig(e.g, domid, 1, &refs[2], HV_PROT_READ | HV_PROT_WRITE, &region),
	    0);
	hv_gnttab_close(e.g);
	e.g = NULL;
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(hvsim_gnt_flags(table, refs[i]), GTF_permit_access);
	ungrant_n(&e, 3, refs, frames);
	env_close(&e);
	fix_unmap_table(table, nr);
}

/* Read a grant entry's flags until @want, for up to 5 s (hvsimd reacts to a hang-up). */
static int wait_flags(grant_entry_v1_t *table, grant_ref_t ref, uint16_t want)
{
	for (int i = 0; i < 5000; i++) {
		struct timespec ts = {0, 1000000};

		if (hvsim_gnt_flags(table, ref) == want)
			return 1;
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* A dom0 process that dies with grants mapped: hvsimd releases them, as gntdev would. */
static void test_dead_mapper(void)
{
	grant_ref_t refs[3];
	uint32_t frames[3], nr;
	grant_entry_v1_t *table = fix_map_table(&fix, domid, &nr);
	int pfd[2], st;
	struct env e;
	pid_t pid;
	char c;

	CU_ASSERT_PTR_NOT_NULL_FATAL(table);
	CU_ASSERT_EQUAL_FATAL(env_open(&e), 0);
	grant_n(&e, 3, 0, 0x60, refs, frames);
	CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		struct hv_gnttab *g;
		void *addrs[2], *region;
		int status[2];
		struct hv *hv;

		if (hv_open(&hv, HV_KIND_SIM, fix.dir) || hv_gnttab_open(hv, &g) ||
		    hv_gnttab_map_pages(g, domid, 1, &refs[0], HV_PROT_READ | HV_PROT_WRITE, addrs,
					status) ||
		    hv_gnttab_map_pages(g, domid, 1, &refs[1], HV_PROT_READ, addrs + 1,
					status + 1) ||
		    hv_gnttab_map_contig(g, domid, 1, &refs[2], HV_PROT_READ, &region))
			_exit(1);
		/* Die holding all three, without closing anything. */
		_exit(write(pfd[1], "m", 1) == 1 ? 0 : 1);
	}
	close(pfd[1]);
	CU_ASSERT_EQUAL(read(pfd[0], &c, 1), 1);
	close(pfd[0]);
	CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	for (int i = 0; i < 3; i++)
		CU_ASSERT(wait_flags(table, refs[i], GTF_permit_access));
	ungrant_n(&e, 3, refs, frames);
	env_close(&e);
	fix_unmap_table(table, nr);
}

/* A destroyed domain: no new maps, but mappings made before stay valid until unmapped. */
static void test_dead_domain(void)
{
	struct hv *guest, *dom0;
	struct hv_gnttab *g;
	grant_ref_t refs[2];
	uint32_t frames[2];
	void *addr, *a2;
	int status;
	domid_t id;
	uint8_t *mem;
	size_t len;

	CU_ASSERT_EQUAL_FATAL(fix_create(&fix, "doomed", 16ull << 20, &id), 0);
	CU_ASSERT_EQUAL_FATAL(hv_open(&dom0, HV_KIND_SIM, fix.dir), 0);
	CU_ASSERT_EQUAL_FATAL(hv_gnttab_open(dom0, &g), 0);
	/* Before the guest registers its memory there is nothing to map. */
	CU_ASSERT_EQUAL(hv_gnttab_map_pages(g, id, 1, &refs[0], HV_PROT_READ, &addr, &status), 1);
	CU_ASSERT_EQUAL(status, -ENXIO);

	CU_ASSERT_EQUAL_FATAL(hv_guest_open(&guest, fix.dir, "doomed"), 0);
	mem = hv_guest_mem(guest, &len);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_frames(guest, 1, &frames[i]), 0);
		CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_gref(guest, &refs[i]), 0);
		mem[(size_t)frames[i] * HV_PAGE_SIZE] = 0x77;
		CU_ASSERT_EQUAL(hv_guest_grant(guest, refs[i], 0, frames[i], 0), 0);
	}
	CU_ASSERT_EQUAL(
	    hv_gnttab_map_pages(g, id, 1, &refs[0], HV_PROT_READ | HV_PROT_WRITE, &addr, &status),
	    0);
	CU_ASSERT_EQUAL(fix_destroy(&fix, id), 0);
	CU_ASSERT_EQUAL(hv_gnttab_map_pages(g, id, 1, &refs[1], HV_PROT_READ, &a2, &status), 1);
	CU_ASSERT_EQUAL(status, -ESRCH);
	CU_ASSERT_EQUAL(hv_gnttab_map_contig(g, id, 1, &refs[1], HV_PROT_READ, &a2), -ESRCH);
	/* The zombie's page is still there for the backend to finish with. */
	CU_ASSERT_EQUAL(((uint8_t *)addr)[0], 0x77);
	((uint8_t *)addr)[1] = 1;
	CU_ASSERT_EQUAL(
	    hv_gnttab_unmap_pages(g, id, 1, &refs[0], HV_PROT_READ | HV_PROT_WRITE, &addr), 0);
	hv_gnttab_close(g);
	hv_close(dom0);
	hv_close(guest);
}

/*
 * The guest side is held by one live context at a time; a later one gets the same memory and
 * table back and reclaims entries nobody maps, but not one a backend still maps.
 */
static void test_guest_reopen(void)
{
	struct hv *g1, *g2, *dom0;
	struct hv_gnttab *g;
	grant_ref_t mapped, idle, r;
	uint32_t fm, fi, f;
	uint8_t *mem;
	void *addr;
	size_t len;
	int status, seen_mapped = 0;
	char idstr[16];

	CU_ASSERT_EQUAL_FATAL(hv_guest_open(&g1, fix.dir, "gntguest"), 0);
	CU_ASSERT_EQUAL(hv_guest_open(&g2, fix.dir, "gntguest"), -EBUSY);
	mem = hv_guest_mem(g1, &len);
	CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_frames(g1, 1, &fm), 0);
	CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_frames(g1, 1, &fi), 0);
	CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_gref(g1, &mapped), 0);
	CU_ASSERT_EQUAL_FATAL(hv_guest_alloc_gref(g1, &idle), 0);
	memcpy(mem + (size_t)fm * HV_PAGE_SIZE, "persist", 8);
	CU_ASSERT_EQUAL(hv_guest_grant(g1, mapped, 0, fm, 0), 0);
	CU_ASSERT_EQUAL(hv_guest_grant(g1, idle, 0, fi, 0), 0);
	CU_ASSERT_EQUAL_FATAL(hv_open(&dom0, HV_KIND_SIM, fix.dir), 0);
	CU_ASSERT_EQUAL_FATAL(hv_gnttab_open(dom0, &g), 0);
	CU_ASSERT_EQUAL(hv_gnttab_map_pages(g, domid, 1, &mapped, HV_PROT_READ, &addr, &status), 0);
	hv_close(g1);

	/* By domid this time; same memory. */
	snprintf(idstr, sizeof(idstr), "%u", domid);
	CU_ASSERT_EQUAL_FATAL(hv_guest_open(&g2, fix.dir, idstr), 0);
	mem = hv_guest_mem(g2, &len);
	CU_ASSERT_STRING_EQUAL((char *)mem + (size_t)fm * HV_PAGE_SIZE, "persist");
	/* The idle grant was reclaimed; the mapped one was not. */
	CU_ASSERT_EQUAL(hv_guest_end_access(g2, mapped), -EBUSY);
	CU_ASSERT_EQUAL(hv_gnttab_map_pages(g, domid, 1, &idle, HV_PROT_READ, &addr, &status), 1);
	CU_ASSERT_EQUAL(status, -EPERM);
	/* The mapped frame is not handed out again while mapped. */
	for (uint32_t i = 0; i < 8192 - 1; i++) {
		if (hv_guest_alloc_frames(g2, 1, &f))
			break;
		if (f == fm)
			seen_mapped = 1;
	}
	CU_ASSERT_EQUAL(seen_mapped, 0);
	/* Nor is the mapped ref, until the backend lets go. */
	while (hv_guest_alloc_gref(g2, &r) == 0)
		if (r == mapped)
			seen_mapped = 1;
	CU_ASSERT_EQUAL(seen_mapped, 0);
	CU_ASSERT_EQUAL(hv_gnttab_map_pages(g, domid, 1, &mapped, HV_PROT_READ, &addr, &status), 0);
	CU_ASSERT_EQUAL(hv_gnttab_unmap_pages(g, domid, 1, &mapped, HV_PROT_READ, &addr), 0);
	hv_gnttab_close(g);
	/* Now the sweep reclaims it once the free list runs dry. */
	CU_ASSERT_EQUAL(hv_guest_alloc_gref(g2, &r), 0);
	CU_ASSERT_EQUAL(r, mapped);
	hv_close(g2);
	hv_close(dom0);
}

static CU_TestInfo tests[] = {
    {"guest_basics", test_guest_basics}, {"map_pages_batch", test_map_pages_batch},
    {"map_refusals", test_map_refusals}, {"readonly_is_readonly", test_readonly_is_readonly},
    {"map_contig", test_map_contig},	 {"close_releases", test_close_releases},
    {"dead_mapper", test_dead_mapper},	 {"dead_domain", test_dead_domain},
    {"guest_reopen", test_guest_reopen}, CU_TEST_INFO_NULL,
};

TEST_SUITE("gnt_map", suite_init, suite_clean, tests)
