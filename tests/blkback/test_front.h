/*
 * test_front.h - a raw blkif frontend for blkback's tests (no suite of its own): the guest half
 * of the XenbusState handshake done by hand, and direct access to the shared rings, so a test
 * can send any request, well-formed or hostile, and choose every key the frontend publishes.
 * It runs in a guest context of the sim (hv_guest_open), like libblkfront, but validates
 * nothing: that is the point.
 */
#ifndef SLUICE_TESTS_BLKBACK_TEST_FRONT_H
#define SLUICE_TESTS_BLKBACK_TEST_FRONT_H

#include <stdint.h>

#include "blkback/blkback_internal.h"

#define TF_MAX_QUEUES 4
#define TF_MAX_DATA 64 /**< data pages a test frontend grants */

struct tf_opts {
	unsigned ring_order;    /**< pages per ring = 1 << order */
	int write_order;        /**< publish ring-page-order (ring-ref%u keys) even for order 0 */
	unsigned queues;        /**< 0/1: one ring at the top level; >1: queue-N/ dirs */
	const char *protocol;   /**< NULL: x86_64-abi; "": write no protocol key */
	const char *ring_ref;   /**< when set, written as the (first) ring-ref value verbatim */
	const char *order_str;  /**< when set, written as ring-page-order verbatim */
	unsigned skip_initialised; /**< go straight from Initialising to Connected */
	int timeout_ms;         /**< bound for each wait (0: 5000) */
};

struct tf_queue {
	blkif_front_ring_t fr;
	uint32_t frame;         /**< first frame of the ring */
	grant_ref_t refs[16];
	struct hv_evtchn *evt;
	evtchn_port_t port;
};

struct tf {
	struct hv *hv;
	struct xs_handle *xs;
	domid_t domid;
	domid_t backend_id;
	uint32_t devid;
	char fe[128];
	char be[128];
	unsigned nq, order;
	struct tf_queue q[TF_MAX_QUEUES];
	unsigned rings_up;
	uint32_t data_frame;
	grant_ref_t data_refs[TF_MAX_DATA];
	uint8_t *mem;           /**< guest memory base */
	uint64_t sectors;
	unsigned sector_size;
	unsigned info;
	int timeout_ms;
};

/** Open the guest side of @vdev of @domain in the sim at @hv_dir (nodes must exist). 0/-errno. */
int tf_open(struct tf **out, const char *hv_dir, const char *domain, const char *vdev);

/** Free everything without any handshake (end grants the backend no longer maps). */
void tf_free(struct tf *f);

/** Data page @i (0..TF_MAX_DATA-1), granted to the backend (read-write unless granted ro). */
void *tf_page(struct tf *f, unsigned i);
grant_ref_t tf_gref(struct tf *f, unsigned i);

/** Re-grant data page @i read-only (1) or writable (0). */
int tf_regrant(struct tf *f, unsigned i, int ro);

/** The backend's state, or -1 when its node is missing. */
int tf_be_state(struct tf *f);

/** Wait (bounded by the timeout) until the backend's state is @state. 0 or -ETIMEDOUT. */
int tf_wait_be(struct tf *f, int state);

/** Wait until the backend's state is in @mask (bit 1 << state). 0 or -ETIMEDOUT. */
int tf_wait_be_in(struct tf *f, unsigned mask);

/** The backend's feature-max-indirect-segments (0 when absent). */
unsigned tf_be_indirect(struct tf *f);

/** Write our state. */
int tf_set_state(struct tf *f, int state);

/** Write @key under our directory (a raw value, for hostile tests). */
int tf_write(struct tf *f, const char *key, const char *val);

/**
 * Set up rings and event channels as @o says, publish them, go Initialised (or Connected), and
 * wait for the backend to be Connected, then read sectors / sector-size / info and go
 * Connected. Returns 0, -ECONNREFUSED (the backend went Closing or Closed instead),
 * -ETIMEDOUT or -errno.
 */
int tf_connect(struct tf *f, const struct tf_opts *o);

/** Tear the rings down (after the backend disconnected). */
void tf_rings_down(struct tf *f);

/** The next free request slot of queue @qi (zeroed); tf_push() publishes it. */
struct blkif_request *tf_slot(struct tf *f, unsigned qi);

/** Advance req_prod_pvt past the slot taken with tf_slot(). */
void tf_queue_req(struct tf *f, unsigned qi);

/** Publish queued requests and notify if the backend asked. */
int tf_push(struct tf *f, unsigned qi);

/**
 * Take the next response of queue @qi, waiting for its event channel (bounded).
 * 0 and *rsp, or -ETIMEDOUT.
 */
int tf_wait_rsp(struct tf *f, unsigned qi, struct blkif_response *rsp);

/**
 * One READ or WRITE of @n pages (data pages first..first+n-1) at @sector on queue @qi, waited
 * for. Returns the response status (BLKIF_RSP_*), or -ETIMEDOUT.
 */
int tf_rw(struct tf *f, unsigned qi, uint8_t op, uint64_t sector, unsigned first, unsigned n,
	  uint64_t id);

/** The Closing/Closed handshake from the frontend's side. 0 or -ETIMEDOUT. */
int tf_close(struct tf *f);

#endif
