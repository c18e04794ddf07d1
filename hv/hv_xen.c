/*
 * hv_xen.c - hv.h on a real Xen dom0: libxengnttab (/dev/xen/gntdev) and libxenevtchn
 * (/dev/xen/evtchn) from libxen-dev. There is no guest side here: the guest functions answer
 * -EOPNOTSUPP (hv_sim.c checks the kind). xenstore goes through libxenstore's default path.
 */
#include "hv/hv_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <xenevtchn.h>
#include <xengnttab.h>

struct xen_gnttab {
	struct hv_gnttab base;
	xengnttab_handle *xgt;
};

struct xen_evtchn {
	struct hv_evtchn base;
	xenevtchn_handle *xce;
};

int hv_xen_open(struct hv **out)
{
	struct stat st;
	struct hv *hv;

	if (stat("/dev/xen", &st) < 0 || !S_ISDIR(st.st_mode))
		return -ENODEV;
	hv = calloc(1, sizeof(*hv));
	if (!hv)
		return -ENOMEM;
	hv->ops = &hv_xen_ops;
	hv->kind = HV_KIND_XEN;
	hv->domid = 0;
	*out = hv;
	return 0;
}

static void xen_close(struct hv *hv)
{
	free(hv);
}

/* libxen calls fail with -1 and errno; never hand back 0 as an error. */
static int xen_err(void)
{
	return errno ? -errno : -EIO;
}

static int xen_gnttab_open(struct hv *hv, struct hv_gnttab **out)
{
	struct xen_gnttab *xg = calloc(1, sizeof(*xg));

	if (!xg)
		return -ENOMEM;
	xg->xgt = xengnttab_open(NULL, 0);
	if (!xg->xgt) {
		int rc = errno == ENOENT ? -ENODEV : xen_err();

		free(xg);
		return rc;
	}
	xg->base.hv = hv;
	*out = &xg->base;
	return 0;
}

static void xen_gnttab_close(struct hv_gnttab *g)
{
	struct xen_gnttab *xg = (struct xen_gnttab *)g;

	xengnttab_close(xg->xgt);
	free(xg);
}

static int mmap_prot(unsigned prot)
{
	return PROT_READ | ((prot & HV_PROT_WRITE) ? PROT_WRITE : 0);
}

static int xen_map_contig(struct hv_gnttab *g, domid_t domid, uint32_t count,
			  const grant_ref_t *refs, unsigned prot, void **addr)
{
	struct xen_gnttab *xg = (struct xen_gnttab *)g;
	void *p;

	/* libxengnttab takes a non-const array it does not modify. */
	p = xengnttab_map_domain_grant_refs(xg->xgt, count, domid, (uint32_t *)(uintptr_t)refs,
					    mmap_prot(prot));
	if (!p)
		return xen_err();
	*addr = p;
	return 0;
}

static int xen_unmap_contig(struct hv_gnttab *g, void *addr, uint32_t count)
{
	struct xen_gnttab *xg = (struct xen_gnttab *)g;

	return xengnttab_unmap(xg->xgt, addr, count) < 0 ? xen_err() : 0;
}

static int xen_map_pages(struct hv_gnttab *g, domid_t domid, uint32_t count,
			 const grant_ref_t *refs, unsigned prot, void **addrs, int *status)
{
	struct xen_gnttab *xg = (struct xen_gnttab *)g;
	int failed = 0;

	/* One mapping per page, so each page succeeds or fails on its own. */
	for (uint32_t i = 0; i < count; i++) {
		addrs[i] = xengnttab_map_grant_ref(xg->xgt, domid, refs[i], mmap_prot(prot));
		status[i] = addrs[i] ? 0 : xen_err();
		if (!addrs[i])
			failed++;
	}
	return failed;
}

static int xen_unmap_pages(struct hv_gnttab *g, domid_t domid, uint32_t count,
			   const grant_ref_t *refs, unsigned prot, void *const *addrs)
{
	struct xen_gnttab *xg = (struct xen_gnttab *)g;
	int rc = 0;

	(void)domid;
	(void)refs;
	(void)prot;
	for (uint32_t i = 0; i < count; i++)
		if (xengnttab_unmap(xg->xgt, addrs[i], 1) < 0)
			rc = xen_err();
	return rc;
}

static int xen_evtchn_open(struct hv *hv, struct hv_evtchn **out)
{
	struct xen_evtchn *xe = calloc(1, sizeof(*xe));

	if (!xe)
		return -ENOMEM;
	xe->xce = xenevtchn_open(NULL, 0);
	if (!xe->xce) {
		int rc = errno == ENOENT ? -ENODEV : xen_err();

		free(xe);
		return rc;
	}
	xe->base.hv = hv;
	*out = &xe->base;
	return 0;
}

static void xen_evtchn_close(struct hv_evtchn *e)
{
	struct xen_evtchn *xe = (struct xen_evtchn *)e;

	xenevtchn_close(xe->xce);
	free(xe);
}

static int xen_evtchn_fd(struct hv_evtchn *e)
{
	return xenevtchn_fd(((struct xen_evtchn *)e)->xce);
}

static int xen_alloc_unbound(struct hv_evtchn *e, domid_t remote, evtchn_port_t *port)
{
	xenevtchn_port_or_error_t p =
	    xenevtchn_bind_unbound_port(((struct xen_evtchn *)e)->xce, remote);

	if (p < 0)
		return xen_err();
	*port = (evtchn_port_t)p;
	return 0;
}

static int xen_bind_interdomain(struct hv_evtchn *e, domid_t remote, evtchn_port_t remote_port,
				evtchn_port_t *port)
{
	xenevtchn_port_or_error_t p =
	    xenevtchn_bind_interdomain(((struct xen_evtchn *)e)->xce, remote, remote_port);

	if (p < 0)
		return xen_err();
	*port = (evtchn_port_t)p;
	return 0;
}

static int xen_notify(struct hv_evtchn *e, evtchn_port_t port)
{
	return xenevtchn_notify(((struct xen_evtchn *)e)->xce, port) < 0 ? xen_err() : 0;
}

static int xen_pending(struct hv_evtchn *e, evtchn_port_t *port)
{
	struct xen_evtchn *xe = (struct xen_evtchn *)e;
	struct pollfd pfd = {.fd = xenevtchn_fd(xe->xce), .events = POLLIN};
	xenevtchn_port_or_error_t p;
	int n;

	/* The evtchn device's non-blocking mode is unreliable (xenevtchn.h): poll first. */
	n = poll(&pfd, 1, 0);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	if (n == 0 || !(pfd.revents & POLLIN))
		return 0;
	p = xenevtchn_pending(xe->xce);
	if (p < 0)
		return errno == EAGAIN ? 0 : xen_err();
	*port = (evtchn_port_t)p;
	return 1;
}

static int xen_unmask(struct hv_evtchn *e, evtchn_port_t port)
{
	return xenevtchn_unmask(((struct xen_evtchn *)e)->xce, port) < 0 ? xen_err() : 0;
}

static int xen_unbind(struct hv_evtchn *e, evtchn_port_t port)
{
	return xenevtchn_unbind(((struct xen_evtchn *)e)->xce, port) < 0 ? xen_err() : 0;
}

const struct hv_ops hv_xen_ops = {
    .close = xen_close,
    .gnttab_open = xen_gnttab_open,
    .gnttab_close = xen_gnttab_close,
    .map_contig = xen_map_contig,
    .unmap_contig = xen_unmap_contig,
    .map_pages = xen_map_pages,
    .unmap_pages = xen_unmap_pages,
    .evtchn_open = xen_evtchn_open,
    .evtchn_close = xen_evtchn_close,
    .evtchn_fd = xen_evtchn_fd,
    .alloc_unbound = xen_alloc_unbound,
    .bind_interdomain = xen_bind_interdomain,
    .notify = xen_notify,
    .pending = xen_pending,
    .unmask = xen_unmask,
    .unbind = xen_unbind,
};
