/*
 * hvsim_proto.h - the hv control protocol between hvsimd and its clients (libhv's sim backend,
 * hvctl, tests): the sim's stand-in for hypercalls that need the hypervisor's bookkeeping
 * (domains, event-channel ports, handing out guest memory). Grant map/unmap is not here: it
 * runs in the mapping process on shared memory (hvsim_gnt.h), like a hypercall would, without
 * a round trip.
 *
 * Transport: AF_UNIX SOCK_SEQPACKET, so each message keeps its boundary and may carry file
 * descriptors (SCM_RIGHTS). DIR/hv.sock acts as dom0; DIR/domains/<domid>/hv.sock acts as that
 * guest. Every message is a struct hvsim_hdr followed by exactly hdr.len payload bytes.
 * Requests are answered in order, one reply per request, echoing seq; status is 0 or -errno
 * and an error reply has no payload and no fds. hvsimd may also send notices (seq 0) at any
 * time: a client must accept them while it waits for a reply.
 *
 * All integers are in host byte order (both ends run on one machine). Names are NUL-padded.
 */
#ifndef SLUICE_HV_HVSIM_PROTO_H
#define SLUICE_HV_HVSIM_PROTO_H

#include <stdint.h>

#define HVSIM_PROTO_VERSION 1u

#define HVSIM_NAME_MAX	  63u	/**< domain name length without the NUL */
#define HVSIM_MSG_MAX	  8192u /**< largest message in either direction, header included */
#define HVSIM_MAX_FDS	  4u	/**< most fds one message carries */
#define HVSIM_MAX_PORTS	  1024u /**< event-channel ports per domain; port 0 is never used */
#define HVSIM_MAX_DOMAINS 256u	/**< guest domains alive at once */
#define HVSIM_LIST_MAX	  64u	/**< domains per DOMAIN_LIST reply */

#define HVSIM_MEM_MIN	  (16ull << 20) /**< smallest guest memory */
#define HVSIM_MEM_MAX	  (16ull << 30) /**< largest guest memory */
#define HVSIM_MEM_DEFAULT (256ull << 20)

struct hvsim_hdr {
	uint32_t type;	/**< enum hvsim_msg_type */
	uint32_t seq;	/**< chosen by the requester, echoed in the reply; 0 in notices */
	int32_t status; /**< replies: 0 or -errno; requests and notices: 0 */
	uint32_t len;	/**< payload bytes after this header */
};

enum hvsim_msg_type {
	/* Any socket. */
	HVSIM_INFO = 1, /**< -> struct hvsim_info_rep */

	/* dom0 only (guests get -EPERM). */
	HVSIM_DOMAIN_CREATE = 2,  /**< struct hvsim_dom_create -> struct hvsim_domid_msg */
	HVSIM_DOMAIN_DESTROY = 3, /**< struct hvsim_domid_msg -> nothing */
	HVSIM_DOMAIN_LIST = 4,	  /**< struct hvsim_domid_msg (first domid wanted) ->
				     struct hvsim_dom_list_rep */
	HVSIM_DOMAIN_GET_MEM = 5, /**< struct hvsim_domid_msg -> struct hvsim_mem_rep + fds
				     {guest memory, grant table, active table, pin ledger};
				     -ENXIO before the guest registered its memory. The ledger
				     (hvsim_gnt.h) is new and belongs to this connection: when
				     the connection closes, hvsimd releases every pin recorded
				     in it, as closing gntdev releases a dead process's maps. */

	/* Guest sockets only (dom0 gets -EPERM). */
	HVSIM_GUEST_REGISTER_MEM = 6, /**< 0 or 1 fd (a sealable memfd of exactly the domain's
					 memory size) -> struct hvsim_mem_rep + fds {guest memory,
					 grant table}. Claims the guest side for this connection
					 until it closes (-EBUSY while another connection holds
					 it). If the domain already has memory, any fd sent is
					 ignored and the existing memory is returned; without an
					 fd and without memory: -ENXIO. */

	/* Any socket: event channels of the socket's domain, owned by this connection. */
	HVSIM_EVTCHN_ALLOC_UNBOUND = 7,	   /**< struct hvsim_evtchn_msg (remote) -> port + 1 fd
					      {the port's receive eventfd} */
	HVSIM_EVTCHN_BIND_INTERDOMAIN = 8, /**< struct hvsim_evtchn_msg (remote, remote_port) ->
					      port + 2 fds {receive eventfd, peer's eventfd} */
	HVSIM_EVTCHN_PEER = 9,		   /**< struct hvsim_evtchn_msg (port) -> 1 fd {the
					      peer's receive eventfd}; -ENOTCONN when unbound */
	HVSIM_EVTCHN_UNBIND = 10,	   /**< struct hvsim_evtchn_msg (port) -> nothing */

	/* Notice from hvsimd (seq 0): the peer of a port of this connection changed (it unbound,
	 * its domain died, or someone bound to our unbound port). Drop any cached peer eventfd. */
	HVSIM_PEER_CHANGED = 11, /**< struct hvsim_evtchn_msg (port) */

	HVSIM_MSG_TYPE_MAX = 11,
};

struct hvsim_info_rep {
	uint32_t version;   /**< HVSIM_PROTO_VERSION */
	uint32_t domid;	    /**< the domain this socket acts as */
	uint64_t mem_bytes; /**< guest memory size (0 for dom0) */
	uint32_t nr_grants; /**< grant entries of this domain (0 for dom0) */
	uint32_t max_ports; /**< HVSIM_MAX_PORTS */
};

struct hvsim_dom_create {
	uint64_t mem_bytes;	       /**< HVSIM_MEM_MIN..HVSIM_MEM_MAX, page multiple */
	char name[HVSIM_NAME_MAX + 1]; /**< [A-Za-z0-9_.-], not all digits, not . or .. */
};

struct hvsim_domid_msg {
	uint32_t domid;
	uint32_t pad;
};

#define HVSIM_DOM_MEM_REGISTERED 1u /**< the guest registered its memory */
#define HVSIM_DOM_GUEST_ATTACHED 2u /**< a guest process holds the guest side now */

struct hvsim_dom_info {
	uint32_t domid;
	uint32_t flags; /**< HVSIM_DOM_* */
	uint64_t mem_bytes;
	uint32_t nr_ports; /**< event-channel ports in use */
	uint32_t pad;
	char name[HVSIM_NAME_MAX + 1];
};

struct hvsim_dom_list_rep {
	uint32_t count; /**< entries that follow */
	uint32_t more;	/**< 1: ask again from last domid + 1 */
	struct hvsim_dom_info dom[];
};

struct hvsim_mem_rep {
	uint32_t domid;
	uint32_t nr_grants; /**< grant-table entries */
	uint64_t mem_bytes; /**< guest memory bytes */
	uint64_t instance;  /**< unique per domain lifetime (never reused by hvsimd) */
};

struct hvsim_evtchn_msg {
	uint32_t remote; /**< ALLOC_UNBOUND, BIND_INTERDOMAIN: the remote domid */
	uint32_t port;	 /**< BIND_INTERDOMAIN: the remote port; PEER, UNBIND, PEER_CHANGED
			    and every reply: the local port */
};

#endif
