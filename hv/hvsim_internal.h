/*
 * hvsim_internal.h - hvsimd's objects, shared by hvsim.c (instance, sockets, message dispatch),
 * hvsim_dom.c (domains, grant-table memory) and hvsim_evtchn.c (event-channel ports).
 * Everything here runs in the instance's one loop thread.
 */
#ifndef SLUICE_HV_HVSIM_INTERNAL_H
#define SLUICE_HV_HVSIM_INTERNAL_H

#include <limits.h>
#include <stdint.h>

#include <xen/xen.h>
#include <xen/event_channel.h>

#include "hv/hvsim.h"
#include "hv/hvsim_gnt.h"
#include "hv/hvsim_proto.h"

struct hv_loop;
struct xs_server;

/* DIR must leave room for the longest socket path below it within sun_path (108 bytes). */
#define HVSIM_DIR_MAX  108u
#define HVSIM_PATH_MAX 256u

#define HVSIM_MAX_CONNS_PER_GUEST 64u
#define HVSIM_MAX_PORTS_DOM0	  4096u /**< dom0 serves every guest: more ports than a guest */

enum hvsim_port_state {
	HVSIM_PORT_UNBOUND = 1,	    /**< allocated for remote_domid to bind */
	HVSIM_PORT_INTERDOMAIN = 2, /**< connected to peer */
};

struct hvsim_dom;
struct hvsim_conn;

/** An event-channel port of a domain. */
struct hvsim_port {
	evtchn_port_t port;
	enum hvsim_port_state state;
	domid_t remote_domid;	  /**< UNBOUND: who may bind; INTERDOMAIN: the peer's domain */
	struct hvsim_port *peer;  /**< INTERDOMAIN: the other end */
	struct hvsim_dom *dom;	  /**< the domain the port belongs to */
	struct hvsim_conn *owner; /**< the handle (connection) that made it */
	int efd;		  /**< receive eventfd: notifying this port writes it */
};

/**
 * The pins one dom0 connection (a gnttab handle) records for one guest: released when the
 * connection closes. Holds its own mappings of the guest's tables, so it outlives the domain.
 */
struct hvsim_ledger {
	domid_t domid;
	int fd;			    /**< the ledger memfd, shared with the mapper */
	uint32_t *pins;		    /**< hvsim_gnt.h's ledger */
	struct hvsim_gnt_view view; /**< the guest's grant and active tables */
	struct hvsim_ledger *next;
};

/** A connection on one of the hv sockets. */
struct hvsim_conn {
	struct hvsim *s;
	struct hvsim_dom *dom; /**< the domain it acts as */
	int fd;
	int broken;		      /**< a send failed: shut down, closed on the next event */
	struct hvsim_ledger *ledgers; /**< dom0: pins it recorded, per DOMAIN_GET_MEM */
	struct hvsim_conn *next;      /**< all connections of the instance */
};

/** A domain (dom0 included, which has no memory and no grant table). */
struct hvsim_dom {
	struct hvsim *s;
	domid_t domid;
	char name[HVSIM_NAME_MAX + 1];
	uint64_t mem_bytes;
	uint64_t instance;		      /**< unique per domain lifetime */
	int mem_fd;			      /**< the guest's memory memfd, -1 until registered */
	int gnt_fd;			      /**< grant table memfd */
	int act_fd;			      /**< active table memfd */
	struct hvsim_gnt_active_hdr *act_hdr; /**< mapped here to mark the domain dead */
	struct hvsim_conn *registrant;	      /**< the connection holding the guest side */
	int listen_fd;		       /**< DIR/domains/<domid>/hv.sock (dom0: DIR/hv.sock) */
	char dir_path[HVSIM_PATH_MAX]; /**< DIR/domains/<domid> */
	uint32_t nr_conns;
	struct hvsim_port **ports; /**< indexed by port number, max_ports entries */
	uint32_t max_ports;
	uint32_t nr_ports;
};

struct hvsim {
	char dir[HVSIM_DIR_MAX];
	int lock_fd;
	struct hv_loop *loop;
	struct xs_server *xs;
	struct hvsim_dom *doms[DOMID_FIRST_RESERVED]; /**< by domid; [0] is dom0 */
	uint32_t nr_guests;
	domid_t last_domid; /**< round-robin allocation, as Xen's */
	uint64_t next_instance;
	struct hvsim_conn *conns;
};

/* hvsim.c */

/** Send PEER_CHANGED(@port) to @c; a connection that cannot take it is shut down. */
void hvsim_conn_notice(struct hvsim_conn *c, evtchn_port_t port);

/** 1 if the client end of @c has closed (its hang-up may not have been processed yet). */
int hvsim_conn_hung_up(struct hvsim_conn *c);

/** Close a connection: unbind its ports, drop its claim on guest memory, free it. */
void hvsim_conn_close(struct hvsim_conn *c);

/** Start serving the hv control protocol on a new listening socket at @path for @d. */
int hvsim_listen(struct hvsim *s, struct hvsim_dom *d, const char *path);

/** Stop listening on @d's hv socket (the caller removes the file). */
void hvsim_unlisten(struct hvsim *s, struct hvsim_dom *d);

/* hvsim_dom.c */

/** A domain by id, or NULL. */
struct hvsim_dom *hvsim_dom_get(struct hvsim *s, uint32_t domid);

/** Create dom0's record and xenstore nodes. Returns 0 or -errno. */
int hvsim_dom0_init(struct hvsim *s);

/**
 * Create guest domain @name with @mem_bytes of memory. Returns 0 and *domid, or -EINVAL (bad
 * name or size), -EEXIST (name taken), -ENOSPC (too many domains), -errno.
 */
int hvsim_dom_create(struct hvsim *s, const char *name, uint64_t mem_bytes, domid_t *domid);

/** Destroy guest domain @domid. Returns 0, -ESRCH (no such domain), -EPERM (dom0). */
int hvsim_dom_destroy(struct hvsim *s, uint32_t domid);

/** Free dom0's record (instance teardown, after every guest is gone). */
void hvsim_dom0_free(struct hvsim *s);

/**
 * GUEST_REGISTER_MEM for @c (a guest connection): @fd (or -1) is the offered memfd, taken over
 * on success. Fills @rep and @fds_out[2]. Returns 0, -EBUSY, -ENXIO, -EINVAL (unusable memfd).
 */
int hvsim_dom_register_mem(struct hvsim_conn *c, int *fd, struct hvsim_mem_rep *rep,
			   int fds_out[2]);

/**
 * DOMAIN_GET_MEM for @c: a new pin ledger for @c, and @rep and @fds_out[4] filled. Returns 0,
 * -ESRCH, -EINVAL (dom0), -ENXIO (no memory registered yet), -ENOMEM or -errno.
 */
int hvsim_dom_get_mem(struct hvsim_conn *c, uint32_t domid, struct hvsim_mem_rep *rep,
		      int fds_out[4]);

/** Release the pins of every ledger of @c (it closes, or its process died) and free them. */
void hvsim_ledgers_release(struct hvsim_conn *c);

/** Fill @info for @d. */
void hvsim_dom_info(const struct hvsim_dom *d, struct hvsim_dom_info *info);

/** Validate a domain name (see hvsim_proto.h). Returns 0 or -EINVAL. */
int hvsim_name_valid(const char *name);

/* hvsim_evtchn.c */

int hvsim_evtchn_alloc_unbound(struct hvsim_conn *c, uint32_t remote, evtchn_port_t *port,
			       int *efd);
int hvsim_evtchn_bind_interdomain(struct hvsim_conn *c, uint32_t remote, uint32_t rport,
				  evtchn_port_t *port, int *efd, int *peer_efd);
int hvsim_evtchn_peer(struct hvsim_conn *c, uint32_t port, int *peer_efd);
int hvsim_evtchn_unbind(struct hvsim_conn *c, uint32_t port);

/** Close every port @c owns. */
void hvsim_evtchn_close_conn(struct hvsim_conn *c);

/** Close every port of @d (domain destroy); frees the port table. */
void hvsim_evtchn_close_dom(struct hvsim_dom *d);

#endif
