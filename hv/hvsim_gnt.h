/*
 * hvsim_gnt.h - the sim's grant tables: the shared-memory layout and the operations that
 * stand in for Xen's grant-table hypercalls, run by whichever process maps.
 *
 * Per guest domain hvsimd creates two memfds:
 *   - the grant table: nr_entries grant_entry_v1_t, shared read-write with the guest process
 *     and with dom0 processes. The guest writes entries exactly as a Xen guest does; mappers
 *     set and clear GTF_reading / GTF_writing as Xen does.
 *   - the active table: struct hvsim_gnt_active_hdr and one u32 per entry, shared only with dom0
 *     processes (the guest never sees it, as it never sees Xen's active grant entries). Each
 *     word packs a lock bit and the reader and writer pin counts of the entry.
 * Every mapper is a dom0 process and trusted to follow this protocol; the guest is not trusted:
 * whatever it writes into its grant table, these functions return an error, never crash, and
 * never hand out a frame outside the guest's memory.
 */
#ifndef SLUICE_HV_HVSIM_GNT_H
#define SLUICE_HV_HVSIM_GNT_H

#include <stdint.h>

#include <xen/xen.h>
#include <xen/grant_table.h>

#define HVSIM_GNT_MAGIC	  0x48564754u /**< "HVGT" */
#define HVSIM_GNT_ENTRIES 65536u /**< grant entries per guest (Xen's default max is 64 frames) */

/* The active word of one entry. */
#define HVSIM_ACT_LOCK	   (1u << 31)
#define HVSIM_ACT_RD_SHIFT 0
#define HVSIM_ACT_RD_MASK  0x7fffu /**< reader (read-only map) pins, bits 0..14 */
#define HVSIM_ACT_WR_SHIFT 15
#define HVSIM_ACT_WR_MASK  0xffffu /**< writer (writable map) pins, bits 15..30 */

/*
 * A pin ledger: one u32 per entry, counting the pins one mapper (a dom0 gnttab handle) holds,
 * in units of HVSIM_LEDGER_RD (read-only maps, low 16 bits) and HVSIM_LEDGER_WR (writable,
 * high 16 bits). hvsimd hands each handle one per domain, shared, and releases what it records
 * when the handle's connection closes, so a mapper that dies does not leave grants pinned.
 * A mapper records a pin only after taking it and forgets it before dropping it: a crash in
 * between leaks a pin but never makes hvsimd release one twice.
 */
#define HVSIM_LEDGER_RD	 1u
#define HVSIM_LEDGER_WR	 0x10000u
#define HVSIM_LEDGER_MAX 0xffffu

static inline uint64_t hvsim_gnt_ledger_bytes(uint32_t nr_entries)
{
	return (uint64_t)nr_entries * sizeof(uint32_t);
}

/** Header of the active table; entries start at HVSIM_GNT_ACTIVE_OFF. */
struct hvsim_gnt_active_hdr {
	uint32_t magic;	     /**< HVSIM_GNT_MAGIC */
	uint32_t domid;	     /**< the granting domain */
	uint32_t nr_entries; /**< entries in the grant table */
	uint32_t alive;	     /**< 1 while the domain exists; hvsimd stores 0 when it is destroyed */
	uint64_t mem_frames; /**< 4 KiB frames of guest memory */
	uint64_t instance;   /**< unique per domain lifetime */
};

#define HVSIM_GNT_ACTIVE_OFF 64u

/** Bytes of each memfd for @nr_entries entries. */
static inline uint64_t hvsim_gnt_table_bytes(uint32_t nr_entries)
{
	return (uint64_t)nr_entries * sizeof(grant_entry_v1_t);
}

static inline uint64_t hvsim_gnt_active_bytes(uint32_t nr_entries)
{
	return HVSIM_GNT_ACTIVE_OFF + (uint64_t)nr_entries * sizeof(uint32_t);
}

/** A domain's tables as mapped by one process. */
struct hvsim_gnt_view {
	grant_entry_v1_t *table;	  /**< the shared grant table */
	struct hvsim_gnt_active_hdr *hdr; /**< the active table (NULL in a guest process) */
	uint32_t *active;		  /**< hdr's entries */
	uint32_t nr_entries;
	uint64_t mem_frames;
};

/**
 * Pin grant @ref of the view's domain for domain @mapper, as GNTTABOP_map_grant_ref does:
 * check the entry, set GTF_reading (and GTF_writing if @writable) and count the pin. On success
 * *frame is the granted frame (< mem_frames), read once; the caller must use this value, not
 * the entry's, which the guest may change at any time.
 * Returns 0, -EINVAL (ref outside the table), -ESRCH (domain destroyed), -EPERM (entry does not
 * permit access), -EACCES (granted to another domain), -EROFS (read-only grant, writable map),
 * -EFAULT (frame outside guest memory), -EOVERFLOW (pin count would overflow).
 */
int hvsim_gnt_map(struct hvsim_gnt_view *v, grant_ref_t ref, domid_t mapper, int writable,
		  uint32_t *frame);

/**
 * Drop one pin taken by hvsim_gnt_map(@ref, @writable); the last writable pin clears
 * GTF_writing, the last pin clears GTF_reading. Works on a destroyed domain too (its mappings
 * outlive it, like a Xen zombie domain). Returns 0 or -EINVAL (bad ref, or no such pin).
 */
int hvsim_gnt_unmap(struct hvsim_gnt_view *v, grant_ref_t ref, int writable);

/**
 * Release every pin recorded in @ledger (a dead mapper's), clearing the ledger as it goes.
 * Never waits long: an entry whose lock stays taken (its holder died inside the few
 * instructions it holds it) is skipped. Returns the number of pins released, or -EDEADLK if
 * some entry had to be skipped.
 */
int hvsim_gnt_release_ledger(struct hvsim_gnt_view *v, uint32_t *ledger);

/**
 * Guest side: grant @frame to @domid, exactly as a Xen guest writes its entry. The entry must
 * be free (the caller's allocator owns it). Returns 0 or -EINVAL (ref outside the table).
 */
int hvsim_gnt_grant(grant_entry_v1_t *table, uint32_t nr_entries, grant_ref_t ref, domid_t domid,
		    uint32_t frame, int readonly);

/**
 * Guest side: end foreign access to @ref (gnttab_end_foreign_access_ref): clear the entry
 * unless a mapper holds it. Returns 0, -EBUSY (GTF_reading or GTF_writing set: still mapped,
 * entry unchanged) or -EINVAL (ref outside the table).
 */
int hvsim_gnt_end_access(grant_entry_v1_t *table, uint32_t nr_entries, grant_ref_t ref);

/** Read an entry's flags with the same atomicity the operations above use (tests, tools). */
uint16_t hvsim_gnt_flags(const grant_entry_v1_t *table, grant_ref_t ref);

#endif
