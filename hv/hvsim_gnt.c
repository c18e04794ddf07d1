/*
 * hvsim_gnt.c - grant map/unmap on shared memory, the sim's GNTTABOP_map_grant_ref.
 *
 * Two parties touch an entry's flags concurrently: the guest (grant, end access) and mappers
 * (set/clear GTF_reading and GTF_writing). Both change the flags+domid word only with atomic
 * compare-and-exchange (or atomic and), so exactly one of "guest ends access" and "mapper sets
 * GTF_reading" wins: either the mapper then sees the entry invalid (-EPERM), or the guest sees
 * GTF_reading and keeps the grant (-EBUSY). Mappers serialise among themselves on the entry's
 * lock bit in the active table, which also guards the pin counts, so "last unmap clears the
 * bits" and "first map sets them" cannot interleave.
 */
#include "hv/hvsim_gnt.h"

#include <errno.h>
#include <sched.h>
#include <stddef.h>

/* The first 32 bits of an entry, flags then domid, read and written as one atomic word. */
union gnt_word {
	uint32_t w;
	struct {
		uint16_t flags;
		domid_t domid;
	} s;
};

_Static_assert(offsetof(grant_entry_v1_t, flags) == 0, "grant entry layout");
_Static_assert(offsetof(grant_entry_v1_t, domid) == 2, "grant entry layout");
_Static_assert(sizeof(grant_entry_v1_t) == 8, "grant entry layout");

typedef uint32_t __attribute__((may_alias)) gnt_word_t;

static gnt_word_t *entry_word(const grant_entry_v1_t *e)
{
	return (gnt_word_t *)(uintptr_t)e;
}

static uint32_t flags_word(uint16_t flags)
{
	union gnt_word m = {.s = {.flags = flags, .domid = 0}};

	return m.w;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/*
 * Take the entry's lock bit; *out gets the word as it was (lock clear). Holders keep it for a
 * few instructions, so spin, yielding now and then in case the holder was preempted. With
 * @max_spins 0 wait for as long as it takes; else give up after that many tries (-EDEADLK).
 */
static int act_lock_bounded(uint32_t *act, unsigned max_spins, uint32_t *out)
{
	uint32_t a = __atomic_load_n(act, __ATOMIC_RELAXED);
	unsigned spins = 0;

	for (;;) {
		/* Acquire: pairs with act_unlock's release, so we see the previous holder's pin
		 * counts and its flag updates. */
		if (!(a & HVSIM_ACT_LOCK) &&
		    __atomic_compare_exchange_n(act, &a, a | HVSIM_ACT_LOCK, 1, __ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED)) {
			*out = a;
			return 0;
		}
		if (++spins == max_spins)
			return -EDEADLK;
		if (spins % 128 == 0)
			sched_yield();
		else
			cpu_relax();
		a = __atomic_load_n(act, __ATOMIC_RELAXED);
	}
}

static uint32_t act_lock(uint32_t *act)
{
	uint32_t a = 0;

	act_lock_bounded(act, 0, &a);
	return a;
}

static void act_unlock(uint32_t *act, uint32_t a)
{
	/* Release: our pin-count and flag updates are visible before the next holder's. */
	__atomic_store_n(act, a & ~HVSIM_ACT_LOCK, __ATOMIC_RELEASE);
}

static uint32_t act_rd(uint32_t a)
{
	return (a >> HVSIM_ACT_RD_SHIFT) & HVSIM_ACT_RD_MASK;
}

static uint32_t act_wr(uint32_t a)
{
	return (a >> HVSIM_ACT_WR_SHIFT) & HVSIM_ACT_WR_MASK;
}

static uint32_t act_pack(uint32_t rd, uint32_t wr)
{
	return (rd << HVSIM_ACT_RD_SHIFT) | (wr << HVSIM_ACT_WR_SHIFT);
}

static void clear_flags(grant_entry_v1_t *e, uint16_t bits)
{
	/*
	 * Release: the mapper's last accesses to the page happen before the guest can see the
	 * bits clear, end access and reuse the frame.
	 */
	__atomic_fetch_and(entry_word(e), ~flags_word(bits), __ATOMIC_RELEASE);
}

int hvsim_gnt_map(struct hvsim_gnt_view *v, grant_ref_t ref, domid_t mapper, int writable,
		  uint32_t *frame)
{
	grant_entry_v1_t *e;
	uint32_t *act, a, rd, wr, f;
	union gnt_word old, new;
	int rc;

	if (ref >= v->nr_entries)
		return -EINVAL;
	/* Acquire: pairs with hvsimd's release store of 0 when it destroys the domain. */
	if (!__atomic_load_n(&v->hdr->alive, __ATOMIC_ACQUIRE))
		return -ESRCH;
	e = &v->table[ref];
	act = &v->active[ref];
	a = act_lock(act);
	rd = act_rd(a);
	wr = act_wr(a);
	if (writable ? wr == HVSIM_ACT_WR_MASK : rd == HVSIM_ACT_RD_MASK) {
		rc = -EOVERFLOW;
		goto out_unlock;
	}

	old.w = __atomic_load_n(entry_word(e), __ATOMIC_RELAXED);
	for (;;) {
		if ((old.s.flags & GTF_type_mask) != GTF_permit_access) {
			rc = -EPERM;
			goto out_unlock;
		}
		if (old.s.domid != mapper) {
			rc = -EACCES;
			goto out_unlock;
		}
		if (writable && (old.s.flags & GTF_readonly)) {
			rc = -EROFS;
			goto out_unlock;
		}
		new = old;
		new.s.flags |= GTF_reading | (writable ? GTF_writing : 0);
		/*
		 * Acquire on success: pairs with the guest's release store in hvsim_gnt_grant, so
		 * having seen GTF_permit_access we read the frame the guest wrote before it. A
		 * failed exchange means the guest changed the entry: check it again.
		 */
		if (__atomic_compare_exchange_n(entry_word(e), &old.w, new.w, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED))
			break;
	}

	/* Read once: the guest may rewrite the frame at any time; we use this value only. */
	f = __atomic_load_n(&e->frame, __ATOMIC_RELAXED);
	if (f >= v->mem_frames) {
		uint16_t undo = 0;

		if (rd + wr == 0)
			undo |= GTF_reading;
		if (writable && wr == 0)
			undo |= GTF_writing;
		if (undo)
			clear_flags(e, undo);
		rc = -EFAULT;
		goto out_unlock;
	}
	if (writable)
		wr++;
	else
		rd++;
	*frame = f;
	act_unlock(act, act_pack(rd, wr));
	return 0;

out_unlock:
	act_unlock(act, a);
	return rc;
}

/* Drop @nr_rd read-only and @nr_wr writable pins of @ref, the lock taken as @a. */
static int unpin_locked(struct hvsim_gnt_view *v, grant_ref_t ref, uint32_t a, uint32_t nr_rd,
			uint32_t nr_wr)
{
	uint32_t *act = &v->active[ref];
	uint32_t rd = act_rd(a), wr = act_wr(a);
	uint16_t clear = 0;

	if (rd < nr_rd || wr < nr_wr) {
		act_unlock(act, a);
		return -EINVAL;
	}
	rd -= nr_rd;
	wr -= nr_wr;
	if (wr == 0)
		clear |= GTF_writing;
	if (rd + wr == 0)
		clear |= GTF_reading;
	if (clear)
		clear_flags(&v->table[ref], clear);
	act_unlock(act, act_pack(rd, wr));
	return 0;
}

int hvsim_gnt_release_ledger(struct hvsim_gnt_view *v, uint32_t *ledger)
{
	int released = 0, stuck = 0;

	for (grant_ref_t ref = 0; ref < v->nr_entries; ref++) {
		uint32_t l = __atomic_load_n(&ledger[ref], __ATOMIC_RELAXED), a;
		uint32_t nr_rd = l & HVSIM_LEDGER_MAX, nr_wr = l / HVSIM_LEDGER_WR;

		if (!l)
			continue;
		if (act_lock_bounded(&v->active[ref], 1u << 20, &a)) {
			stuck = 1;
			continue;
		}
		/* The dead mapper's pins are a part of the entry's; never take more than there are.
		 */
		if (nr_rd > act_rd(a))
			nr_rd = act_rd(a);
		if (nr_wr > act_wr(a))
			nr_wr = act_wr(a);
		unpin_locked(v, ref, a, nr_rd, nr_wr);
		__atomic_store_n(&ledger[ref], 0, __ATOMIC_RELAXED);
		released += (int)(nr_rd + nr_wr);
	}
	return stuck ? -EDEADLK : released;
}

int hvsim_gnt_unmap(struct hvsim_gnt_view *v, grant_ref_t ref, int writable)
{
	uint32_t a;

	if (ref >= v->nr_entries)
		return -EINVAL;
	a = act_lock(&v->active[ref]);
	return unpin_locked(v, ref, a, writable ? 0 : 1, writable ? 1 : 0);
}

int hvsim_gnt_grant(grant_entry_v1_t *table, uint32_t nr_entries, grant_ref_t ref, domid_t domid,
		    uint32_t frame, int readonly)
{
	grant_entry_v1_t *e;
	union gnt_word w;

	if (ref >= nr_entries)
		return -EINVAL;
	e = &table[ref];
	__atomic_store_n(&e->frame, frame, __ATOMIC_RELAXED);
	w.s.flags = GTF_permit_access | (readonly ? GTF_readonly : 0);
	w.s.domid = domid;
	/*
	 * Xen's order is domid, frame, wmb, flags. We publish domid and flags in one word, and the
	 * release store is the wmb: a mapper that sees GTF_permit_access also sees this frame
	 * (pairs with the acquire exchange in hvsim_gnt_map).
	 */
	__atomic_store_n(entry_word(e), w.w, __ATOMIC_RELEASE);
	return 0;
}

int hvsim_gnt_end_access(grant_entry_v1_t *table, uint32_t nr_entries, grant_ref_t ref)
{
	union gnt_word old, new;
	gnt_word_t *w;

	if (ref >= nr_entries)
		return -EINVAL;
	w = entry_word(&table[ref]);
	old.w = __atomic_load_n(w, __ATOMIC_RELAXED);
	do {
		if (old.s.flags & (GTF_reading | GTF_writing))
			return -EBUSY;
		new = old;
		new.s.flags = 0;
		/*
		 * Acquire on success: pairs with clear_flags' release, so the mapper's last access
		 * to the page happened before we reuse it. The exchange fails (and we look again)
		 * if a mapper set GTF_reading since our load.
		 */
	} while (
	    !__atomic_compare_exchange_n(w, &old.w, new.w, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
	return 0;
}

uint16_t hvsim_gnt_flags(const grant_entry_v1_t *table, grant_ref_t ref)
{
	union gnt_word w;

	w.w = __atomic_load_n(entry_word(&table[ref]), __ATOMIC_ACQUIRE);
	return w.s.flags;
}
