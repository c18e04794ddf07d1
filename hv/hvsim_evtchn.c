/*
 * hvsim_evtchn.c - event-channel ports in hvsimd: Xen's per-domain port namespace and the
 * EVTCHNOP_alloc_unbound / bind_interdomain / close state machine. A port's "pending bit" is
 * its receive eventfd; hvsimd hands that eventfd to the owner and the peer's to whoever
 * notifies, and is not involved in sending events at all.
 */
#define LOG_TAG "evtchn"
#include "hv/hvsim_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"

static int ports_ensure(struct hvsim_dom *d)
{
	if (d->ports)
		return 0;
	d->ports = calloc(d->max_ports, sizeof(*d->ports));
	return d->ports ? 0 : -ENOMEM;
}

/* A port of @c's domain that @c owns, or NULL. */
static struct hvsim_port *port_of(struct hvsim_conn *c, uint32_t port)
{
	struct hvsim_dom *d = c->dom;
	struct hvsim_port *p;

	if (!d->ports || port == 0 || port >= d->max_ports)
		return NULL;
	p = d->ports[port];
	return p && p->owner == c ? p : NULL;
}

static int port_new(struct hvsim_conn *c, struct hvsim_port **out)
{
	struct hvsim_dom *d = c->dom;
	struct hvsim_port *p;
	uint32_t n;
	int rc;

	rc = ports_ensure(d);
	if (rc)
		return rc;
	/* Lowest free port, as Xen's get_free_port; port 0 is never valid. */
	for (n = 1; n < d->max_ports; n++)
		if (!d->ports[n])
			break;
	if (n == d->max_ports)
		return -ENOSPC;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->efd < 0) {
		rc = -errno;
		free(p);
		return rc;
	}
	p->port = n;
	p->dom = d;
	p->owner = c;
	d->ports[n] = p;
	d->nr_ports++;
	*out = p;
	return 0;
}

/* Remove @p; its peer (if any) falls back to unbound and its owner hears of it. */
static void port_free(struct hvsim_port *p)
{
	struct hvsim_port *q = p->peer;
	struct hvsim_dom *d = p->dom;

	if (q) {
		/* As Xen's evtchn_close: the remote end stays allocated, unbound, bindable again
		 * by our domain. */
		q->peer = NULL;
		q->state = HVSIM_PORT_UNBOUND;
		q->remote_domid = d->domid;
		hvsim_conn_notice(q->owner, q->port);
	}
	d->ports[p->port] = NULL;
	d->nr_ports--;
	close(p->efd);
	free(p);
}

int hvsim_evtchn_alloc_unbound(struct hvsim_conn *c, uint32_t remote, evtchn_port_t *port, int *efd)
{
	struct hvsim_port *p;
	int rc;

	if (!hvsim_dom_get(c->s, remote))
		return -ESRCH;
	rc = port_new(c, &p);
	if (rc)
		return rc;
	p->state = HVSIM_PORT_UNBOUND;
	p->remote_domid = remote;
	*port = p->port;
	*efd = p->efd;
	log_debug("d%u: port %u unbound for d%u", c->dom->domid, p->port, remote);
	return 0;
}

int hvsim_evtchn_bind_interdomain(struct hvsim_conn *c, uint32_t remote, uint32_t rport,
				  evtchn_port_t *port, int *efd, int *peer_efd)
{
	struct hvsim_dom *rd = hvsim_dom_get(c->s, remote);
	struct hvsim_port *p, *q;
	int rc;

	if (!rd)
		return -ESRCH;
	if (!rd->ports || rport == 0 || rport >= rd->max_ports)
		return -EINVAL;
	q = rd->ports[rport];
	if (!q || q->state != HVSIM_PORT_UNBOUND || q->remote_domid != c->dom->domid)
		return -EINVAL;
	rc = port_new(c, &p);
	if (rc)
		return rc;
	p->state = HVSIM_PORT_INTERDOMAIN;
	p->remote_domid = rd->domid;
	p->peer = q;
	q->state = HVSIM_PORT_INTERDOMAIN;
	q->remote_domid = c->dom->domid;
	q->peer = p;
	/* The remote owner may have cached "no peer" for its port. */
	hvsim_conn_notice(q->owner, q->port);
	*port = p->port;
	*efd = p->efd;
	*peer_efd = q->efd;
	log_debug("d%u: port %u bound to d%u port %u", c->dom->domid, p->port, rd->domid, rport);
	return 0;
}

int hvsim_evtchn_peer(struct hvsim_conn *c, uint32_t port, int *peer_efd)
{
	struct hvsim_port *p = port_of(c, port);

	if (!p)
		return -EINVAL;
	if (!p->peer)
		return -ENOTCONN;
	*peer_efd = p->peer->efd;
	return 0;
}

int hvsim_evtchn_unbind(struct hvsim_conn *c, uint32_t port)
{
	struct hvsim_port *p = port_of(c, port);

	if (!p)
		return -EINVAL;
	port_free(p);
	return 0;
}

void hvsim_evtchn_close_conn(struct hvsim_conn *c)
{
	struct hvsim_dom *d = c->dom;

	if (!d->ports)
		return;
	for (uint32_t n = 1; n < d->max_ports && d->nr_ports; n++)
		if (d->ports[n] && d->ports[n]->owner == c)
			port_free(d->ports[n]);
}

void hvsim_evtchn_close_dom(struct hvsim_dom *d)
{
	if (!d->ports)
		return;
	for (uint32_t n = 1; n < d->max_ports && d->nr_ports; n++)
		if (d->ports[n])
			port_free(d->ports[n]);
	free(d->ports);
	d->ports = NULL;
}
