/*
 * hvsim_dom.c - domains in hvsimd: create and destroy (xenstore nodes, sockets, name links),
 * and each guest's grant-table memory (the grant table and active table memfds, the guest
 * memory the guest registers).
 */
#define LOG_TAG "dom"
#include "hv/hvsim_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "hv/hv.h"
#include "hv/xs_server.h"

#define DOM0_NAME "Domain-0"

struct hvsim_dom *hvsim_dom_get(struct hvsim *s, uint32_t domid)
{
	return domid < DOMID_FIRST_RESERVED ? s->doms[domid] : NULL;
}

int hvsim_name_valid(const char *name)
{
	size_t n = strnlen(name, HVSIM_NAME_MAX + 1);
	int digits = 1;

	if (n == 0 || n > HVSIM_NAME_MAX)
		return -EINVAL;
	/* "." and ".." would escape DIR/names/; all digits would read as a domid. */
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
			return -EINVAL;
		if (ch < '0' || ch > '9')
			digits = 0;
	}
	return digits ? -EINVAL : 0;
}

void hvsim_dom_info(const struct hvsim_dom *d, struct hvsim_dom_info *info)
{
	memset(info, 0, sizeof(*info));
	info->domid = d->domid;
	info->mem_bytes = d->mem_bytes;
	info->nr_ports = d->nr_ports;
	if (d->mem_fd >= 0)
		info->flags |= HVSIM_DOM_MEM_REGISTERED;
	if (d->registrant)
		info->flags |= HVSIM_DOM_GUEST_ATTACHED;
	snprintf(info->name, sizeof(info->name), "%s", d->name);
}

static struct hvsim_dom *dom_by_name(struct hvsim *s, const char *name)
{
	for (uint32_t i = 0; i < DOMID_FIRST_RESERVED; i++)
		if (s->doms[i] && !strcmp(s->doms[i]->name, name))
			return s->doms[i];
	return NULL;
}

static int xs_put(struct hvsim *s, domid_t domid, const char *rel, const char *val,
		  const char *perms, size_t perms_len)
{
	char path[128];
	int rc;

	snprintf(path, sizeof(path), "/local/domain/%u%s%s", domid, rel[0] ? "/" : "", rel);
	rc = val ? xs_server_write(s->xs, path, val, strlen(val)) : 0;
	if (!rc && perms)
		rc = xs_server_set_perms(s->xs, path, perms, perms_len);
	if (rc)
		log_err("d%u: xenstore %s: %s", domid, path, strerror(-rc));
	return rc;
}

/*
 * The nodes a toolstack writes for a new domain, with libxl's permissions: the domain's home
 * and its facts belong to dom0 and the guest may read them; device/, data/ and control/ are
 * the guest's own (frontends write under device/).
 */
static int dom_xs_nodes(struct hvsim *s, struct hvsim_dom *d)
{
	char ro[32], rw[16], val[32];
	size_t ro_len, rw_len;
	int rc;

	ro_len = (size_t)snprintf(ro, sizeof(ro), "n0%cr%u", '\0', d->domid) + 1;
	rw_len = (size_t)snprintf(rw, sizeof(rw), "n%u", d->domid) + 1;
	rc = xs_put(s, d->domid, "", "", ro, ro_len);
	if (!rc)
		rc = xs_put(s, d->domid, "name", d->name, ro, ro_len);
	snprintf(val, sizeof(val), "%u", d->domid);
	if (!rc)
		rc = xs_put(s, d->domid, "domid", val, ro, ro_len);
	if (!rc)
		rc = xs_put(s, d->domid, "memory", "", ro, ro_len);
	snprintf(val, sizeof(val), "%" PRIu64, d->mem_bytes >> 10);
	if (!rc)
		rc = xs_put(s, d->domid, "memory/target", val, ro, ro_len);
	if (!rc)
		rc = xs_put(s, d->domid, "device", "", rw, rw_len);
	if (!rc)
		rc = xs_put(s, d->domid, "data", "", rw, rw_len);
	if (!rc)
		rc = xs_put(s, d->domid, "control", "", rw, rw_len);
	return rc;
}

int hvsim_dom0_init(struct hvsim *s)
{
	struct hvsim_dom *d = calloc(1, sizeof(*d));
	int rc;

	if (!d)
		return -ENOMEM;
	d->s = s;
	d->domid = 0;
	snprintf(d->name, sizeof(d->name), "%s", DOM0_NAME);
	d->mem_fd = d->gnt_fd = d->act_fd = d->listen_fd = -1;
	d->max_ports = HVSIM_MAX_PORTS_DOM0;
	s->doms[0] = d;
	rc = xs_put(s, 0, "name", DOM0_NAME, NULL, 0);
	if (!rc)
		rc = xs_put(s, 0, "domid", "0", NULL, 0);
	if (rc) {
		s->doms[0] = NULL;
		free(d);
	}
	return rc;
}

void hvsim_dom0_free(struct hvsim *s)
{
	struct hvsim_dom *d = s->doms[0];

	if (!d)
		return;
	hvsim_evtchn_close_dom(d);
	s->doms[0] = NULL;
	free(d);
}

/* A sealed memfd of @bytes: nobody it is shared with can shrink it under a mapper. */
static int sealed_memfd(const char *name, uint64_t bytes)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	int rc;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)bytes) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

static int dom_tables(struct hvsim_dom *d)
{
	char name[48];
	void *p;
	int rc;

	snprintf(name, sizeof(name), "hvsim-d%u-gnttab", d->domid);
	d->gnt_fd = sealed_memfd(name, hvsim_gnt_table_bytes(HVSIM_GNT_ENTRIES));
	if (d->gnt_fd < 0)
		return d->gnt_fd;
	snprintf(name, sizeof(name), "hvsim-d%u-active", d->domid);
	d->act_fd = sealed_memfd(name, hvsim_gnt_active_bytes(HVSIM_GNT_ENTRIES));
	if (d->act_fd < 0) {
		rc = d->act_fd;
		goto err_gnt;
	}
	p = mmap(NULL, HVSIM_GNT_ACTIVE_OFF, PROT_READ | PROT_WRITE, MAP_SHARED, d->act_fd, 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		goto err_act;
	}
	d->act_hdr = p;
	d->act_hdr->magic = HVSIM_GNT_MAGIC;
	d->act_hdr->domid = d->domid;
	d->act_hdr->nr_entries = HVSIM_GNT_ENTRIES;
	d->act_hdr->mem_frames = d->mem_bytes / HV_PAGE_SIZE;
	d->act_hdr->instance = d->instance;
	/* Release: mappers that see alive also see the header filled in. */
	__atomic_store_n(&d->act_hdr->alive, 1, __ATOMIC_RELEASE);
	return 0;

err_act:
	close(d->act_fd);
	d->act_fd = -1;
err_gnt:
	close(d->gnt_fd);
	d->gnt_fd = -1;
	return rc;
}

static void dom_free(struct hvsim_dom *d)
{
	if (d->act_hdr)
		munmap(d->act_hdr, HVSIM_GNT_ACTIVE_OFF);
	if (d->act_fd >= 0)
		close(d->act_fd);
	if (d->gnt_fd >= 0)
		close(d->gnt_fd);
	if (d->mem_fd >= 0)
		close(d->mem_fd);
	free(d->ports);
	free(d);
}

static domid_t domid_alloc(struct hvsim *s)
{
	domid_t id = s->last_domid;

	/* Like Xen, move on from the last id rather than reuse a just-freed one at once. */
	for (uint32_t i = 0; i < DOMID_FIRST_RESERVED; i++) {
		id = id + 1u >= DOMID_FIRST_RESERVED ? 1 : id + 1;
		if (!s->doms[id])
			return id;
	}
	return 0;
}

static void names_path(struct hvsim *s, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/names/%s", s->dir, name);
}

int hvsim_dom_create(struct hvsim *s, const char *name, uint64_t mem_bytes, domid_t *domid)
{
	char path[HVSIM_PATH_MAX * 2], target[64];
	struct hvsim_dom *d;
	int rc;

	if (hvsim_name_valid(name))
		return -EINVAL;
	if (mem_bytes < HVSIM_MEM_MIN || mem_bytes > HVSIM_MEM_MAX || mem_bytes % HV_PAGE_SIZE)
		return -EINVAL;
	if (dom_by_name(s, name))
		return -EEXIST;
	if (s->nr_guests >= HVSIM_MAX_DOMAINS)
		return -ENOSPC;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->s = s;
	d->domid = domid_alloc(s);
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->mem_bytes = mem_bytes;
	d->instance = ++s->next_instance;
	d->mem_fd = d->gnt_fd = d->act_fd = d->listen_fd = -1;
	d->max_ports = HVSIM_MAX_PORTS;

	rc = dom_tables(d);
	if (rc)
		goto err_free;
	snprintf(d->dir_path, sizeof(d->dir_path), "%s/domains/%u", s->dir, d->domid);
	if (mkdir(d->dir_path, 0755) < 0) {
		rc = -errno;
		log_err("d%u: mkdir %s: %s", d->domid, d->dir_path, strerror(-rc));
		goto err_free;
	}
	snprintf(path, sizeof(path), "%s/hv.sock", d->dir_path);
	rc = hvsim_listen(s, d, path);
	if (rc)
		goto err_rmdir;
	rc = dom_xs_nodes(s, d);
	if (rc)
		goto err_nodes;
	snprintf(target, sizeof(target), "../domains/%u", d->domid);
	names_path(s, name, path, sizeof(path));
	if (symlink(target, path) < 0) {
		rc = -errno;
		log_err("d%u: symlink %s: %s", d->domid, path, strerror(-rc));
		goto err_nodes;
	}
	snprintf(path, sizeof(path), "%s/xenstore.sock", d->dir_path);
	rc = xs_server_listen(s->xs, path, d->domid);
	if (rc) {
		log_err("d%u: xenstore listen %s: %s", d->domid, path, strerror(-rc));
		goto err_link;
	}
	s->doms[d->domid] = d;
	s->nr_guests++;
	s->last_domid = d->domid;
	rc = xs_server_introduce(s->xs, d->domid);
	if (rc) {
		log_err("d%u: introduce: %s", d->domid, strerror(-rc));
		s->doms[d->domid] = NULL;
		s->nr_guests--;
		xs_server_release(s->xs, d->domid);
		goto err_link;
	}
	log_info("d%u: created %s, %" PRIu64 " MiB", d->domid, d->name, mem_bytes >> 20);
	*domid = d->domid;
	return 0;

err_link:
	names_path(s, name, path, sizeof(path));
	unlink(path);
err_nodes:
	snprintf(path, sizeof(path), "/local/domain/%u", d->domid);
	xs_server_rm(s->xs, path);
	snprintf(path, sizeof(path), "%s/hv.sock", d->dir_path);
	unlink(path);
	hvsim_unlisten(s, d);
err_rmdir:
	rmdir(d->dir_path);
err_free:
	dom_free(d);
	return rc;
}

int hvsim_dom_destroy(struct hvsim *s, uint32_t domid)
{
	struct hvsim_dom *d = hvsim_dom_get(s, domid);
	char path[HVSIM_PATH_MAX * 2];

	if (domid == 0)
		return -EPERM;
	if (!d)
		return -ESRCH;
	/*
	 * Release: mappers that see the domain dead fail new maps with -ESRCH; mappings they
	 * made stay valid, like a Xen zombie domain's pages.
	 */
	__atomic_store_n(&d->act_hdr->alive, 0, __ATOMIC_RELEASE);
	for (struct hvsim_conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (c->dom == d)
			hvsim_conn_close(c);
	}
	hvsim_evtchn_close_dom(d);
	snprintf(path, sizeof(path), "%s/hv.sock", d->dir_path);
	unlink(path);
	hvsim_unlisten(s, d);
	s->doms[domid] = NULL;
	s->nr_guests--;
	xs_server_release(s->xs, d->domid);
	names_path(s, d->name, path, sizeof(path));
	unlink(path);
	if (rmdir(d->dir_path) < 0)
		log_warn("d%u: rmdir %s: %s", d->domid, d->dir_path, strerror(errno));
	log_info("d%u: destroyed %s", d->domid, d->name);
	dom_free(d);
	return 0;
}

/* Check an offered guest memory fd and seal its size. Returns 0 or -EINVAL. */
static int mem_fd_check(struct hvsim_dom *d, int fd)
{
	struct stat st;
	int fl, seals;

	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) != O_RDWR)
		return -EINVAL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != d->mem_bytes)
		return -EINVAL;
	/*
	 * Sealing is what makes the memory safe to map in dom0: a guest that could shrink it
	 * would turn every backend access into SIGBUS. Only a memfd made with
	 * MFD_ALLOW_SEALING and not sealed against it accepts these seals.
	 */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return -EINVAL;
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || !(seals & F_SEAL_SHRINK) || !(seals & F_SEAL_GROW) ||
	    (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)))
		return -EINVAL;
	/* The size cannot change any more; look again in case it did before the seal. */
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != d->mem_bytes)
		return -EINVAL;
	return 0;
}

int hvsim_dom_register_mem(struct hvsim_conn *c, int *fd, struct hvsim_mem_rep *rep, int fds_out[2])
{
	struct hvsim_dom *d = c->dom;
	int rc;

	/*
	 * A guest process that exited has hung up, but its hang-up may still wait behind this
	 * request in the loop: look, so a restarted guest does not see its old self as busy.
	 */
	if (d->registrant && d->registrant != c && hvsim_conn_hung_up(d->registrant))
		hvsim_conn_close(d->registrant);
	if (d->registrant && d->registrant != c)
		return -EBUSY;
	if (d->mem_fd < 0) {
		if (*fd < 0)
			return -ENXIO;
		rc = mem_fd_check(d, *fd);
		if (rc) {
			log_warn("d%u: refused guest memory: not a sealable %" PRIu64
				 "-byte read-write memfd",
				 d->domid, d->mem_bytes);
			return rc;
		}
		d->mem_fd = *fd;
		*fd = -1;
		log_info("d%u: guest memory registered", d->domid);
	}
	d->registrant = c;
	memset(rep, 0, sizeof(*rep));
	rep->domid = d->domid;
	rep->nr_grants = HVSIM_GNT_ENTRIES;
	rep->mem_bytes = d->mem_bytes;
	rep->instance = d->instance;
	fds_out[0] = d->mem_fd;
	fds_out[1] = d->gnt_fd;
	return 0;
}

static void ledger_free(struct hvsim_ledger *l)
{
	if (l->pins)
		munmap(l->pins, hvsim_gnt_ledger_bytes(l->view.nr_entries));
	if (l->view.table)
		munmap(l->view.table, hvsim_gnt_table_bytes(l->view.nr_entries));
	if (l->view.hdr)
		munmap(l->view.hdr, hvsim_gnt_active_bytes(l->view.nr_entries));
	if (l->fd >= 0)
		close(l->fd);
	free(l);
}

static void *map_shared(int fd, uint64_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int ledger_new(struct hvsim_dom *d, struct hvsim_ledger **out)
{
	struct hvsim_ledger *l = calloc(1, sizeof(*l));
	char name[48];
	int rc;

	if (!l)
		return -ENOMEM;
	l->domid = d->domid;
	l->view.nr_entries = HVSIM_GNT_ENTRIES;
	l->view.mem_frames = d->mem_bytes / HV_PAGE_SIZE;
	snprintf(name, sizeof(name), "hvsim-d%u-ledger", d->domid);
	l->fd = sealed_memfd(name, hvsim_gnt_ledger_bytes(HVSIM_GNT_ENTRIES));
	if (l->fd < 0) {
		rc = l->fd;
		free(l);
		return rc;
	}
	l->pins = map_shared(l->fd, hvsim_gnt_ledger_bytes(HVSIM_GNT_ENTRIES));
	l->view.table = map_shared(d->gnt_fd, hvsim_gnt_table_bytes(HVSIM_GNT_ENTRIES));
	l->view.hdr = map_shared(d->act_fd, hvsim_gnt_active_bytes(HVSIM_GNT_ENTRIES));
	if (!l->pins || !l->view.table || !l->view.hdr) {
		rc = -errno;
		ledger_free(l);
		return rc;
	}
	l->view.active = (uint32_t *)((uint8_t *)l->view.hdr + HVSIM_GNT_ACTIVE_OFF);
	*out = l;
	return 0;
}

void hvsim_ledgers_release(struct hvsim_conn *c)
{
	while (c->ledgers) {
		struct hvsim_ledger *l = c->ledgers;
		int n = hvsim_gnt_release_ledger(&l->view, l->pins);

		if (n == -EDEADLK)
			log_err("d%u: a grant entry stays locked by a dead mapper; its pins stay",
				l->domid);
		else if (n > 0)
			log_warn("d%u: released %d grant pins a dom0 process left mapped", l->domid,
				 n);
		c->ledgers = l->next;
		ledger_free(l);
	}
}

int hvsim_dom_get_mem(struct hvsim_conn *c, uint32_t domid, struct hvsim_mem_rep *rep,
		      int fds_out[4])
{
	struct hvsim_ledger *l = NULL;
	struct hvsim_dom *d;
	int rc;

	if (domid == 0)
		return -EINVAL;
	d = hvsim_dom_get(c->s, domid);
	if (!d)
		return -ESRCH;
	if (d->mem_fd < 0)
		return -ENXIO;
	rc = ledger_new(d, &l);
	if (rc)
		return rc;
	l->next = c->ledgers;
	c->ledgers = l;
	memset(rep, 0, sizeof(*rep));
	rep->domid = d->domid;
	rep->nr_grants = HVSIM_GNT_ENTRIES;
	rep->mem_bytes = d->mem_bytes;
	rep->instance = d->instance;
	fds_out[0] = d->mem_fd;
	fds_out[1] = d->gnt_fd;
	fds_out[2] = d->act_fd;
	fds_out[3] = l->fd;
	return 0;
}
