/*
 * overlay.c - what readers must see that the last checkpoint does not hold yet.
 *
 * The writer applies acknowledged writes to an LMDB transaction it commits only at checkpoints,
 * and readers read committed snapshots. Until the checkpoint, the overlay holds the difference:
 * per volume, block -> content name (zeros for a zero block) and discarded ranges; store-wide,
 * content name -> location of every block stored since the checkpoint. Both are small (bounded
 * by the checkpoint interval) open-addressing tables.
 *
 * Locking: readers look up with rd_lock shared, for as long as they use their LMDB snapshot;
 * the writer changes the tables with rd_lock exclusive, and clears them at a checkpoint only
 * after the commit, so a reader sees each acknowledged write in the overlay or in its snapshot.
 */
#include "dedup/dedup_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define OVL_EMPTY UINT64_MAX

struct ovl_slot {
	uint64_t lba; /**< OVL_EMPTY: free */
	uint8_t hash[HASH_BYTES];
};

struct ovl_cslot {
	uint8_t hash[HASH_BYTES];
	uint64_t loc; /**< 0: free (no container has id 0) */
};

struct ovl_range {
	uint64_t lo, hi;
};

struct vstate {
	char name[DEDUP_NAME_MAX + 1];
	struct ovl_slot *tab;
	uint32_t cap, used;
	struct ovl_range *tomb;
	unsigned ntomb, cap_tomb;
	struct vstate *next;
};

struct ovl {
	struct vstate *vols;
	struct ovl_cslot *ctab;
	uint32_t ccap, cused;
};

static uint32_t lba_slot(uint64_t lba, uint32_t cap)
{
	return (uint32_t)((lba * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

static uint32_t hash_slot(const uint8_t *h, uint32_t cap)
{
	uint32_t x;

	memcpy(&x, h, sizeof(x)); /* a SHA-256 prefix is uniform already */
	return x & (cap - 1);
}

int ovl_init(struct dedup_store *s)
{
	s->ovl = calloc(1, sizeof(*s->ovl));
	return s->ovl ? 0 : -ENOMEM;
}

void ovl_free(struct dedup_store *s)
{
	struct vstate *vs, *next;

	if (!s->ovl)
		return;
	for (vs = s->ovl->vols; vs; vs = next) {
		next = vs->next;
		free(vs->tab);
		free(vs->tomb);
		free(vs);
	}
	free(s->ovl->ctab);
	free(s->ovl);
	s->ovl = NULL;
}

/* The volume's overlay, made on first use; lives until the store closes. Under vol_lock. */
struct vstate *ovl_vstate(struct dedup_store *s, const char *name)
{
	struct vstate *vs;

	for (vs = s->ovl->vols; vs; vs = vs->next)
		if (strcmp(vs->name, name) == 0)
			return vs;
	vs = calloc(1, sizeof(*vs));
	if (!vs)
		return NULL;
	strncpy(vs->name, name, DEDUP_NAME_MAX);
	/* published under rd_lock: readers may walk nothing of it yet, the writer links it */
	pthread_rwlock_wrlock(&s->rd_lock);
	vs->next = s->ovl->vols;
	s->ovl->vols = vs;
	pthread_rwlock_unlock(&s->rd_lock);
	return vs;
}

/* ---- readers (rd_lock shared) ---------------------------------------------------------------- */

/* 1 and the name in @out if the overlay knows block @lba (zeros: a zero block), else 0. */
int ovl_lookup_blk(const struct vstate *vs, uint64_t lba, uint8_t out[HASH_BYTES])
{
	if (vs->used) {
		for (uint32_t i = lba_slot(lba, vs->cap);; i = (i + 1) & (vs->cap - 1)) {
			const struct ovl_slot *e = &vs->tab[i];

			if (e->lba == OVL_EMPTY)
				break;
			if (e->lba == lba) {
				memcpy(out, e->hash, HASH_BYTES);
				return 1;
			}
		}
	}
	for (unsigned i = 0; i < vs->ntomb; i++) {
		if (lba >= vs->tomb[i].lo && lba < vs->tomb[i].hi) {
			memset(out, 0, HASH_BYTES);
			return 1;
		}
	}
	return 0;
}

/* 1 and the location if the content was stored since the checkpoint, else 0. */
int ovl_lookup_content(const struct dedup_store *s, const uint8_t *h, uint64_t *loc)
{
	const struct ovl *o = s->ovl;

	if (!o->cused)
		return 0;
	for (uint32_t i = hash_slot(h, o->ccap);; i = (i + 1) & (o->ccap - 1)) {
		const struct ovl_cslot *e = &o->ctab[i];

		if (!e->loc)
			return 0;
		if (memcmp(e->hash, h, HASH_BYTES) == 0) {
			*loc = e->loc;
			return 1;
		}
	}
}

/* ---- the writer (rd_lock exclusive) ---------------------------------------------------------- */

static void blk_put(struct vstate *vs, uint64_t lba, const uint8_t *h)
{
	uint32_t i;

	for (i = lba_slot(lba, vs->cap); vs->tab[i].lba != OVL_EMPTY; i = (i + 1) & (vs->cap - 1)) {
		if (vs->tab[i].lba == lba) {
			memcpy(vs->tab[i].hash, h, HASH_BYTES);
			return;
		}
	}
	vs->tab[i].lba = lba;
	memcpy(vs->tab[i].hash, h, HASH_BYTES);
	vs->used++;
}

/* Room for @more new blocks at under half load, so a probe always ends. */
int ovl_reserve_blk(struct vstate *vs, uint32_t more)
{
	struct ovl_slot *old = vs->tab, *tab;
	uint32_t cap = vs->cap ? vs->cap : 1024, ocap = vs->cap;

	while ((uint64_t)(vs->used + more) * 2 > cap)
		cap *= 2;
	if (cap == vs->cap)
		return 0;
	tab = malloc((size_t)cap * sizeof(*tab));
	if (!tab)
		return -ENOMEM;
	for (uint32_t i = 0; i < cap; i++)
		tab[i].lba = OVL_EMPTY;
	vs->tab = tab;
	vs->cap = cap;
	vs->used = 0;
	for (uint32_t i = 0; i < ocap; i++)
		if (old[i].lba != OVL_EMPTY)
			blk_put(vs, old[i].lba, old[i].hash);
	free(old);
	return 0;
}

/* Block @lba now holds @h (reserved before). */
void ovl_set_blk(struct vstate *vs, uint64_t lba, const uint8_t *h)
{
	blk_put(vs, lba, h);
}

/* Blocks [lo, hi) were discarded: older overlay entries in it go, the range reads as zeros. */
int ovl_discard(struct vstate *vs, uint64_t lo, uint64_t hi)
{
	if (vs->ntomb == vs->cap_tomb) {
		unsigned cap = vs->cap_tomb ? vs->cap_tomb * 2 : 8;
		struct ovl_range *t = realloc(vs->tomb, cap * sizeof(*t));

		if (!t)
			return -ENOMEM;
		vs->tomb = t;
		vs->cap_tomb = cap;
	}
	if (vs->used) {
		/* rebuild without the covered blocks (discards are rare, the table small) */
		struct ovl_slot *old = vs->tab;
		uint32_t cap = vs->cap;
		struct ovl_slot *tab = malloc((size_t)cap * sizeof(*tab));

		if (!tab)
			return -ENOMEM;
		for (uint32_t i = 0; i < cap; i++)
			tab[i].lba = OVL_EMPTY;
		vs->tab = tab;
		vs->used = 0;
		for (uint32_t i = 0; i < cap; i++)
			if (old[i].lba != OVL_EMPTY && (old[i].lba < lo || old[i].lba >= hi))
				blk_put(vs, old[i].lba, old[i].hash);
		free(old);
	}
	vs->tomb[vs->ntomb++] = (struct ovl_range){ lo, hi };
	return 0;
}

unsigned ovl_tombstones(const struct vstate *vs)
{
	return vs->ntomb;
}

static void content_put_slot(struct ovl *o, const uint8_t *h, uint64_t loc)
{
	uint32_t i;

	for (i = hash_slot(h, o->ccap); o->ctab[i].loc; i = (i + 1) & (o->ccap - 1))
		if (memcmp(o->ctab[i].hash, h, HASH_BYTES) == 0)
			return; /* the first copy stays the indexed one */
	memcpy(o->ctab[i].hash, h, HASH_BYTES);
	o->ctab[i].loc = loc;
	o->cused++;
}

int ovl_reserve_content(struct dedup_store *s, uint32_t more)
{
	struct ovl *o = s->ovl;
	struct ovl_cslot *old = o->ctab, *tab;
	uint32_t cap = o->ccap ? o->ccap : 1024, ocap = o->ccap;

	while ((uint64_t)(o->cused + more) * 2 > cap)
		cap *= 2;
	if (cap == o->ccap)
		return 0;
	tab = calloc(cap, sizeof(*tab));
	if (!tab)
		return -ENOMEM;
	o->ctab = tab;
	o->ccap = cap;
	o->cused = 0;
	for (uint32_t i = 0; i < ocap; i++)
		if (old[i].loc)
			content_put_slot(o, old[i].hash, old[i].loc);
	free(old);
	return 0;
}

/* Content @h is stored at @loc (reserved before). */
void ovl_add_content(struct dedup_store *s, const uint8_t *h, uint64_t loc)
{
	content_put_slot(s->ovl, h, loc);
}

/* After a checkpoint committed: everything is in the snapshots now. */
void ovl_clear(struct dedup_store *s)
{
	struct ovl *o = s->ovl;

	for (struct vstate *vs = o->vols; vs; vs = vs->next) {
		for (uint32_t i = 0; vs->used && i < vs->cap; i++)
			vs->tab[i].lba = OVL_EMPTY;
		vs->used = 0;
		vs->ntomb = 0;
	}
	if (o->cused)
		memset(o->ctab, 0, (size_t)o->ccap * sizeof(*o->ctab));
	o->cused = 0;
}
