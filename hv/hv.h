/*
 * hv.h - the hypervisor interface the backend and the guests use.
 *
 * Shaped after libxengnttab / libxenevtchn so that blkback code reads like a real Xen backend.
 * Two implementations behind one ops table, chosen at run time:
 *   - HV_KIND_SIM: the userspace hypervisor hvsimd (DIR/hv.sock for dom0,
 *     DIR/domains/<domid>/hv.sock for a guest);
 *   - HV_KIND_XEN: the real libxengnttab / libxenevtchn of libxen-dev, for a real dom0.
 * xenstore is not here: both modes use the real libxenstore (xs_open with XENSTORED_PATH set
 * to DIR/xenstore.sock in the sim; see hv_xenstore_path()).
 *
 * Handles: struct hv is a context (which hypervisor, which domain we are). Grant-table and
 * event-channel handles are opened from it; like their libxen counterparts each is used by one
 * thread at a time. A context may be shared by threads (its own calls are serialised inside).
 * All functions return 0 (or a count) on success and a negative errno on failure; none
 * returns a positive errno. hv_strerror() gives the sentence for an error. docs/hv.md says
 * how the sim maps onto Xen and where it differs.
 */
#ifndef SLUICE_HV_HV_H
#define SLUICE_HV_HV_H

#include <stddef.h>
#include <stdint.h>

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/event_channel.h>

#define HV_PAGE_SIZE  4096u
#define HV_PAGE_SHIFT 12

enum hv_kind {
	HV_KIND_SIM = 0, /**< hvsimd in userspace (default) */
	HV_KIND_XEN = 1, /**< real Xen through libxengnttab / libxenevtchn */
};

struct hv;
struct hv_gnttab;
struct hv_evtchn;

/*
 * ---- Context ----
 */

/**
 * Open a dom0 (privileged, backend-side) context.
 * @kind: HV_KIND_SIM or HV_KIND_XEN.
 * @dir: the sim's directory (hvsimd --dir); ignored for XEN.
 * Errors: -ENOENT / -ECONNREFUSED when hvsimd is not running in @dir; -ENODEV for XEN without
 * /dev/xen ("no Xen hypervisor found; use the sim"); -EINVAL for SIM without @dir;
 * -ENAMETOOLONG when @dir is too long for its socket paths; -EPROTO for a socket that does not
 * speak hvsimd's protocol.
 */
int hv_open(struct hv **out, enum hv_kind kind, const char *dir);

/**
 * Open a guest context for @domain (a name or a decimal domid) of the sim in @dir. The first
 * guest context of a domain creates the guest's memory (a memfd of the domain's --mem size) and
 * registers it with hvsimd; a later one (after the first process exited) gets the same memory
 * and grant table back, and reclaims the grant entries nobody has mapped (entries a backend
 * still maps, and their frames, stay allocated until a later hv_guest_alloc_gref finds them
 * unmapped). Grant refs below GNTTAB_NR_RESERVED_ENTRIES are the toolstack's, never handed out.
 * Errors: -EBUSY while another live context holds the domain's guest side; -ESRCH no such
 * domain; -ENOENT hvsimd is not running in @dir; -EINVAL a malformed name or domid.
 * Guest contexts exist only in the sim: HV kind XEN has no guest side (the hv_guest_* calls on
 * a XEN context return -EOPNOTSUPP, 0 or NULL). A guest context cannot open a gnttab handle
 * (-EOPNOTSUPP): mapping is dom0's.
 */
int hv_guest_open(struct hv **out, const char *dir, const char *domain);

/** Close a context; every handle opened from it must be closed first. */
void hv_close(struct hv *hv);

/** The domid this context acts as (0 for dom0). */
domid_t hv_domid(const struct hv *hv);

/** The kind of this context. */
enum hv_kind hv_kind(const struct hv *hv);

/**
 * The xenstore socket path for this context (sim: DIR/xenstore.sock for dom0,
 * DIR/domains/<domid>/xenstore.sock for a guest), or NULL for XEN (use the default).
 * Callers put it in XENSTORED_PATH or pass it to hv_xs_open().
 */
const char *hv_xenstore_path(const struct hv *hv);

/**
 * Open libxenstore on this context's xenstore (a struct xs_handle *), or NULL with errno set.
 * Sim: libxenstore reads XENSTORED_PATH from the process environment inside xs_open, so this
 * sets it for the call and restores it after, under a lock that serialises hv_xs_open callers;
 * another thread calling setenv/getenv at that moment is not protected (the environment is
 * process-global). Xen: xs_open(0).
 */
struct xs_handle *hv_xs_open(const struct hv *hv);

/** Parse "sim" / "xen" into *kind. Returns 0 or -EINVAL. */
int hv_kind_parse(const char *s, enum hv_kind *kind);

/** A sentence for an error returned by any hv_* function (grant refusals name their reason). */
const char *hv_strerror(int err);

/*
 * ---- Grant tables, mapping side (backend; like xengnttab) ----
 *
 * A map succeeds only if the guest's entry has type GTF_permit_access, names the mapping domain,
 * and (for a writable map) lacks GTF_readonly. While mapped, GTF_reading (and GTF_writing for a
 * writable map) are set in the guest's entry; the last unmap clears them. A read-only map is
 * mapped PROT_READ: a store faults. Mappings belong to the handle that made them: unmap through
 * it; closing it releases whatever it still maps (its addresses become invalid), as closing
 * /dev/xen/gntdev does, and so does the process's death (the sim's hvsimd sees the handle's
 * connection drop). A mapping outlives the domain's destruction until unmapped. Refusals:
 *   -EINVAL  bad grant reference (outside the table)
 *   -EPERM   entry does not permit access (not granted, or wrong type)
 *   -EACCES  granted to another domain
 *   -EROFS   read-only grant mapped writable
 *   -EFAULT  granted frame outside the guest's memory
 *   -ESRCH   no such domain, or it was destroyed
 *   -ENXIO   the guest has not registered memory yet
 *   -EOVERFLOW  the entry is pinned too many times (sim: 32767 read-only / 65535 writable)
 * and -EINVAL for a @prot that is not HV_PROT_READ, optionally | HV_PROT_WRITE.
 */

#define HV_PROT_READ  1u
#define HV_PROT_WRITE 2u

int hv_gnttab_open(struct hv *hv, struct hv_gnttab **out);
void hv_gnttab_close(struct hv_gnttab *g);

/**
 * Map @count grant refs of @domid into one virtually contiguous region (like
 * xengnttab_map_domain_grant_refs): all or nothing. Used for multi-page rings.
 * On success *addr is the region; unmap it with hv_gnttab_unmap_contig(g, *addr, count).
 */
int hv_gnttab_map_contig(struct hv_gnttab *g, domid_t domid, uint32_t count,
			 const grant_ref_t *refs, unsigned prot, void **addr);
int hv_gnttab_unmap_contig(struct hv_gnttab *g, void *addr, uint32_t count);

/**
 * Map @count grant refs of @domid as separate pages (like the kernel's gnttab_map_refs): each
 * page gets its own address in addrs[i] and status in status[i] (0 or a negative errno above).
 * Returns the number of pages that failed (0 when all mapped). Pages that mapped must be
 * unmapped with hv_gnttab_unmap_pages, also when others failed. This is the data-path call:
 * in the sim it makes no system call.
 */
int hv_gnttab_map_pages(struct hv_gnttab *g, domid_t domid, uint32_t count, const grant_ref_t *refs,
			unsigned prot, void **addrs, int *status);

/**
 * Unmap pages mapped by hv_gnttab_map_pages (same handle, domid, refs, prot and addresses; any
 * subset, in any grouping). Returns 0, or -EINVAL when some page was not mapped so by this
 * handle (the others are still unmapped).
 */
int hv_gnttab_unmap_pages(struct hv_gnttab *g, domid_t domid, uint32_t count,
			  const grant_ref_t *refs, unsigned prot, void *const *addrs);

/*
 * ---- Grant tables, granting side (guest; the sim only) ----
 *
 * A guest grants a page by writing its own grant entry exactly as a Xen guest does: domid and
 * frame, a write barrier, then flags. Frames are indices of 4 KiB pages of the guest's memory.
 */

/** Number of grant entries in this guest's table (>= 16384). */
uint32_t hv_guest_nr_grants(const struct hv *hv);

/** The guest's memory: base address and size in bytes; frame N is at base + N * 4096. */
void *hv_guest_mem(const struct hv *hv, size_t *len_bytes);

/**
 * Allocate @count contiguous free frames of guest memory; *frame is the first. -ENOMEM if no
 * run is free, -EINVAL for 0 or more than the memory has. The allocators are thread-safe.
 */
int hv_guest_alloc_frames(struct hv *hv, uint32_t count, uint32_t *frame);
void hv_guest_free_frames(struct hv *hv, uint32_t frame, uint32_t count);

/** Reserve a free grant ref (entry flags 0). -ENOSPC when the table is full. */
int hv_guest_alloc_gref(struct hv *hv, grant_ref_t *ref);

/**
 * Return a ref. One still granted is ended first; one a backend still maps cannot be, and is
 * set aside until it is unmapped rather than handed out again.
 */
void hv_guest_free_gref(struct hv *hv, grant_ref_t ref);

/**
 * Grant @frame to domain @to (GTF_permit_access, plus GTF_readonly if @readonly). -EINVAL for a
 * ref outside the table, a frame outside guest memory or a reserved domid.
 */
int hv_guest_grant(struct hv *hv, grant_ref_t ref, domid_t to, uint32_t frame, int readonly);

/** End access: 0, or -EBUSY while the backend still has the page mapped (entry unchanged). */
int hv_guest_end_access(struct hv *hv, grant_ref_t ref);

/*
 * ---- Event channels (like xenevtchn) ----
 *
 * One pollable fd per handle. hv_evtchn_pending() returns a port that fired; that port stays
 * masked until hv_evtchn_unmask(). A notify before the peer is bound is dropped (as Xen drops a
 * send on an unbound port); a notify to a bound port whose receiver has not looked yet leaves it
 * pending. Ports are per domain, owned by the handle that made them: the other calls take only
 * the handle's own ports (-EINVAL otherwise). When the peer unbinds or its domain dies, the
 * port falls back to unbound (sends are dropped) and the remote domain may bind to it again.
 * The fd may also become readable for the sim's bookkeeping; hv_evtchn_pending() then returns 0.
 */

int hv_evtchn_open(struct hv *hv, struct hv_evtchn **out);
void hv_evtchn_close(struct hv_evtchn *e); /**< unbinds every port of the handle */

/** The fd to poll for POLLIN; then call hv_evtchn_pending() until it returns 0. */
int hv_evtchn_fd(struct hv_evtchn *e);

/** Allocate a port that domain @remote may bind to. -ESRCH: no such domain; -ENOSPC: no port. */
int hv_evtchn_alloc_unbound(struct hv_evtchn *e, domid_t remote, evtchn_port_t *port);

/**
 * Bind a local port to (@remote, @remote_port); -EINVAL if that port is not unbound for us,
 * -ESRCH if @remote does not exist.
 */
int hv_evtchn_bind_interdomain(struct hv_evtchn *e, domid_t remote, evtchn_port_t remote_port,
			       evtchn_port_t *port);

int hv_evtchn_notify(struct hv_evtchn *e, evtchn_port_t port);

/** 1 and *port when a port fired (now masked), 0 when none is pending, or -errno. */
int hv_evtchn_pending(struct hv_evtchn *e, evtchn_port_t *port);

int hv_evtchn_unmask(struct hv_evtchn *e, evtchn_port_t port);
int hv_evtchn_unbind(struct hv_evtchn *e, evtchn_port_t port);

#endif
