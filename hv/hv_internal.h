/*
 * hv_internal.h - the ops table behind hv.h and the base structs every implementation embeds
 * (hv_sim.c: the sim; hv_xen.c: libxengnttab / libxenevtchn). hv.c dispatches through it.
 */
#ifndef SLUICE_HV_HV_INTERNAL_H
#define SLUICE_HV_HV_INTERNAL_H

#include "hv/hv.h"

struct hv_ops {
	void (*close)(struct hv *hv);

	int (*gnttab_open)(struct hv *hv, struct hv_gnttab **out);
	void (*gnttab_close)(struct hv_gnttab *g);
	int (*map_contig)(struct hv_gnttab *g, domid_t domid, uint32_t count,
			  const grant_ref_t *refs, unsigned prot, void **addr);
	int (*unmap_contig)(struct hv_gnttab *g, void *addr, uint32_t count);
	int (*map_pages)(struct hv_gnttab *g, domid_t domid, uint32_t count,
			 const grant_ref_t *refs, unsigned prot, void **addrs, int *status);
	int (*unmap_pages)(struct hv_gnttab *g, domid_t domid, uint32_t count,
			   const grant_ref_t *refs, unsigned prot, void *const *addrs);

	int (*evtchn_open)(struct hv *hv, struct hv_evtchn **out);
	void (*evtchn_close)(struct hv_evtchn *e);
	int (*evtchn_fd)(struct hv_evtchn *e);
	int (*alloc_unbound)(struct hv_evtchn *e, domid_t remote, evtchn_port_t *port);
	int (*bind_interdomain)(struct hv_evtchn *e, domid_t remote, evtchn_port_t remote_port,
				evtchn_port_t *port);
	int (*notify)(struct hv_evtchn *e, evtchn_port_t port);
	int (*pending)(struct hv_evtchn *e, evtchn_port_t *port);
	int (*unmask)(struct hv_evtchn *e, evtchn_port_t port);
	int (*unbind)(struct hv_evtchn *e, evtchn_port_t port);
};

/* Longest path hv keeps (sim sockets live under a directory short enough for sun_path). */
#define HV_PATH_MAX 256

struct hv {
	const struct hv_ops *ops;
	enum hv_kind kind;
	domid_t domid;
	char xs_path[HV_PATH_MAX]; /**< sim: this context's xenstore socket; xen: empty */
};

/** First member of every implementation's grant-table handle. */
struct hv_gnttab {
	struct hv *hv;
};

/** First member of every implementation's event-channel handle. */
struct hv_evtchn {
	struct hv *hv;
};

extern const struct hv_ops hv_sim_ops;
extern const struct hv_ops hv_xen_ops;

/** Open a dom0 context on the sim in @dir (hv_sim.c). */
int hv_sim_open(struct hv **out, const char *dir);

/** Open a dom0 context on real Xen (hv_xen.c): -ENODEV without /dev/xen. */
int hv_xen_open(struct hv **out);

#endif
