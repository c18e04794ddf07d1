/*
 * blkback_internal.h - declarations shared by blkbackd's source files (not a public API).
 *
 * Threads and ownership:
 *   - The control thread runs one hv_loop: the xenstore watch (xenbus.c), the control socket
 *     (ctl.c) and the wake eventfd the ring threads use to ask for a disconnect. It owns every
 *     struct bb_vbd and struct bb_vol, creates and joins the ring threads, and is the only user
 *     of the xenstore handle.
 *   - One ring thread per ring (per queue of a vbd, ring.c) owns its ring's request pool, its
 *     target queue, and its grant-table and event-channel handles from the moment it starts
 *     until it is joined. It shares only: the vbd's size (atomic), its stop flag (atomic) and its
 *     statistics (written by the ring thread alone with relaxed atomic stores, summed by the
 *     control thread with relaxed atomic loads).
 */
#ifndef SLUICE_BLKBACK_BLKBACK_INTERNAL_H
#define SLUICE_BLKBACK_BLKBACK_INTERNAL_H

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include <xen/grant_table.h>
#include <xen/io/blkif.h>
#include <xen/io/xenbus.h>

/*
 * ring.h leaves its barriers to the includer (with the legacy interface version it maps them
 * to mb()/rmb()/wmb(), which userspace lacks). The frontend is another process or a guest on
 * another CPU: a full fence for xen_mb (our index store must be visible before we load the
 * peer's event index), acquire/release fences around index reads and writes.
 */
#undef xen_mb
#undef xen_rmb
#undef xen_wmb
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include "blkback/blkback.h"
#include "blkback/pool.h"
#include "blkback/target.h"
#include "common/log.h"
#include "common/util.h"
#include "hv/hv.h"
#include "qos/qos.h"

struct xs_handle;
struct qos_simdev;
struct json_object;
struct hv_loop;
struct bb_vbd;
struct bb_ring;
struct bb_ctl_conn;

#define BB_SECT_SHIFT 9                   /**< ring units are 512-byte sectors */
#define BB_SECT_PER_PAGE (HV_PAGE_SIZE >> BB_SECT_SHIFT)
#define BB_MAX_RING_PAGE_ORDER 4          /**< 16 pages, 512 slots (as Linux blkback) */
#define BB_MAX_RING_PAGES (1u << BB_MAX_RING_PAGE_ORDER)
#define BB_MAX_QUEUES 32                  /**< cap on multi-queue-max-queues */
#define BB_DIRECT_SEGS BLKIF_MAX_SEGMENTS_PER_REQUEST
#define BB_MAX_SEGS 256                   /**< most indirect segments offered (Linux's value) */
/** Segments one indirect page holds (4096 / 8 = 512). */
#define BB_SEGS_PER_INDIRECT_PAGE (HV_PAGE_SIZE / sizeof(struct blkif_request_segment))
#define BB_MAX_INDIRECT_PAGES                                                                      \
	((BB_MAX_SEGS + BB_SEGS_PER_INDIRECT_PAGE - 1) / BB_SEGS_PER_INDIRECT_PAGE)
#define BB_MAX_PGNT 2048u                 /**< persistent grants kept per ring (LRU beyond) */
#define BB_PGNT_UNUSED_NS (60ull * 1000000000) /**< unmapped after this long unused (Linux: 60 s) */
#define BB_CLOSE_TIMEOUT_MS 5000          /**< how long a detach/shutdown waits for a frontend */

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#endif

/* Single-writer counters: a plain load plus a relaxed store, no lock prefix on the data path. */
static inline void bb_cnt_add(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline uint64_t bb_cnt_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/*
 * ---- req.c: copy and validation of one request ----
 */

/** What the vbd allows, as the ring thread sees it for one request. */
struct bb_limits {
	uint64_t size_sect;       /**< disk size in 512-byte sectors (read atomically) */
	uint32_t logical_block;   /**< sector-size in bytes: offsets and lengths are multiples */
	unsigned ro : 1;          /**< read-only attach: no WRITE, no DISCARD, no data on FLUSH */
	unsigned discard : 1;     /**< feature-discard advertised */
	unsigned barrier : 1;     /**< feature-barrier advertised */
	uint32_t max_indirect_segs; /**< feature-max-indirect-segments advertised (0: none) */
};

/** One data segment of a validated request. */
struct bb_seg {
	grant_ref_t gref;
	uint16_t off_bytes; /**< offset in the granted page (first_sect * 512) */
	uint16_t len_bytes; /**< (last_sect - first_sect + 1) * 512 */
};

/** A validated request: everything the ring needs, taken from the private copy. */
struct bb_parsed {
	uint64_t id;          /**< echoed in the response */
	uint8_t op;           /**< BLKIF_OP_*, echoed in the response */
	uint8_t discard_flag; /**< BLKIF_DISCARD_SECURE or 0 (ignored: no discard-secure) */
	uint8_t indirect;     /**< INDIRECT: seg[] still to be read from the indirect pages */
	uint8_t nr_indirect;  /**< indirect pages in indirect_grefs[] */
	uint64_t sector;      /**< first sector (512-byte units) */
	uint64_t nr_sect;     /**< sectors covered by the segments, or the discard length */
	uint32_t nr_segs;     /**< segments used in seg[] */
	grant_ref_t indirect_grefs[BB_MAX_INDIRECT_PAGES];
	struct bb_seg seg[BB_MAX_SEGS];
};

/** A private copy of one ring slot, readable in each request layout of blkif.h. */
union bb_req_slot {
	struct blkif_request rw;
	struct blkif_request_discard discard;
	struct blkif_request_indirect indirect;
	uint64_t words[sizeof(struct blkif_request) / sizeof(uint64_t)];
};

/**
 * Copy ring slot @idx into @out, reading every byte of the shared slot exactly once (volatile
 * word loads, padding included). All later decisions use @out only.
 */
void bb_req_copy(const blkif_back_ring_t *br, RING_IDX idx, union bb_req_slot *out);

/**
 * Validate @slot, a private copy of a ring slot (never the shared slot itself), against @lim
 * and fill @out. Always sets out->id and out->op, so even a refusal can be answered.
 * An INDIRECT request is answered with the operation it carries (out->op is its indirect_op)
 * and comes back with out->indirect set: its segments are validated by bb_req_parse_segs().
 * Returns 0, -EOPNOTSUPP (unknown or unadvertised opcode: answer BLKIF_RSP_EOPNOTSUPP) or
 * -EINVAL (malformed), -ERANGE (past the end of the disk), -EROFS (write to a read-only
 * attach): answer BLKIF_RSP_ERROR. *why gets a static phrase for the log line.
 */
int bb_req_parse(const union bb_req_slot *slot, const struct bb_limits *lim,
		 struct bb_parsed *out, const char **why);

/**
 * Second stage of an INDIRECT request (bb_req_parse() left out->indirect set): validate the
 * out->nr_segs segments @segs, a private copy taken once from the mapped indirect pages, as
 * direct segments are, then the whole extent. Returns 0, -EINVAL, -EROFS or -ERANGE.
 */
int bb_req_parse_segs(const struct blkif_request_segment *segs, const struct bb_limits *lim,
		      struct bb_parsed *out, const char **why);

/** The blkif status for a bb_req_parse() or I/O result: OKAY, ERROR or EOPNOTSUPP. */
int16_t bb_req_status(int rc);

/** A short name for a BLKIF_OP_* value ("read", "write", ..., "op 77"); @buf >= 16 bytes. */
const char *bb_op_name(uint8_t op, char *buf, size_t len);

/*
 * ---- stats.c: counters and latency histograms ----
 */

/* Log-linear buckets: 8 per power of two of nanoseconds (12.5 % wide), 0 ns .. 2^64 ns. */
#define BB_HIST_SUB_BITS 3
#define BB_HIST_BUCKETS ((64 - BB_HIST_SUB_BITS + 1) << BB_HIST_SUB_BITS)

struct bb_hist {
	uint64_t count[BB_HIST_BUCKETS];
};

/** A ring's (or a vbd's summed) counters; names and meanings as Linux blkback's sysfs. */
struct bb_stats {
	uint64_t rd_req, wr_req, f_req, ds_req; /**< requests seen per opcode (valid or not) */
	uint64_t oo_req;   /**< times the target queue was full and requests waited on the ring */
	uint64_t rd_sect, wr_sect; /**< 512-byte sectors read / written successfully */
	uint64_t errors;   /**< requests answered with ERROR or EOPNOTSUPP */
	uint64_t inflight; /**< consumed from the ring and not yet answered */
	struct bb_hist rd_lat, wr_lat; /**< completion latency of READ / WRITE (ns) */
};

/** Bucket index of @ns. */
unsigned bb_hist_bucket(uint64_t ns);

/** Record one sample (ring thread only). */
void bb_hist_record(struct bb_hist *h, uint64_t ns);

/**
 * The @pct percentile (0 < pct <= 100) in ns: the midpoint of the bucket holding the sample of
 * that rank. 0 when the histogram is empty.
 */
uint64_t bb_hist_percentile(const struct bb_hist *h, double pct);

/** dst += src, reading src with relaxed atomic loads (src may be live on a ring thread). */
void bb_stats_add(struct bb_stats *dst, const struct bb_stats *src);

/*
 * ---- ring.c: one shared ring, its thread and its request path ----
 */

/** The parts that need a hypervisor: seams, so the request path runs on plain memory in tests. */
struct bb_ring_ops {
	/** As hv_gnttab_map_pages: returns the number of failed pages, status[i] per page. */
	int (*map)(struct bb_ring *r, uint32_t count, const grant_ref_t *refs, unsigned prot,
		   void **addrs, int *status);
	/** Unmap pages that map() mapped. */
	void (*unmap)(struct bb_ring *r, uint32_t count, const grant_ref_t *refs, unsigned prot,
		      void *const *addrs);
	/** Kick the frontend's event channel. */
	void (*notify)(struct bb_ring *r);
};

/** A grant kept mapped across requests (persistent grants), in the ring's cache. */
struct bb_pgnt {
	grant_ref_t ref;
	uint32_t users;          /**< requests in flight using it; 0: on the LRU list */
	void *addr;
	uint64_t last_ns;        /**< when the last user completed */
	struct bb_pgnt *hnext;   /**< hash chain */
	struct bb_pgnt *prev, *next; /**< LRU list while unused; next also links the free list */
};

/** A multi-step request's steps (FLUSH with data, WRITE_BARRIER). */
#define BB_REQ_MAX_STEPS 3

/** A request in flight, from the ring thread's preallocated pool. */
struct bb_req {
	struct bb_ring *ring;
	struct bb_req *next;   /**< free list or deferred list */
	uint64_t id;
	uint64_t start_ns;
	uint64_t sector;
	uint64_t nr_sect;
	uint8_t op;            /**< BLKIF_OP_* for the response */
	uint8_t nsteps, step;
	uint8_t steps[BB_REQ_MAX_STEPS]; /**< enum target_op per step */
	unsigned prot;         /**< HV_PROT_* the data pages were mapped with */
	uint32_t nr_segs;      /**< mapped pages (0 for a plain FLUSH or DISCARD) */
	grant_ref_t *grefs;    /**< the ring's arenas: max_segs entries per request */
	void **pages;
	struct bb_pgnt **pgnts; /**< per page: its kept mapping, or NULL (this request's own) */
	struct iovec *iov;
	struct target_io tio;
	/* QoS: the ticket of an admitted request, and the simulated device's verdict. */
	struct qos_ticket qos;
	uint8_t qos_admitted;  /**< qos holds a ticket for it: complete or cancel it */
	int sim_status;        /**< the target's result, kept while the response is held */
	uint64_t sim_done_ns;  /**< when the simulated device completes it (0: no simdev) */
};

struct bb_ring {
	struct bb_vbd *vbd;
	unsigned qidx;
	char name[64];         /**< log prefix: "d<domid>/<vdev>" (plus " q<N>" when multi-queue) */
	domid_t domid;

	/* The shared ring. */
	blkif_back_ring_t br;
	void *sring;
	uint32_t nr_pages;
	grant_ref_t ring_refs[BB_MAX_RING_PAGES];
	evtchn_port_t remote_port;

	/* Hypervisor handles (opened by the control thread, used by the ring thread meanwhile). */
	struct hv_gnttab *gnt;
	struct hv_evtchn *evt;
	evtchn_port_t port; /**< local port */
	const struct bb_ring_ops *ops;

	/* Storage. */
	struct target *target;
	struct target_queue *tq;

	/* Request pool (sized to the ring at connect; nothing allocated afterwards). */
	uint32_t max_segs;         /**< segments per request: 11, or the indirect maximum offered */
	struct bb_req *reqs;
	uint32_t nr_reqs;
	struct bb_req *free;
	grant_ref_t *gref_arena;
	void **page_arena;
	struct bb_pgnt **pgnt_arena;
	int *status_arena;
	struct iovec *iov_arena;
	uint64_t now_ns;           /**< the current pass's start */

	/* Persistent grants (feature-persistent negotiated): the cache, see ring.c. */
	int persistent;
	uint32_t pg_max;           /**< entries kept at most (0 at init: BB_MAX_PGNT) */
	struct bb_pgnt *pg_pool;
	struct bb_pgnt **pg_hash;
	uint32_t pg_mask;
	struct bb_pgnt *pg_free;
	uint32_t pg_count;         /**< entries holding a mapping */
	struct bb_pgnt *lru_head, *lru_tail;
	uint64_t pg_next_purge_ns;
	struct bb_req *defer_head; /**< consumed, waiting for the target queue (FIFO) */
	struct bb_req **defer_tail;
	struct bb_req *barrier;    /**< a WRITE_BARRIER waiting for the ring to drain */
	/*
	 * QoS (blkback/qos_daemon.c has the design): the head of the deferred list may be held
	 * by the scheduler until qos_retry_ns or until the vbd's wake callback writes wake_efd.
	 * With a simulated device, answered-by-the-target requests wait in sim_head (sorted by
	 * sim_done_ns) until the simulated completion. timer_fd fires at the earlier of the two.
	 */
	int qos_held;              /**< the deferred head waits for the scheduler */
	uint64_t qos_retry_ns;     /**< when to ask the scheduler again (absolute, monotonic) */
	struct bb_req *sim_head;
	int wake_efd;              /**< written by the scheduler's wake callback */
	int timer_fd;              /**< CLOCK_MONOTONIC timerfd for retries and held responses */
	uint64_t timer_ns;         /**< what timer_fd is armed for (0: disarmed) */
	int barrier_active;        /**< a barrier is in progress: consume nothing until it ends */
	uint32_t inflight;         /**< consumed and not yet answered */
	unsigned submitted;        /**< target I/Os queued since the last commit */

	/* Control. */
	uint64_t poll_ns; /**< adaptive polling: spin this long for work before sleeping (0: off) */
	int stopping;  /**< atomic: stop consuming, finish in-flight, exit */
	int dead;      /**< the frontend broke the ring protocol: consume nothing more */
	int stop_efd;  /**< eventfd the control thread writes to wake the thread */
	pthread_t thread;
	int thread_running;
	sem_t ready;   /**< the thread posts after opening its target queue */
	int start_rc;  /**< the thread's target_queue_open result */

	struct bb_stats st;
	struct log_ratelimit rl;
};

/**
 * Set up @r's request path over a ring already mapped at r->sring (r->nr_pages pages), with
 * r->target, r->ops, r->vbd, r->name, r->domid, r->max_segs (11, or up to BB_MAX_SEGS to serve
 * INDIRECT) and r->persistent (and optionally r->pg_max) filled in: attaches the back ring (the
 * shared page is not reset), allocates the request pool sized to the ring and the persistent
 * grant cache. Returns 0, -EPROTO (the ring claims more requests than it holds) or -ENOMEM.
 */
int bb_ring_init(struct bb_ring *r);

/** Unmap kept grants, free the request pool (the ring must be idle: nothing in flight). */
void bb_ring_fini(struct bb_ring *r);

/**
 * One pass over the ring (ring thread, or a test): reap target completions, resubmit deferred
 * steps, consume and validate new requests unless stopping, commit the target queue once, push
 * responses and notify when the frontend asked to be. Returns 1 when more requests are already
 * waiting (run another pass before sleeping), 0 when the ring can sleep, or -errno.
 */
int bb_ring_pass(struct bb_ring *r);

/** Start the ring thread (opens its target queue). Returns 0 or -errno. */
int bb_ring_start(struct bb_ring *r);

/** Stop consuming, wait for every in-flight request to be answered, join the thread. */
void bb_ring_stop(struct bb_ring *r);

/** The hv.h implementation of bb_ring_ops. */
extern const struct bb_ring_ops bb_ring_hv_ops;

/*
 * ---- vbd.c: volumes, vbds, connect and disconnect ----
 */

/** An opened volume, shared by every vbd attached to it. */
struct bb_vol {
	struct bb_vol *next;
	char name[POOL_VOL_NAME_MAX + 1];
	uint32_t sim_idx;     /**< the volume's region on a simulated device (offset idx << 40) */
	struct target *target;
	struct target_info info;
	unsigned refs;
};

struct bb_vbd {
	struct bb_vbd *next;
	struct blkback *bb;
	domid_t domid;
	uint32_t devid;
	char vdev[32];
	char domain[64];      /**< the domain's name when known */
	char name[48];        /**< log prefix d<domid>/<vdev> */
	char be_path[128];
	char fe_path[128];
	char fe_token[64];    /**< token of the watch on the frontend's state */
	int fe_watched;
	char vol_name[POOL_VOL_NAME_MAX + 1];
	struct bb_vol *vol;   /**< NULL when the volume could not be opened */
	int ro;

	uint64_t size_sect;   /**< atomic: ring threads read it per request */
	uint32_t logical_block;
	uint32_t physical_block;
	unsigned feat_discard : 1;
	unsigned feat_barrier : 1;
	unsigned persistent : 1;  /**< both ends want persistent grants (this connection) */
	uint32_t discard_granularity;

	enum xenbus_state be_state; /**< what we last wrote */
	enum xenbus_state fe_state; /**< what we last read */
	struct bb_ring *rings;
	unsigned nr_rings;
	int need_disconnect;  /**< atomic: a ring thread saw a hostile frontend */
	/** The vbd's QoS handle while connected (atomic: ring threads load it per request). */
	struct qos_vbd *qos;
	struct qos_vbd_stats qos_retired; /**< counters of earlier connections (qos_daemon.c) */

	/* Detach in progress (ctl "detach"): answered when the frontend closed or on timeout. */
	int detaching;
	uint64_t detach_deadline_ns;
	struct bb_ctl_conn *detach_conn;

	struct bb_stats retired; /**< counters of rings torn down by earlier disconnects */
	struct log_ratelimit rl; /**< lines a frontend can cause (connects, refusals, states) */
};

struct blkback {
	struct blkback_opts opts;
	struct hv *hv;
	struct xs_handle *xs;
	struct hv_loop *loop;
	int lock_fd;
	int ctl_fd;
	char ctl_path[256];
	char lock_path[256];
	int wake_efd;   /**< ring threads -> control thread */
	int timer_fd;   /**< ticks while a detach or the shutdown waits for frontends */
	int timer_armed;
	struct bb_vbd *vbds;
	struct bb_vol *vols;
	struct bb_ctl_conn *conns;
	struct dedup_store *dedup; /**< POOL/dedup, open while the daemon runs (ctl_dedup.c) */
	struct qos_sched *qos;     /**< the pool's device scheduler; NULL with --no-qos */
	struct qos_simdev *simdev; /**< --sim-device, else NULL */
	char sim_spec[32];         /**< "IOPS:LAT_US" of the simulated device */
	char qos_model_src[96];    /**< where the scheduler's cost model came from */
	uint32_t next_sim_idx;
	unsigned max_queues;
	int shutting_down;
	uint64_t shutdown_deadline_ns;
	volatile sig_atomic_t *stop;
	volatile sig_atomic_t loop_stop; /**< stops the inner loop of the shutdown wait */
};

struct bb_vbd *bb_vbd_find(struct blkback *bb, domid_t domid, uint32_t devid);

/**
 * Open (or share) the target of v->vol_name and take the vbd's size, sector sizes and features
 * from it. Returns 0, -ENOENT (no such volume) or -errno; v->vol stays NULL on failure.
 */
int bb_vbd_open_vol(struct bb_vbd *v);

/** Drop the vbd's volume reference (closing the target with the last one). */
void bb_vbd_close_vol(struct bb_vbd *v);

/** One ring as the frontend describes it in xenstore (read and checked by xenbus.c). */
struct bb_ring_desc {
	grant_ref_t refs[BB_MAX_RING_PAGES];
	uint32_t nr_pages;  /**< 1 << ring-page-order */
	evtchn_port_t port; /**< the frontend's unbound port */
};

/**
 * Map the @nr_rings rings in @d, bind their event channels and start their threads. On failure
 * everything is undone and @why says what failed. Returns 0 or -errno.
 */
int bb_vbd_connect_rings(struct bb_vbd *v, const struct bb_ring_desc *d, unsigned nr_rings,
			 char *why, size_t why_len);

/**
 * Stop the ring threads (in-flight requests complete and are answered), unmap and unbind.
 * Idempotent; a vbd without rings is left alone.
 */
void bb_vbd_disconnect(struct bb_vbd *v);

/** Publish a new size to the ring threads (atomic). */
void bb_vbd_set_size(struct bb_vbd *v, uint64_t size_bytes);

/** Sum the vbd's live and retired counters into @out (zeroed first). */
void bb_vbd_stats(const struct bb_vbd *v, struct bb_stats *out);

/**
 * Resize volume @vol to @size_bytes: target, pool metadata, every vbd's size and (for connected
 * vbds) sectors + state in xenstore. *old_bytes gets the previous size.
 * Returns 0, -ENOENT, -EINVAL, -EPERM (shrink without @shrink) or -errno; *why says why.
 */
int bb_vol_resize(struct blkback *bb, const char *vol, uint64_t size_bytes, int shrink,
		  uint64_t *old_bytes, char *why, size_t why_len);

/*
 * ---- xenbus.c: backend watch, per-vbd state machine, toolstack writes ----
 */

/** Xen's name for a XenbusState. */
const char *bb_xenbus_state_name(int state);

/**
 * Xen's vbd numbering: "xvda" -> 51712 (202<<8 | disk<<4 | part for disks 0..15; 1<<28 |
 * disk<<8 | part above). Accepts xvd + letters (a..z, aa.. as Xen counts) + optional partition.
 * Returns 0 or -EINVAL.
 */
int bb_vdev_to_devid(const char *vdev, uint32_t *devid);

/** The inverse, for vbds created by another toolstack; "d<devid>" if not an xvd number. */
void bb_devid_to_vdev(uint32_t devid, char *buf, size_t len);

/** Register the backend watch. Returns 0 or -errno. */
int bb_xenbus_start(struct blkback *bb);

/** The xenstore fd became readable: handle every queued watch event. */
void bb_xenbus_on_watch(void *arg, uint32_t events);

/** Write our backend state (outside a transaction). Returns 0 or -errno. */
int bb_xenbus_switch(struct bb_vbd *v, enum xenbus_state s);

/** Resolve a domain given by name or decimal id. Returns 0, -ENOENT or -EINVAL. */
int bb_xenbus_find_domain(struct blkback *bb, const char *dom, domid_t *domid);

/**
 * The toolstack half of an attach: check and write the frontend and backend directories with
 * their permissions in one transaction. Returns 0 or -errno with *why one sentence.
 */
int bb_xenbus_attach(struct blkback *bb, const char *vol, domid_t domid, const char *vdev,
		     int ro, uint32_t *devid, char *why, size_t why_len);

/** Start closing @v for a detach (backend Closing, rings drained). */
void bb_xenbus_detach_begin(struct bb_vbd *v);

/** Finish a detach: state Closed, remove both directories, free the vbd. */
void bb_xenbus_detach_finish(struct bb_vbd *v);

/** Rewrite sectors and state (Connected) in one transaction, as Linux xen_vbd_resize. */
int bb_xenbus_publish_size(struct bb_vbd *v);

/** Remove the nodes of a backend dir blkbackd does not serve (bad toolstack nodes). */
int bb_xenbus_remove_nodes(struct blkback *bb, domid_t domid, uint32_t devid);

/** Call @fn for every backend dir whose params names @vol. Returns 0. */
int bb_xenbus_vol_users(struct blkback *bb, const char *vol,
			void (*fn)(void *arg, domid_t domid, const char *vdev), void *arg);

/**
 * SIGTERM: disconnect every vbd (in-flight requests complete), switch connected ones to
 * Closing and the rest to Closed. bb->loop_stop becomes 1 once every frontend let go or the
 * deadline passed (the timer checks it).
 */
void bb_xenbus_shutdown_begin(struct blkback *bb);

/** Disconnect and free every vbd (daemon exit); a vbd still Closing is switched to Closed. */
void bb_xenbus_free_all(struct blkback *bb);

/** Handle ring threads' requests to disconnect a vbd (hostile frontends). */
void bb_xenbus_on_wake(void *arg, uint32_t events);

/** The periodic timer: expire detach and shutdown waits. */
void bb_xenbus_on_timer(void *arg, uint32_t events);

/** Arm or disarm bb->timer_fd as needed. */
void bb_timer_update(struct blkback *bb);

/*
 * ---- qos_daemon.c: the scheduler in the daemon ----
 */

/** Create the pool's scheduler and simulated device from the options. 0 or -errno (logged). */
int bb_qos_start(struct blkback *bb);

/** Free them (every vbd must be disconnected). */
void bb_qos_stop(struct blkback *bb);

/**
 * A vbd's rings are up: give it its persisted settings and a qos handle (ring threads start
 * using it with their next request). Nothing happens with --no-qos.
 */
void bb_qos_vbd_connect(struct bb_vbd *v);

/** The vbd's ring threads are joined: drop its qos handle. */
void bb_qos_vbd_disconnect(struct bb_vbd *v);

/**
 * The settings fields of an attach request (ctl "attach" with "weight", "cap_iops", ...) over
 * the defaults, checked against the device. Returns 0 (also when no field is given), or -errno
 * with one sentence in @why.
 */
int bb_qos_attach_check(struct blkback *bb, struct json_object *req,
			struct qos_vbd_settings *set, char *why, size_t why_len);

/** Persist an attached disk's settings (after the toolstack nodes are written). 0 or -errno. */
int bb_qos_attach_save(struct blkback *bb, domid_t domid, const char *vdev,
		       const struct qos_vbd_settings *set, char *why, size_t why_len);

/** The vbd is detached for good: remove its persisted settings. */
void bb_qos_vbd_forget(struct bb_vbd *v);

/** Answer "set" and "qos" (ctl.h), else return NULL. */
struct json_object *bb_ctl_qos(struct blkback *bb, const char *cmd, struct json_object *req);

/*
 * ---- ctl.c: the control socket ----
 */

/** Bind and listen on POOL/blkbackd.sock and add it to the loop. Returns 0 or -errno. */
/** Open (creating if missing) the pool's dedup store into bb->dedup. Returns 0 or -errno. */
int bb_dedup_start(struct blkback *bb);

/** Close bb->dedup (every dedup target must be closed). */
void bb_dedup_stop(struct blkback *bb);

struct json_object;

/**
 * Answer control command @cmd if it is one of the dedup commands (ctl.h), else return NULL.
 * The answer is a new JSON object the caller sends and puts.
 */
struct json_object *bb_ctl_dedup(struct blkback *bb, const char *cmd, struct json_object *req);

int bb_ctl_start(struct blkback *bb);

/** Stop accepting connections and remove the socket file (connections stay). */
void bb_ctl_stop_listening(struct blkback *bb);

/** Close the listener, every connection, and remove the socket file. */
void bb_ctl_stop(struct blkback *bb);

/** Answer a connection that waited for a detach (@err 0 = ok, else -errno with @why). */
void bb_ctl_detach_done(struct bb_ctl_conn *c, int err, const char *why);

/** Drop @c's references from vbds (the connection is going away). */
void bb_ctl_conn_forget(struct blkback *bb, struct bb_ctl_conn *c);

#endif
