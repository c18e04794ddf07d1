/*
 * hv_sim.c - hv.h on hvsimd: contexts (dom0 and guest), grant mapping on shared memory, the
 * guest's grant and frame allocators, and event channels over eventfds.
 *
 * Grant mapping: a gnttab handle has its own connection to hvsimd (its "gntdev fd"), fetches a
 * guest's memory, grant table and active table once (DOMAIN_GET_MEM) and maps the memory twice,
 * read-only and read-write. hv_gnttab_map_pages then pins entries with atomic operations
 * (hvsim_gnt.c) and returns pointers into the right mapping: no system call, and a read-only
 * grant really is read-only. Each handle records its own pins per entry in a ledger shared with
 * hvsimd, so unmaps are checked, closing a handle releases what it still holds, and if the
 * process dies hvsimd releases them when the connection drops (as gntdev does).
 *
 * Event channels: every port has a receive eventfd (made by hvsimd). A handle's pollable fd is
 * an epoll fd holding its ports' eventfds with EPOLLONESHOT (a port that fired stays masked
 * until unmask re-arms it) and its control connection (for PEER_CHANGED notices). notify writes
 * the peer's eventfd, fetched from hvsimd on first use and cached.
 */
#define LOG_TAG "hv"
#include "hv/hv_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "hv/hvsim_gnt.h"
#include "hv/hvsim_msg.h"

/* ---- contexts ---- */

struct sim_hv {
	struct hv base;
	char hv_path[HV_PATH_MAX]; /**< the hv socket this context's handles connect to */
	pthread_mutex_t lock;	   /**< guards chan and the guest allocators */
	struct hvsim_chan chan;	   /**< the context's connection (a guest's registrant) */
	uint32_t max_ports;
	int guest;

	/* Guest contexts only. */
	uint8_t *mem;
	uint64_t mem_bytes;
	uint32_t mem_frames;
	grant_entry_v1_t *gnt;
	uint32_t nr_grants;
	uint64_t *frame_used; /**< bitmap, 1 = allocated */
	uint32_t frame_hint;
	uint32_t *gref_free; /**< stack of free refs */
	uint32_t gref_nfree;
	uint8_t *gref_state;  /**< GREF_* per ref */
	uint32_t nr_leftover; /**< refs in GREF_LEFTOVER */
};

enum {
	GREF_RESERVED = 0, /**< the toolstack's first entries; never handed out */
	GREF_FREE,
	GREF_USED,
	GREF_LEFTOVER, /**< still mapped when we found (or freed) it: reclaimed later */
};

static struct sim_hv *sim_of(const struct hv *hv)
{
	return (struct sim_hv *)(uintptr_t)hv;
}

static int sim_call(struct sim_hv *sh, uint32_t type, const void *req, uint32_t req_len,
		    const int *fds, unsigned nfds, void *rep, uint32_t rep_cap, int *rfds,
		    unsigned want_fds)
{
	uint32_t got;
	int rc;

	pthread_mutex_lock(&sh->lock);
	rc = hvsim_chan_call(&sh->chan, type, req, req_len, fds, nfds, rep, rep_cap, &got, rfds,
			     want_fds);
	pthread_mutex_unlock(&sh->lock);
	if (!rc && got != rep_cap) {
		hvsim_close_fds(rfds, want_fds);
		return -EPROTO;
	}
	return rc;
}

static int sim_connect_info(struct sim_hv *sh, struct hvsim_info_rep *info)
{
	int rc = hvsim_chan_connect(&sh->chan, sh->hv_path);

	if (rc)
		return rc;
	rc = sim_call(sh, HVSIM_INFO, NULL, 0, NULL, 0, info, sizeof(*info), NULL, 0);
	if (!rc && info->version != HVSIM_PROTO_VERSION)
		rc = -EPROTO;
	if (rc)
		hvsim_chan_close(&sh->chan);
	return rc;
}

static struct sim_hv *sim_alloc(void)
{
	struct sim_hv *sh = calloc(1, sizeof(*sh));

	if (!sh)
		return NULL;
	sh->base.ops = &hv_sim_ops;
	sh->base.kind = HV_KIND_SIM;
	sh->chan.fd = -1;
	pthread_mutex_init(&sh->lock, NULL);
	return sh;
}

int hv_sim_open(struct hv **out, const char *dir)
{
	struct hvsim_info_rep info;
	struct sim_hv *sh;
	int rc;

	if (strlen(dir) + sizeof("/xenstore.sock") > HV_PATH_MAX)
		return -ENAMETOOLONG;
	sh = sim_alloc();
	if (!sh)
		return -ENOMEM;
	snprintf(sh->hv_path, sizeof(sh->hv_path), "%s/hv.sock", dir);
	snprintf(sh->base.xs_path, sizeof(sh->base.xs_path), "%s/xenstore.sock", dir);
	rc = sim_connect_info(sh, &info);
	if (rc)
		goto err;
	if (info.domid != 0) {
		rc = -EPROTO;
		goto err_chan;
	}
	sh->base.domid = 0;
	sh->max_ports = info.max_ports;
	*out = &sh->base;
	return 0;

err_chan:
	hvsim_chan_close(&sh->chan);
err:
	pthread_mutex_destroy(&sh->lock);
	free(sh);
	return rc;
}

static int all_digits(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

static int name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > HVSIM_NAME_MAX || !strcmp(s, ".") || !strcmp(s, ".."))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '.' || *s == '-'))
			return 0;
	return 1;
}

static void frames_mark(uint64_t *bm, uint32_t first, uint32_t count, int used)
{
	for (uint32_t f = first; f < first + count; f++) {
		if (used)
			bm[f / 64] |= 1ull << (f % 64);
		else
			bm[f / 64] &= ~(1ull << (f % 64));
	}
}

static int frame_is_used(const uint64_t *bm, uint32_t f)
{
	return (bm[f / 64] >> (f % 64)) & 1;
}

/*
 * Take over the grant table as a previous guest process left it: entries nobody maps are
 * ended and free; entries a backend still maps stay granted (their frames stay allocated)
 * until a later sweep finds them unmapped.
 */
static int guest_alloc_init(struct sim_hv *sh)
{
	uint32_t n = sh->nr_grants;

	sh->frame_used = calloc((sh->mem_frames + 63) / 64, sizeof(uint64_t));
	sh->gref_free = calloc(n, sizeof(uint32_t));
	sh->gref_state = calloc(n, 1);
	if (!sh->frame_used || !sh->gref_free || !sh->gref_state)
		return -ENOMEM;
	/* Push in reverse so the lowest refs come out first. */
	for (uint32_t r = n; r-- > GNTTAB_NR_RESERVED_ENTRIES;) {
		uint32_t frame = __atomic_load_n(&sh->gnt[r].frame, __ATOMIC_RELAXED);

		if (hvsim_gnt_end_access(sh->gnt, n, r) == 0) {
			sh->gref_state[r] = GREF_FREE;
			sh->gref_free[sh->gref_nfree++] = r;
			continue;
		}
		sh->gref_state[r] = GREF_LEFTOVER;
		sh->nr_leftover++;
		if (frame < sh->mem_frames)
			frames_mark(sh->frame_used, frame, 1, 1);
	}
	return 0;
}

/* Reclaim leftover refs whose mappings are gone. Called with sh->lock held. */
static void guest_sweep_leftovers(struct sim_hv *sh)
{
	for (uint32_t r = GNTTAB_NR_RESERVED_ENTRIES; r < sh->nr_grants && sh->nr_leftover; r++) {
		uint32_t frame;

		if (sh->gref_state[r] != GREF_LEFTOVER)
			continue;
		frame = __atomic_load_n(&sh->gnt[r].frame, __ATOMIC_RELAXED);
		if (hvsim_gnt_end_access(sh->gnt, sh->nr_grants, r))
			continue;
		sh->gref_state[r] = GREF_FREE;
		sh->gref_free[sh->gref_nfree++] = r;
		sh->nr_leftover--;
		if (frame < sh->mem_frames)
			frames_mark(sh->frame_used, frame, 1, 0);
	}
}

static int guest_resolve(const char *dir, const char *domain, char *path, size_t len)
{
	char probe[HV_PATH_MAX + 16];
	struct stat st;
	int n;

	if (all_digits(domain)) {
		unsigned long id = strtoul(domain, NULL, 10);

		if (id == 0 || id >= DOMID_FIRST_RESERVED)
			return -EINVAL;
		n = snprintf(path, len, "%s/domains/%lu/hv.sock", dir, id);
	} else {
		if (!name_ok(domain))
			return -EINVAL;
		n = snprintf(path, len, "%s/names/%s/hv.sock", dir, domain);
	}
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	if (stat(path, &st) == 0)
		return 0;
	/* Say which is missing: the domain, or hvsimd altogether. */
	snprintf(probe, sizeof(probe), "%s/hv.sock", dir);
	return stat(probe, &st) == 0 ? -ESRCH : -ENOENT;
}

int hv_guest_open(struct hv **out, const char *dir, const char *domain)
{
	struct hvsim_info_rep info;
	struct hvsim_mem_rep rep;
	struct sim_hv *sh;
	char name[32];
	int memfd, fds[2], rc;
	void *p;

	sh = sim_alloc();
	if (!sh)
		return -ENOMEM;
	sh->guest = 1;
	rc = guest_resolve(dir, domain, sh->hv_path, sizeof(sh->hv_path));
	if (rc)
		goto err_free;
	rc = sim_connect_info(sh, &info);
	if (rc == -ENOENT || rc == -ECONNREFUSED)
		rc = -ESRCH; /* the socket went with its domain */
	if (rc)
		goto err_free;
	if (info.domid == 0 || info.domid >= DOMID_FIRST_RESERVED || !info.nr_grants ||
	    info.mem_bytes < HVSIM_MEM_MIN || info.mem_bytes > HVSIM_MEM_MAX) {
		rc = -EPROTO;
		goto err_chan;
	}
	sh->base.domid = (domid_t)info.domid;
	sh->max_ports = info.max_ports;
	/* Handles and xenstore go by domid from now on: a name can be reused by a new domain. */
	snprintf(sh->hv_path, sizeof(sh->hv_path), "%s/domains/%u/hv.sock", dir, info.domid);
	snprintf(sh->base.xs_path, sizeof(sh->base.xs_path), "%s/domains/%u/xenstore.sock", dir,
		 info.domid);

	/* Offer fresh memory; hvsimd hands back the registered memory if there is some. */
	snprintf(name, sizeof(name), "hv-guest-d%u", info.domid);
	memfd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (memfd < 0) {
		rc = -errno;
		goto err_chan;
	}
	if (ftruncate(memfd, (off_t)info.mem_bytes) < 0) {
		rc = -errno;
		close(memfd);
		goto err_chan;
	}
	rc = sim_call(sh, HVSIM_GUEST_REGISTER_MEM, NULL, 0, &memfd, 1, &rep, sizeof(rep), fds, 2);
	close(memfd);
	if (rc)
		goto err_chan;
	if (rep.mem_bytes != info.mem_bytes || rep.nr_grants != info.nr_grants ||
	    rep.nr_grants < GNTTAB_NR_RESERVED_ENTRIES + 1) {
		rc = -EPROTO;
		goto err_fds;
	}
	sh->mem_bytes = rep.mem_bytes;
	sh->mem_frames = (uint32_t)(rep.mem_bytes / HV_PAGE_SIZE);
	sh->nr_grants = rep.nr_grants;
	p = mmap(NULL, sh->mem_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		goto err_fds;
	}
	sh->mem = p;
	p = mmap(NULL, hvsim_gnt_table_bytes(sh->nr_grants), PROT_READ | PROT_WRITE, MAP_SHARED,
		 fds[1], 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		goto err_mem;
	}
	sh->gnt = p;
	hvsim_close_fds(fds, 2);
	rc = guest_alloc_init(sh);
	if (rc)
		goto err_alloc;
	if (sh->nr_leftover)
		log_info("d%u: %u grants still mapped by a backend from a previous guest process",
			 sh->base.domid, sh->nr_leftover);
	*out = &sh->base;
	return 0;

err_alloc:
	free(sh->frame_used);
	free(sh->gref_free);
	free(sh->gref_state);
	munmap(sh->gnt, hvsim_gnt_table_bytes(sh->nr_grants));
err_mem:
	munmap(sh->mem, sh->mem_bytes);
err_fds:
	hvsim_close_fds(fds, 2);
err_chan:
	hvsim_chan_close(&sh->chan);
err_free:
	pthread_mutex_destroy(&sh->lock);
	free(sh);
	return rc;
}

static void sim_close(struct hv *hv)
{
	struct sim_hv *sh = sim_of(hv);

	if (sh->guest) {
		munmap(sh->gnt, hvsim_gnt_table_bytes(sh->nr_grants));
		munmap(sh->mem, sh->mem_bytes);
		free(sh->frame_used);
		free(sh->gref_free);
		free(sh->gref_state);
	}
	hvsim_chan_close(&sh->chan);
	pthread_mutex_destroy(&sh->lock);
	free(sh);
}

/* ---- the guest's side of grant tables ---- */

static struct sim_hv *guest_of(const struct hv *hv)
{
	struct sim_hv *sh;

	if (hv->kind != HV_KIND_SIM)
		return NULL;
	sh = sim_of(hv);
	return sh->guest ? sh : NULL;
}

uint32_t hv_guest_nr_grants(const struct hv *hv)
{
	struct sim_hv *sh = guest_of(hv);

	return sh ? sh->nr_grants : 0;
}

void *hv_guest_mem(const struct hv *hv, size_t *len_bytes)
{
	struct sim_hv *sh = guest_of(hv);

	if (!sh) {
		*len_bytes = 0;
		return NULL;
	}
	*len_bytes = sh->mem_bytes;
	return sh->mem;
}

int hv_guest_alloc_frames(struct hv *hv, uint32_t count, uint32_t *frame)
{
	struct sim_hv *sh = guest_of(hv);
	uint32_t start, run = 0, f;
	int rc = -ENOMEM;

	if (!sh)
		return -EOPNOTSUPP;
	if (count == 0 || count > sh->mem_frames)
		return -EINVAL;
	pthread_mutex_lock(&sh->lock);
	/* First fit from the hint, wrapping once; a run may not wrap around the end. */
	start = sh->frame_hint < sh->mem_frames ? sh->frame_hint : 0;
	for (uint32_t i = 0; i < sh->mem_frames + count; i++) {
		f = (start + i) % sh->mem_frames;
		if (f == 0)
			run = 0;
		if (frame_is_used(sh->frame_used, f)) {
			run = 0;
			continue;
		}
		if (++run == count) {
			*frame = f + 1 - count;
			frames_mark(sh->frame_used, *frame, count, 1);
			sh->frame_hint = f + 1;
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&sh->lock);
	return rc;
}

void hv_guest_free_frames(struct hv *hv, uint32_t frame, uint32_t count)
{
	struct sim_hv *sh = guest_of(hv);

	if (!sh || frame >= sh->mem_frames || count > sh->mem_frames - frame)
		return;
	pthread_mutex_lock(&sh->lock);
	frames_mark(sh->frame_used, frame, count, 0);
	pthread_mutex_unlock(&sh->lock);
}

int hv_guest_alloc_gref(struct hv *hv, grant_ref_t *ref)
{
	struct sim_hv *sh = guest_of(hv);
	int rc = 0;

	if (!sh)
		return -EOPNOTSUPP;
	pthread_mutex_lock(&sh->lock);
	if (!sh->gref_nfree && sh->nr_leftover)
		guest_sweep_leftovers(sh);
	if (sh->gref_nfree) {
		*ref = sh->gref_free[--sh->gref_nfree];
		sh->gref_state[*ref] = GREF_USED;
	} else {
		rc = -ENOSPC;
	}
	pthread_mutex_unlock(&sh->lock);
	return rc;
}

void hv_guest_free_gref(struct hv *hv, grant_ref_t ref)
{
	struct sim_hv *sh = guest_of(hv);

	if (!sh || ref >= sh->nr_grants)
		return;
	pthread_mutex_lock(&sh->lock);
	if (sh->gref_state[ref] == GREF_USED) {
		/* A ref freed while still granted and mapped must not be handed out again. */
		if (hvsim_gnt_end_access(sh->gnt, sh->nr_grants, ref) == 0) {
			sh->gref_state[ref] = GREF_FREE;
			sh->gref_free[sh->gref_nfree++] = ref;
		} else {
			sh->gref_state[ref] = GREF_LEFTOVER;
			sh->nr_leftover++;
		}
	}
	pthread_mutex_unlock(&sh->lock);
}

int hv_guest_grant(struct hv *hv, grant_ref_t ref, domid_t to, uint32_t frame, int readonly)
{
	struct sim_hv *sh = guest_of(hv);

	if (!sh)
		return -EOPNOTSUPP;
	if (ref >= sh->nr_grants || frame >= sh->mem_frames || to >= DOMID_FIRST_RESERVED)
		return -EINVAL;
	return hvsim_gnt_grant(sh->gnt, sh->nr_grants, ref, to, frame, readonly);
}

int hv_guest_end_access(struct hv *hv, grant_ref_t ref)
{
	struct sim_hv *sh = guest_of(hv);

	if (!sh)
		return -EOPNOTSUPP;
	return hvsim_gnt_end_access(sh->gnt, sh->nr_grants, ref);
}

/* ---- grant mapping (dom0) ---- */

/* One guest's memory and tables as one gnttab handle maps them. */
struct sim_dommap {
	domid_t domid;
	uint64_t instance;
	int current; /**< 0 once the domain was seen destroyed */
	int mem_fd;  /**< kept for map_contig's per-page mmaps */
	uint8_t *mem_ro;
	uint8_t *mem_rw;
	uint64_t mem_bytes;
	struct hvsim_gnt_view view;
	uint32_t *pins; /**< this handle's pins per ref: the ledger hvsimd shares with us */
	uint64_t nr_pins;
	struct sim_dommap *next;
};

struct sim_contig {
	void *addr;
	uint32_t count;
	int writable;
	struct sim_dommap *dm;
	struct sim_contig *next;
	grant_ref_t refs[];
};

struct sim_gnttab {
	struct hv_gnttab base;
	struct hvsim_chan chan; /**< like a gntdev fd: when it closes, hvsimd drops our pins */
	struct sim_dommap *doms;
	struct sim_dommap *last; /**< most recently used: the data path's one-entry cache */
	struct sim_contig *contigs;
};

static void dommap_free(struct sim_dommap *dm)
{
	if (dm->mem_ro)
		munmap(dm->mem_ro, dm->mem_bytes);
	if (dm->mem_rw)
		munmap(dm->mem_rw, dm->mem_bytes);
	if (dm->view.table)
		munmap(dm->view.table, hvsim_gnt_table_bytes(dm->view.nr_entries));
	if (dm->view.hdr)
		munmap(dm->view.hdr, hvsim_gnt_active_bytes(dm->view.nr_entries));
	if (dm->pins)
		munmap(dm->pins, hvsim_gnt_ledger_bytes(dm->view.nr_entries));
	if (dm->mem_fd >= 0)
		close(dm->mem_fd);
	free(dm);
}

/* Drop @dm from @sg if it is dead and nothing of it is mapped any more. */
static void dommap_maybe_release(struct sim_gnttab *sg, struct sim_dommap *dm)
{
	if (dm->current || dm->nr_pins)
		return;
	for (struct sim_dommap **pp = &sg->doms; *pp; pp = &(*pp)->next) {
		if (*pp == dm) {
			*pp = dm->next;
			break;
		}
	}
	if (sg->last == dm)
		sg->last = NULL;
	dommap_free(dm);
}

static void *map_fd(int fd, uint64_t len, int prot)
{
	void *p = mmap(NULL, len, prot, MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int dommap_fetch(struct sim_gnttab *sg, domid_t domid, struct sim_dommap **out)
{
	struct hvsim_domid_msg req = {.domid = domid};
	struct hvsim_mem_rep rep;
	struct sim_dommap *dm;
	uint32_t got;
	int fds[4], rc;

	rc = hvsim_chan_call(&sg->chan, HVSIM_DOMAIN_GET_MEM, &req, sizeof(req), NULL, 0, &rep,
			     sizeof(rep), &got, fds, 4);
	if (rc)
		return rc;
	if (got != sizeof(rep) || rep.domid != domid || rep.mem_bytes % HV_PAGE_SIZE ||
	    !rep.nr_grants) {
		rc = -EPROTO;
		goto err_fds;
	}
	dm = calloc(1, sizeof(*dm));
	if (!dm) {
		rc = -ENOMEM;
		goto err_fds;
	}
	dm->domid = domid;
	dm->instance = rep.instance;
	dm->current = 1;
	dm->mem_fd = fds[0];
	fds[0] = -1;
	dm->mem_bytes = rep.mem_bytes;
	dm->view.nr_entries = rep.nr_grants;
	dm->view.mem_frames = rep.mem_bytes / HV_PAGE_SIZE;
	dm->mem_ro = map_fd(dm->mem_fd, dm->mem_bytes, PROT_READ);
	dm->mem_rw = map_fd(dm->mem_fd, dm->mem_bytes, PROT_READ | PROT_WRITE);
	dm->view.table =
	    map_fd(fds[1], hvsim_gnt_table_bytes(rep.nr_grants), PROT_READ | PROT_WRITE);
	dm->view.hdr =
	    map_fd(fds[2], hvsim_gnt_active_bytes(rep.nr_grants), PROT_READ | PROT_WRITE);
	dm->pins = map_fd(fds[3], hvsim_gnt_ledger_bytes(rep.nr_grants), PROT_READ | PROT_WRITE);
	if (!dm->mem_ro || !dm->mem_rw || !dm->view.table || !dm->view.hdr || !dm->pins) {
		rc = -errno;
		goto err_dm;
	}
	dm->view.active = (uint32_t *)((uint8_t *)dm->view.hdr + HVSIM_GNT_ACTIVE_OFF);
	if (dm->view.hdr->magic != HVSIM_GNT_MAGIC || dm->view.hdr->domid != domid ||
	    dm->view.hdr->nr_entries != rep.nr_grants ||
	    dm->view.hdr->mem_frames != dm->view.mem_frames ||
	    dm->view.hdr->instance != rep.instance) {
		rc = -EPROTO;
		goto err_dm;
	}
	hvsim_close_fds(fds, 4);
	dm->next = sg->doms;
	sg->doms = dm;
	*out = dm;
	return 0;

err_dm:
	dommap_free(dm);
err_fds:
	hvsim_close_fds(fds, 4);
	return rc ? rc : -ENOMEM;
}

/* The live incarnation of @domid for mapping, fetching it on first use or after a destroy. */
static int dommap_get(struct sim_gnttab *sg, domid_t domid, struct sim_dommap **out)
{
	struct sim_dommap *dm = sg->last;

	if (!dm || dm->domid != domid || !dm->current) {
		for (dm = sg->doms; dm; dm = dm->next)
			if (dm->domid == domid && dm->current)
				break;
	}
	/* Acquire: pairs with hvsimd's release store when it destroys the domain. */
	if (dm && !__atomic_load_n(&dm->view.hdr->alive, __ATOMIC_ACQUIRE)) {
		dm->current = 0;
		dommap_maybe_release(sg, dm);
		dm = NULL;
	}
	if (!dm) {
		int rc = dommap_fetch(sg, domid, &dm);

		if (rc)
			return rc;
	}
	sg->last = dm;
	*out = dm;
	return 0;
}

/* The mapping of @domid that @addr (a page of it, @writable) lies in, or NULL. */
static struct sim_dommap *dommap_by_addr(struct sim_gnttab *sg, domid_t domid, const void *addr,
					 int writable)
{
	for (struct sim_dommap *dm = sg->doms; dm; dm = dm->next) {
		const uint8_t *base = writable ? dm->mem_rw : dm->mem_ro;

		if (dm->domid == domid && (const uint8_t *)addr >= base &&
		    (const uint8_t *)addr < base + dm->mem_bytes)
			return dm;
	}
	return NULL;
}

static int sim_gnttab_open(struct hv *hv, struct hv_gnttab **out)
{
	struct sim_gnttab *sg;
	int rc;

	if (sim_of(hv)->guest)
		return -EOPNOTSUPP; /* mapping is the backend's, in dom0 */
	sg = calloc(1, sizeof(*sg));
	if (!sg)
		return -ENOMEM;
	sg->base.hv = hv;
	rc = hvsim_chan_connect(&sg->chan, sim_of(hv)->hv_path);
	if (rc) {
		free(sg);
		return rc;
	}
	*out = &sg->base;
	return 0;
}

/*
 * Take one pin of @ref and record it in the ledger. Recorded only once taken, forgotten before
 * dropped: if we die in between, hvsimd leaks a pin rather than dropping someone else's.
 */
static int pin(struct sim_dommap *dm, grant_ref_t ref, int writable, uint32_t *frame)
{
	uint32_t unit = writable ? HVSIM_LEDGER_WR : HVSIM_LEDGER_RD;
	int rc;

	if (ref < dm->view.nr_entries &&
	    ((dm->pins[ref] / unit) & HVSIM_LEDGER_MAX) == HVSIM_LEDGER_MAX)
		return -EOVERFLOW;
	rc = hvsim_gnt_map(&dm->view, ref, 0, writable, frame);
	if (rc)
		return rc;
	dm->pins[ref] += unit;
	dm->nr_pins++;
	return 0;
}

/* Drop one pin of @ref this handle holds. Returns 0 or -EINVAL (it holds none). */
static int unpin(struct sim_dommap *dm, grant_ref_t ref, int writable)
{
	uint32_t unit = writable ? HVSIM_LEDGER_WR : HVSIM_LEDGER_RD;

	if (ref >= dm->view.nr_entries || !((dm->pins[ref] / unit) & HVSIM_LEDGER_MAX))
		return -EINVAL;
	dm->pins[ref] -= unit;
	dm->nr_pins--;
	hvsim_gnt_unmap(&dm->view, ref, writable);
	return 0;
}

static int sim_map_pages(struct hv_gnttab *g, domid_t domid, uint32_t count,
			 const grant_ref_t *refs, unsigned prot, void **addrs, int *status)
{
	struct sim_gnttab *sg = (struct sim_gnttab *)g;
	int writable = !!(prot & HV_PROT_WRITE);
	struct sim_dommap *dm;
	uint8_t *base;
	int rc, failed = 0;

	rc = dommap_get(sg, domid, &dm);
	if (rc) {
		for (uint32_t i = 0; i < count; i++) {
			addrs[i] = NULL;
			status[i] = rc;
		}
		return (int)count;
	}
	base = writable ? dm->mem_rw : dm->mem_ro;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t frame;

		rc = pin(dm, refs[i], writable, &frame);
		status[i] = rc;
		if (rc) {
			addrs[i] = NULL;
			failed++;
			continue;
		}
		addrs[i] = base + (uint64_t)frame * HV_PAGE_SIZE;
	}
	return failed;
}

static int sim_unmap_pages(struct hv_gnttab *g, domid_t domid, uint32_t count,
			   const grant_ref_t *refs, unsigned prot, void *const *addrs)
{
	struct sim_gnttab *sg = (struct sim_gnttab *)g;
	int writable = !!(prot & HV_PROT_WRITE);
	struct sim_dommap *dm = NULL;
	int rc = 0;

	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *base;

		if (dm) {
			base = writable ? dm->mem_rw : dm->mem_ro;
			if ((const uint8_t *)addrs[i] < base ||
			    (const uint8_t *)addrs[i] >= base + dm->mem_bytes)
				dm = NULL;
		}
		if (!dm)
			dm = dommap_by_addr(sg, domid, addrs[i], writable);
		if (!dm || unpin(dm, refs[i], writable)) {
			rc = -EINVAL;
			continue;
		}
	}
	/* Release any dead domain whose last page went; cheap, the list is short. */
	for (struct sim_dommap *d = sg->doms, *next; d; d = next) {
		next = d->next;
		dommap_maybe_release(sg, d);
	}
	return rc;
}

static void contig_unpin(struct sim_dommap *dm, const grant_ref_t *refs, uint32_t n, int writable)
{
	for (uint32_t i = 0; i < n; i++)
		unpin(dm, refs[i], writable);
}

static int sim_map_contig(struct hv_gnttab *g, domid_t domid, uint32_t count,
			  const grant_ref_t *refs, unsigned prot, void **addr)
{
	struct sim_gnttab *sg = (struct sim_gnttab *)g;
	int writable = !!(prot & HV_PROT_WRITE);
	int mprot = PROT_READ | (writable ? PROT_WRITE : 0);
	struct sim_dommap *dm;
	struct sim_contig *c;
	uint8_t *region;
	uint32_t i;
	int rc;

	if (count > UINT32_MAX / HV_PAGE_SIZE)
		return -EINVAL;
	rc = dommap_get(sg, domid, &dm);
	if (rc)
		return rc;
	c = malloc(sizeof(*c) + count * sizeof(grant_ref_t));
	if (!c)
		return -ENOMEM;
	/* Reserve the whole range first so the per-page fixed mappings cannot hit anything. */
	region =
	    mmap(NULL, (size_t)count * HV_PAGE_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED) {
		rc = -errno;
		goto err_free;
	}
	for (i = 0; i < count; i++) {
		uint32_t frame;
		void *p;

		rc = pin(dm, refs[i], writable, &frame);
		if (rc)
			goto err_unpin;
		p = mmap(region + (size_t)i * HV_PAGE_SIZE, HV_PAGE_SIZE, mprot,
			 MAP_SHARED | MAP_FIXED, dm->mem_fd, (off_t)frame * HV_PAGE_SIZE);
		if (p == MAP_FAILED) {
			rc = -errno;
			unpin(dm, refs[i], writable);
			goto err_unpin;
		}
	}
	c->addr = region;
	c->count = count;
	c->writable = writable;
	c->dm = dm;
	memcpy(c->refs, refs, count * sizeof(grant_ref_t));
	c->next = sg->contigs;
	sg->contigs = c;
	*addr = region;
	return 0;

err_unpin:
	contig_unpin(dm, refs, i, writable);
	munmap(region, (size_t)count * HV_PAGE_SIZE);
err_free:
	free(c);
	return rc;
}

static void contig_release(struct sim_gnttab *sg, struct sim_contig *c)
{
	munmap(c->addr, (size_t)c->count * HV_PAGE_SIZE);
	contig_unpin(c->dm, c->refs, c->count, c->writable);
	dommap_maybe_release(sg, c->dm);
	free(c);
}

static int sim_unmap_contig(struct hv_gnttab *g, void *addr, uint32_t count)
{
	struct sim_gnttab *sg = (struct sim_gnttab *)g;

	for (struct sim_contig **pp = &sg->contigs; *pp; pp = &(*pp)->next) {
		struct sim_contig *c = *pp;

		if (c->addr != addr || c->count != count)
			continue;
		*pp = c->next;
		contig_release(sg, c);
		return 0;
	}
	return -EINVAL;
}

static void sim_gnttab_close(struct hv_gnttab *g)
{
	struct sim_gnttab *sg = (struct sim_gnttab *)g;

	while (sg->contigs) {
		struct sim_contig *c = sg->contigs;

		sg->contigs = c->next;
		contig_release(sg, c);
	}
	/* Pages still mapped: release their pins as closing gntdev would. */
	while (sg->doms) {
		struct sim_dommap *dm = sg->doms;

		if (dm->nr_pins)
			log_warn("d%u: gnttab handle closed with %" PRIu64 " grants still mapped",
				 dm->domid, dm->nr_pins);
		for (uint32_t r = 0; r < dm->view.nr_entries && dm->nr_pins; r++) {
			while (dm->pins[r] & HVSIM_LEDGER_MAX)
				unpin(dm, r, 0);
			while (dm->pins[r] / HVSIM_LEDGER_WR)
				unpin(dm, r, 1);
		}
		sg->doms = dm->next;
		dommap_free(dm);
	}
	hvsim_chan_close(&sg->chan);
	free(sg);
}

/* ---- event channels ---- */

enum { PEER_UNKNOWN = 0, PEER_KNOWN, PEER_NONE };

#define EVT_TOKEN_CONN 0 /* epoll data for the control connection; port 0 is never valid */
#define EVT_BATCH      16

struct sim_port {
	int bound;
	int recv_fd; /**< our receive eventfd */
	int peer_fd; /**< the peer's receive eventfd (PEER_KNOWN) */
	int peer;    /**< PEER_* */
};

struct sim_evtchn {
	struct hv_evtchn base;
	struct hvsim_chan chan;
	int epfd;
	int conn_dead;
	struct sim_port *ports;
	uint32_t nr_ports; /**< capacity of ports[] */
	struct epoll_event evbuf[EVT_BATCH];
	int ev_n, ev_pos;
};

static struct sim_port *evt_port(struct sim_evtchn *se, evtchn_port_t port)
{
	if (port == 0 || port >= se->nr_ports || !se->ports[port].bound)
		return NULL;
	return &se->ports[port];
}

static void evt_forget_peer(struct sim_port *p)
{
	if (p->peer == PEER_KNOWN)
		close(p->peer_fd);
	p->peer_fd = -1;
	p->peer = PEER_UNKNOWN;
}

static void evt_notice(void *arg, const struct hvsim_msg *m, size_t len)
{
	struct sim_evtchn *se = arg;
	struct hvsim_evtchn_msg n;
	struct sim_port *p;

	if (m->hdr.type != HVSIM_PEER_CHANGED || len != sizeof(m->hdr) + sizeof(n))
		return;
	memcpy(&n, m->payload, sizeof(n));
	p = evt_port(se, n.port);
	if (p)
		evt_forget_peer(p);
}

static int sim_evtchn_open(struct hv *hv, struct hv_evtchn **out)
{
	struct sim_hv *sh = sim_of(hv);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EVT_TOKEN_CONN};
	struct sim_evtchn *se;
	int rc;

	se = calloc(1, sizeof(*se));
	if (!se)
		return -ENOMEM;
	se->base.hv = hv;
	se->chan.notice = evt_notice;
	se->chan.arg = se;
	se->nr_ports = sh->max_ports;
	se->ports = calloc(se->nr_ports, sizeof(*se->ports));
	if (!se->ports) {
		rc = -ENOMEM;
		goto err_free;
	}
	rc = hvsim_chan_connect(&se->chan, sh->hv_path);
	if (rc)
		goto err_free;
	se->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (se->epfd < 0) {
		rc = -errno;
		goto err_chan;
	}
	if (epoll_ctl(se->epfd, EPOLL_CTL_ADD, se->chan.fd, &ev) < 0) {
		rc = -errno;
		goto err_ep;
	}
	*out = &se->base;
	return 0;

err_ep:
	close(se->epfd);
err_chan:
	hvsim_chan_close(&se->chan);
err_free:
	free(se->ports);
	free(se);
	return rc;
}

static void evt_port_drop(struct sim_evtchn *se, evtchn_port_t port)
{
	struct sim_port *p = &se->ports[port];

	epoll_ctl(se->epfd, EPOLL_CTL_DEL, p->recv_fd, NULL);
	close(p->recv_fd);
	evt_forget_peer(p);
	p->bound = 0;
	/* A buffered event of this port must not surface for a later port of the same number. */
	for (int i = se->ev_pos; i < se->ev_n; i++)
		if (se->evbuf[i].data.u64 == port)
			se->evbuf[i].data.u64 = UINT64_MAX;
}

static void sim_evtchn_close(struct hv_evtchn *e)
{
	struct sim_evtchn *se = (struct sim_evtchn *)e;

	for (uint32_t n = 1; n < se->nr_ports; n++)
		if (se->ports[n].bound)
			evt_port_drop(se, n);
	close(se->epfd);
	/* hvsimd unbinds every port of the connection when it closes. */
	hvsim_chan_close(&se->chan);
	free(se->ports);
	free(se);
}

static int sim_evtchn_fd(struct hv_evtchn *e)
{
	return ((struct sim_evtchn *)e)->epfd;
}

static int evt_arm(struct sim_evtchn *se, evtchn_port_t port, int op)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = port};

	return epoll_ctl(se->epfd, op, se->ports[port].recv_fd, &ev) < 0 ? -errno : 0;
}

/* Record a port hvsimd just gave us. Takes over the fds (closes them on failure). */
static int evt_port_add(struct sim_evtchn *se, evtchn_port_t port, int recv_fd, int peer_fd)
{
	struct sim_port *p;
	int rc;

	if (port == 0 || port >= se->nr_ports || se->ports[port].bound) {
		close(recv_fd);
		if (peer_fd >= 0)
			close(peer_fd);
		return -EPROTO;
	}
	p = &se->ports[port];
	p->recv_fd = recv_fd;
	p->peer_fd = peer_fd;
	p->peer = peer_fd >= 0 ? PEER_KNOWN : PEER_UNKNOWN;
	p->bound = 1;
	rc = evt_arm(se, port, EPOLL_CTL_ADD);
	if (rc) {
		struct hvsim_evtchn_msg req = {.port = port};

		evt_port_drop(se, port);
		hvsim_chan_call(&se->chan, HVSIM_EVTCHN_UNBIND, &req, sizeof(req), NULL, 0, NULL, 0,
				NULL, NULL, 0);
	}
	return rc;
}

static int sim_alloc_unbound(struct hv_evtchn *e, domid_t remote, evtchn_port_t *port)
{
	struct sim_evtchn *se = (struct sim_evtchn *)e;
	struct hvsim_evtchn_msg req = {.remote = remote}, rep;
	uint32_t got;
	int fd, rc;

	rc = hvsim_chan_call(&se->chan, HVSIM_EVTCHN_ALLOC_UNBOUND, &req, sizeof(req), NULL, 0,
			     &rep, sizeof(rep), &got, &fd, 1);
	if (rc)
		return rc;
	if (got != sizeof(rep)) {
		close(fd);
		return -EPROTO;
	}
	rc = evt_port_add(se, rep.port, fd, -1);
	if (!rc)
		*port = rep.port;
	return rc;
}

static int sim_bind_interdomain(struct hv_evtchn *e, domid_t remote, evtchn_port_t remote_port,
				evtchn_port_t *port)
{
	struct sim_evtchn *se = (struct sim_evtchn *)e;
	struct hvsim_evtchn_msg req = {.remote = remote, .port = remote_port}, rep;
	uint32_t got;
	int fds[2], rc;

	rc = hvsim_chan_call(&se->chan, HVSIM_EVTCHN_BIND_INTERDOMAIN, &req, sizeof(req), NULL, 0,
			     &rep, sizeof(rep), &got, fds, 2);
	if (rc)
		return rc;
	if (got != sizeof(rep)) {
		hvsim_close_fds(fds, 2);
		return -EPROTO;
	}
	rc = evt_port_add(se, rep.port, fds[0], fds[1]);
	if (!rc)
		*port = rep.port;
	return rc;
}

/* Bring the cached peer of @p up to date. Returns 0 or -errno (not -ENOTCONN). */
static int evt_peer_refresh(struct sim_evtchn *se, evtchn_port_t port, struct sim_port *p)
{
	struct hvsim_evtchn_msg req = {.port = port}, rep;
	uint32_t got;
	int fd, rc;

	/* A queued PEER_CHANGED may be news about this very port. */
	if (!se->conn_dead && hvsim_chan_drain(&se->chan) < 0)
		se->conn_dead = 1;
	if (p->peer != PEER_UNKNOWN || se->conn_dead)
		return 0;
	rc = hvsim_chan_call(&se->chan, HVSIM_EVTCHN_PEER, &req, sizeof(req), NULL, 0, &rep,
			     sizeof(rep), &got, &fd, 1);
	if (rc == -ENOTCONN) {
		p->peer = PEER_NONE;
		return 0;
	}
	if (rc)
		return rc;
	p->peer_fd = fd;
	p->peer = PEER_KNOWN;
	return 0;
}

static int sim_notify(struct hv_evtchn *e, evtchn_port_t port)
{
	struct sim_evtchn *se = (struct sim_evtchn *)e;
	struct sim_port *p = evt_port(se, port);
	uint64_t one = 1;
	int rc;

	if (!p)
		return -EINVAL;
	if (p->peer != PEER_KNOWN) {
		rc = evt_peer_refresh(se, port, p);
		if (rc)
			return rc;
		if (p->peer != PEER_KNOWN)
			return 0; /* unbound: dropped, as Xen drops a send with no receiver */
	}
	/* The eventfd counts; the receiver reads it to zero, so overflow cannot happen. */
	if (write(p->peer_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

static int sim_pending(struct hv_evtchn *e, evtchn_port_t *port)
{
	struct sim_evtchn *se = (struct sim_evtchn *)e;

	for (;;) {
		struct epoll_event ev;
		struct sim_port *p;
		uint64_t cnt;

		if (se->ev_pos == se->ev_n) {
			int n = epoll_wait(se->epfd, se->evbuf, EVT_BATCH, 0);

			if (n < 0)
				return errno == EINTR ? 0 : -errno;
			if (n == 0)
				return 0;
			se->ev_n = n;
			se->ev_pos = 0;
		}
		ev = se->evbuf[se->ev_pos++];
		if (ev.data.u64 == EVT_TOKEN_CONN) {
			if (hvsim_chan_drain(&se->chan) < 0 && !se->conn_dead) {
				/* hvsimd is gone: ports keep working on their eventfds, but
				 * stop polling a hung-up socket. */
				se->conn_dead = 1;
				epoll_ctl(se->epfd, EPOLL_CTL_DEL, se->chan.fd, NULL);
				log_warn("d%u: lost hvsimd; event channels run on without it",
					 se->base.hv->domid);
			}
			continue;
		}
		if (ev.data.u64 >= se->nr_ports)
			continue;
		p = evt_port(se, (evtchn_port_t)ev.data.u64);
		if (!p)
			continue;
		/* Clear the pending count; the port stays masked (one-shot) until unmask. */
		if (read(p->recv_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
			return -errno;
		*port = (evtchn_port_t)ev.data.u64;
		return 1;
	}
}

static int sim_unmask(struct hv_evtchn *e, evtchn_port_t port)
{
	struct sim_evtchn *se = (struct sim_evtchn *)e;

	if (!evt_port(se, port))
		return -EINVAL;
	/* Re-arming reports the eventfd at once if a notify arrived while masked. */
	return evt_arm(se, port, EPOLL_CTL_MOD);
}

static int sim_unbind(struct hv_evtchn *e, evtchn_port_t port)
{
	struct sim_evtchn *se = (struct sim_evtchn *)e;
	struct hvsim_evtchn_msg req = {.port = port}, rep;
	int rc;

	if (!evt_port(se, port))
		return -EINVAL;
	evt_port_drop(se, port);
	rc = hvsim_chan_call(&se->chan, HVSIM_EVTCHN_UNBIND, &req, sizeof(req), NULL, 0, &rep,
			     sizeof(rep), NULL, NULL, 0);
	/* Without hvsimd there is nothing left to unbind. */
	return rc == -EPIPE ? 0 : rc;
}

const struct hv_ops hv_sim_ops = {
    .close = sim_close,
    .gnttab_open = sim_gnttab_open,
    .gnttab_close = sim_gnttab_close,
    .map_contig = sim_map_contig,
    .unmap_contig = sim_unmap_contig,
    .map_pages = sim_map_pages,
    .unmap_pages = sim_unmap_pages,
    .evtchn_open = sim_evtchn_open,
    .evtchn_close = sim_evtchn_close,
    .evtchn_fd = sim_evtchn_fd,
    .alloc_unbound = sim_alloc_unbound,
    .bind_interdomain = sim_bind_interdomain,
    .notify = sim_notify,
    .pending = sim_pending,
    .unmask = sim_unmask,
    .unbind = sim_unbind,
};
