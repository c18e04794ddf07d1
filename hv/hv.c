/*
 * hv.c - hv.h's entry points: choose the implementation, dispatch through its ops table, and
 * the pieces common to both (kinds, error sentences, libxenstore access).
 */
#include "hv/hv_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xenstore.h>

int hv_open(struct hv **out, enum hv_kind kind, const char *dir)
{
	switch (kind) {
	case HV_KIND_SIM:
		if (!dir)
			return -EINVAL;
		return hv_sim_open(out, dir);
	case HV_KIND_XEN:
		return hv_xen_open(out);
	}
	return -EINVAL;
}

void hv_close(struct hv *hv)
{
	if (hv)
		hv->ops->close(hv);
}

domid_t hv_domid(const struct hv *hv)
{
	return hv->domid;
}

enum hv_kind hv_kind(const struct hv *hv)
{
	return hv->kind;
}

const char *hv_xenstore_path(const struct hv *hv)
{
	return hv->xs_path[0] ? hv->xs_path : NULL;
}

/* libxenstore reads XENSTORED_PATH from the environment inside xs_open, nowhere else. */
static pthread_mutex_t xs_env_lock = PTHREAD_MUTEX_INITIALIZER;

struct xs_handle *hv_xs_open(const struct hv *hv)
{
	struct xs_handle *h;
	char *old = NULL;
	const char *cur;
	int err;

	if (!hv->xs_path[0])
		return xs_open(0);
	pthread_mutex_lock(&xs_env_lock);
	cur = getenv("XENSTORED_PATH");
	if (cur) {
		old = strdup(cur);
		if (!old) {
			pthread_mutex_unlock(&xs_env_lock);
			errno = ENOMEM;
			return NULL;
		}
	}
	if (setenv("XENSTORED_PATH", hv->xs_path, 1) < 0) {
		err = errno;
		free(old);
		pthread_mutex_unlock(&xs_env_lock);
		errno = err;
		return NULL;
	}
	/* SOCKETONLY: never fall back to /dev/xen/xenbus, which would be a real Xen's. */
	h = xs_open(XS_OPEN_SOCKETONLY);
	err = errno;
	if (old)
		setenv("XENSTORED_PATH", old, 1);
	else
		unsetenv("XENSTORED_PATH");
	free(old);
	pthread_mutex_unlock(&xs_env_lock);
	errno = err;
	return h;
}

int hv_kind_parse(const char *s, enum hv_kind *kind)
{
	if (!strcmp(s, "sim"))
		*kind = HV_KIND_SIM;
	else if (!strcmp(s, "xen"))
		*kind = HV_KIND_XEN;
	else
		return -EINVAL;
	return 0;
}

const char *hv_strerror(int err)
{
	switch (-err) {
	case 0:
		return "success";
	case EINVAL:
		return "invalid argument (bad grant reference, port or parameter)";
	case EPERM:
		return "not permitted (grant entry does not permit access, or not allowed here)";
	case EACCES:
		return "the grant is for another domain";
	case EROFS:
		return "a read-only grant cannot be mapped writable";
	case EFAULT:
		return "the granted frame is outside the guest's memory";
	case ESRCH:
		return "no such domain (or it was destroyed)";
	case ENXIO:
		return "the guest has not registered its memory yet";
	case EBUSY:
		return "busy: the grant is still mapped, or another live process holds the guest";
	case EOVERFLOW:
		return "the grant is mapped too many times";
	case ENODEV:
		return "no Xen hypervisor found; use the sim";
	case ENOENT:
		return "hvsimd is not running there (no socket)";
	case ECONNREFUSED:
		return "hvsimd is not running there (connection refused)";
	case EPIPE:
		return "hvsimd went away";
	case EPROTO:
		return "protocol error talking to hvsimd";
	case EOPNOTSUPP:
		return "not supported by this hypervisor kind (the guest side exists only in the "
		       "sim)";
	case ENOTCONN:
		return "the event channel has no peer";
	case ENOSPC:
		return "no room left (grant references, ports or domains)";
	case ENOMEM:
		return "out of memory (or no free guest frames)";
	case EEXIST:
		return "a domain with that name exists";
	case ENAMETOOLONG:
		return "the directory path is too long for its sockets";
	default:
		return strerror(err < 0 ? -err : err);
	}
}

/* ---- dispatch ---- */

int hv_gnttab_open(struct hv *hv, struct hv_gnttab **out)
{
	return hv->ops->gnttab_open(hv, out);
}

void hv_gnttab_close(struct hv_gnttab *g)
{
	if (g)
		g->hv->ops->gnttab_close(g);
}

static int prot_ok(unsigned prot)
{
	return prot && !(prot & ~(HV_PROT_READ | HV_PROT_WRITE));
}

int hv_gnttab_map_contig(struct hv_gnttab *g, domid_t domid, uint32_t count,
			 const grant_ref_t *refs, unsigned prot, void **addr)
{
	if (!count || !prot_ok(prot))
		return -EINVAL;
	return g->hv->ops->map_contig(g, domid, count, refs, prot, addr);
}

int hv_gnttab_unmap_contig(struct hv_gnttab *g, void *addr, uint32_t count)
{
	return g->hv->ops->unmap_contig(g, addr, count);
}

int hv_gnttab_map_pages(struct hv_gnttab *g, domid_t domid, uint32_t count, const grant_ref_t *refs,
			unsigned prot, void **addrs, int *status)
{
	if (!prot_ok(prot)) {
		for (uint32_t i = 0; i < count; i++) {
			addrs[i] = NULL;
			status[i] = -EINVAL;
		}
		return (int)count;
	}
	return g->hv->ops->map_pages(g, domid, count, refs, prot, addrs, status);
}

int hv_gnttab_unmap_pages(struct hv_gnttab *g, domid_t domid, uint32_t count,
			  const grant_ref_t *refs, unsigned prot, void *const *addrs)
{
	if (!prot_ok(prot))
		return -EINVAL;
	return g->hv->ops->unmap_pages(g, domid, count, refs, prot, addrs);
}

int hv_evtchn_open(struct hv *hv, struct hv_evtchn **out)
{
	return hv->ops->evtchn_open(hv, out);
}

void hv_evtchn_close(struct hv_evtchn *e)
{
	if (e)
		e->hv->ops->evtchn_close(e);
}

int hv_evtchn_fd(struct hv_evtchn *e)
{
	return e->hv->ops->evtchn_fd(e);
}

int hv_evtchn_alloc_unbound(struct hv_evtchn *e, domid_t remote, evtchn_port_t *port)
{
	return e->hv->ops->alloc_unbound(e, remote, port);
}

int hv_evtchn_bind_interdomain(struct hv_evtchn *e, domid_t remote, evtchn_port_t remote_port,
			       evtchn_port_t *port)
{
	return e->hv->ops->bind_interdomain(e, remote, remote_port, port);
}

int hv_evtchn_notify(struct hv_evtchn *e, evtchn_port_t port)
{
	return e->hv->ops->notify(e, port);
}

int hv_evtchn_pending(struct hv_evtchn *e, evtchn_port_t *port)
{
	return e->hv->ops->pending(e, port);
}

int hv_evtchn_unmask(struct hv_evtchn *e, evtchn_port_t port)
{
	return e->hv->ops->unmask(e, port);
}

int hv_evtchn_unbind(struct hv_evtchn *e, evtchn_port_t port)
{
	return e->hv->ops->unbind(e, port);
}
