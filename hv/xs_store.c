/*
 * xs_store.c - the xenstore database: nodes, Xen permissions, generation counts, transactions
 * and node quotas. Pure data structure, no I/O; the server calls in with an already parsed and
 * canonicalized request.
 *
 * Layout follows C xenstored's: a hash table from full path to node record; a node holds its
 * value, its permission list and its children's names as one NUL-separated blob in creation
 * order (what XS_DIRECTORY returns verbatim). Every change stamps the node with a new value of
 * a global generation counter.
 *
 * A transaction is an overlay: the first time it touches a path (read or write, present or
 * not) it records the generation the path had and takes a private copy of the node. All later
 * accesses in the transaction use the copy. Commit checks every recorded generation against the
 * database (-EAGAIN on any difference, so the client retries) and then installs the modified
 * copies. Watch events for changes made inside are queued per path and reported at commit.
 */
#define LOG_TAG "xs"
#include "hv/xs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XS_NR_DOMIDS   65536
#define HT_MIN_BUCKETS 256

/* Intrusive chained hash table keyed by string. */
struct ht_ent {
	struct ht_ent *next;
	char *key;
	uint32_t hash;
};

struct htab {
	struct ht_ent **b;
	uint32_t mask; /**< buckets - 1 */
	uint32_t n;
};

struct xs_node {
	struct ht_ent h; /**< h.key is the full path, owned */
	char *data;
	uint32_t datalen;
	char *children; /**< child names, each NUL-terminated */
	uint32_t childlen;
	struct xs_perm *perms;
	uint32_t nperms;
	uint64_t gen;
};

/* A path a transaction has touched. */
struct xs_acc {
	struct ht_ent h;	   /**< h.key is the path, owned */
	struct xs_node *node;	   /**< the transaction's copy, NULL if absent in its view */
	uint64_t gen;		   /**< generation in the database at first touch */
	struct xs_perm *old_perms; /**< database perms at first touch (for watch visibility) */
	uint32_t old_nperms;
	bool modified;
	bool fire;	     /**< a watch event is due at commit */
	bool exact;	     /**< ...for exactly this path only */
	struct xs_acc *next; /**< touch order */
};

struct xs_txn {
	struct xs_store *st;
	domid_t domid;
	struct htab acc;
	struct xs_acc *head, **tail;
	uint32_t nacc;
	int64_t own_delta; /**< change of the nodes @domid owns, for the quota check */
	uint64_t bytes;	   /**< memory the overlay holds, roughly, for max_txn_bytes */
	bool fail;	   /**< a quota was hit inside: the commit must fail */
};

struct xs_store {
	struct htab db;
	uint64_t gen;
	uint32_t *owned; /**< nodes owned, per domid */
	struct xs_store_limits lim;
	xs_event_fn fn;
	void *arg;
};

/* ---- hash table ---- */

static uint32_t hash_str(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	while (*s) {
		h ^= (unsigned char)*s++;
		h *= 16777619u;
	}
	return h;
}

static int ht_init(struct htab *h)
{
	h->b = calloc(HT_MIN_BUCKETS, sizeof(*h->b));
	if (!h->b)
		return -ENOMEM;
	h->mask = HT_MIN_BUCKETS - 1;
	h->n = 0;
	return 0;
}

static struct ht_ent *ht_find(const struct htab *h, const char *key)
{
	uint32_t hash = hash_str(key);

	for (struct ht_ent *e = h->b[hash & h->mask]; e; e = e->next)
		if (e->hash == hash && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

/* Never fails: when growing is impossible the chains just get longer. */
static void ht_insert(struct htab *h, struct ht_ent *e)
{
	e->hash = hash_str(e->key);
	if (h->n >= h->mask + 1 && h->mask < (1u << 30)) {
		uint32_t nb = (h->mask + 1) * 2;
		struct ht_ent **b = calloc(nb, sizeof(*b));

		if (b) {
			for (uint32_t i = 0; i <= h->mask; i++) {
				while (h->b[i]) {
					struct ht_ent *x = h->b[i];

					h->b[i] = x->next;
					x->next = b[x->hash & (nb - 1)];
					b[x->hash & (nb - 1)] = x;
				}
			}
			free(h->b);
			h->b = b;
			h->mask = nb - 1;
		}
	}
	e->next = h->b[e->hash & h->mask];
	h->b[e->hash & h->mask] = e;
	h->n++;
}

static void ht_remove(struct htab *h, struct ht_ent *e)
{
	struct ht_ent **pp = &h->b[e->hash & h->mask];

	while (*pp && *pp != e)
		pp = &(*pp)->next;
	if (*pp) {
		*pp = e->next;
		h->n--;
	}
}

/* ---- nodes ---- */

static void node_free(struct xs_node *n)
{
	if (!n)
		return;
	free(n->h.key);
	free(n->data);
	free(n->children);
	free(n->perms);
	free(n);
}

static struct xs_node *node_new(const char *path, const void *data, uint32_t datalen,
				const char *children, uint32_t childlen,
				const struct xs_perm *perms, uint32_t nperms)
{
	struct xs_node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->h.key = strdup(path);
	n->perms = malloc(nperms * sizeof(*perms));
	if (datalen)
		n->data = malloc(datalen);
	if (childlen)
		n->children = malloc(childlen);
	if (!n->h.key || !n->perms || (datalen && !n->data) || (childlen && !n->children)) {
		node_free(n);
		return NULL;
	}
	memcpy(n->perms, perms, nperms * sizeof(*perms));
	n->nperms = nperms;
	if (datalen)
		memcpy(n->data, data, datalen);
	n->datalen = datalen;
	if (childlen)
		memcpy(n->children, children, childlen);
	n->childlen = childlen;
	return n;
}

static struct xs_node *node_dup(const struct xs_node *o)
{
	struct xs_node *n =
	    node_new(o->h.key, o->data, o->datalen, o->children, o->childlen, o->perms, o->nperms);

	if (n)
		n->gen = o->gen;
	return n;
}

static domid_t node_owner(const struct xs_node *n)
{
	return n->perms[0].id;
}

static size_t node_bytes(const struct xs_node *n)
{
	return sizeof(*n) + strlen(n->h.key) + n->datalen + n->childlen +
	       n->nperms * sizeof(*n->perms);
}

/*
 * Account @bytes more in @t's overlay. A guest's transactions are bounded so that opening many
 * of them and touching big nodes cannot pin unbounded memory; over the budget the transaction
 * fails for good.
 */
static int txn_charge(struct xs_txn *t, size_t bytes)
{
	const struct xs_store_limits *lim;

	if (!t)
		return 0;
	lim = &t->st->lim;
	t->bytes += bytes;
	if (t->domid != 0 && lim->max_txn_bytes && t->bytes > lim->max_txn_bytes) {
		t->fail = true;
		return -ENOSPC;
	}
	return 0;
}

static const char *basename_of(const char *path)
{
	return strrchr(path, '/') + 1;
}

/* Parent of a canonical path ("@x" and "/x" have "/"). @out holds XS_PATH_BUF bytes. */
static void parent_of(const char *path, char *out)
{
	const char *slash = strrchr(path + 1, '/');
	size_t len = slash ? (size_t)(slash - path) : 1;

	memcpy(out, slash ? path : "/", len);
	out[len] = '\0';
}

static int child_find(const struct xs_node *n, const char *name, uint32_t *off)
{
	for (uint32_t i = 0; i < n->childlen; i += (uint32_t)strlen(n->children + i) + 1) {
		if (strcmp(n->children + i, name) == 0) {
			*off = i;
			return 1;
		}
	}
	return 0;
}

static int child_add(struct xs_node *n, const char *name)
{
	size_t len = strlen(name) + 1;
	char *c = realloc(n->children, n->childlen + len);

	if (!c)
		return -ENOMEM;
	memcpy(c + n->childlen, name, len);
	n->children = c;
	n->childlen += (uint32_t)len;
	return 0;
}

static void child_del(struct xs_node *n, const char *name)
{
	uint32_t off, len;

	if (!child_find(n, name, &off))
		return;
	len = (uint32_t)strlen(n->children + off) + 1;
	memmove(n->children + off, n->children + off + len, n->childlen - off - len);
	n->childlen -= len;
}

/* ---- permissions and paths ---- */

unsigned int xs_perm_for(domid_t domid, const struct xs_perm *perms, uint32_t nperms)
{
	if (domid == 0 || (nperms && perms[0].id == domid))
		return XS_P_READ | XS_P_WRITE | XS_P_OWNER;
	if (!nperms)
		return XS_P_NONE;
	for (uint32_t i = 1; i < nperms; i++)
		if (perms[i].id == domid)
			return perms[i].perms;
	return perms[0].perms;
}

int xs_perms_parse(const char *s, uint32_t n, struct xs_perm *out)
{
	for (uint32_t i = 0; i < n; i++) {
		unsigned long id = 0;
		const char *d = s + 1;

		switch (s[0]) {
		case 'n':
			out[i].perms = XS_P_NONE;
			break;
		case 'r':
			out[i].perms = XS_P_READ;
			break;
		case 'w':
			out[i].perms = XS_P_WRITE;
			break;
		case 'b':
			out[i].perms = XS_P_READ | XS_P_WRITE;
			break;
		default:
			return -EINVAL;
		}
		if (!*d)
			return -EINVAL;
		for (; *d; d++) {
			if (*d < '0' || *d > '9')
				return -EINVAL;
			id = id * 10 + (unsigned long)(*d - '0');
			if (id > 65535)
				return -EINVAL;
		}
		out[i].id = (domid_t)id;
		s = d + 1;
	}
	return 0;
}

int xs_perm_format(const struct xs_perm *p, char *buf)
{
	static const char letters[] = "nrwb";

	return snprintf(buf, XS_PERM_STR_MAX, "%c%u", letters[p->perms & 3], (unsigned)p->id);
}

static const char path_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/_@";

/* Length of "/local/domain/<id>/" at the start of @p, or 0. */
static size_t local_prefix_len(const char *p)
{
	static const char pre[] = "/local/domain/";
	size_t i = sizeof(pre) - 1, digits = 0;

	if (strncmp(p, pre, i) != 0)
		return 0;
	while (p[i] >= '0' && p[i] <= '9' && digits < 5) {
		i++;
		digits++;
	}
	return (digits && p[i] == '/') ? i + 1 : 0;
}

int xs_canonicalize(domid_t domid, const char *in, int allow_special, char *out, int *relative)
{
	size_t inlen = strlen(in), off = 0, len;
	int rel;

	if (strspn(in, path_chars) != inlen || (in[0] == '@' && !allow_special))
		return -EINVAL;
	rel = in[0] != '/' && in[0] != '@';
	if (inlen > XENSTORE_ABS_PATH_MAX)
		return -EINVAL;
	if (rel)
		off = (size_t)snprintf(out, XS_PATH_BUF, "/local/domain/%u/", (unsigned)domid);
	len = off + inlen;
	if (len > XENSTORE_ABS_PATH_MAX)
		return -EINVAL;
	memcpy(out + off, in, inlen + 1);
	if ((len > 1 && out[len - 1] == '/') || strstr(out, "//"))
		return -EINVAL;
	if (domid != 0 && len - local_prefix_len(out) > XENSTORE_REL_PATH_MAX)
		return -EINVAL;
	if (relative)
		*relative = rel;
	return 0;
}

/* ---- the caller's view: the database, or a transaction's overlay ---- */

static struct xs_node *db_find(const struct xs_store *st, const char *path)
{
	return (struct xs_node *)ht_find(&st->db, path);
}

static struct xs_acc *acc_find(const struct xs_txn *t, const char *path)
{
	return (struct xs_acc *)ht_find(&t->acc, path);
}

static void acc_free(struct xs_acc *a)
{
	free(a->h.key);
	node_free(a->node);
	free(a->old_perms);
	free(a);
}

/* First touch of @path by @t: record its generation and copy it. */
static int acc_new(struct xs_txn *t, const char *path, struct xs_acc **out)
{
	struct xs_store *st = t->st;
	const struct xs_node *g = db_find(st, path);
	struct xs_acc *a;

	if (t->domid != 0 && st->lim.max_txn_nodes && t->nacc >= st->lim.max_txn_nodes) {
		t->fail = true;
		return -ENOSPC;
	}
	if (txn_charge(t, sizeof(*a) + 2 * strlen(path) + (g ? node_bytes(g) : 0)))
		return -ENOSPC;
	a = calloc(1, sizeof(*a));
	if (!a)
		goto nomem;
	a->h.key = strdup(path);
	if (!a->h.key)
		goto nomem;
	a->gen = g ? g->gen : XS_NO_GEN;
	if (g) {
		a->node = node_dup(g);
		a->old_perms = malloc(g->nperms * sizeof(*g->perms));
		if (!a->node || !a->old_perms)
			goto nomem;
		memcpy(a->old_perms, g->perms, g->nperms * sizeof(*g->perms));
		a->old_nperms = g->nperms;
	}
	ht_insert(&t->acc, &a->h);
	*t->tail = a;
	t->tail = &a->next;
	t->nacc++;
	*out = a;
	return 0;

nomem:
	if (a)
		acc_free(a);
	/* The transaction may now have an incomplete view: never let it commit. */
	t->fail = true;
	return -ENOMEM;
}

/* Look @path up in the caller's view: *out is the node or NULL. */
static int view_get(struct xs_store *st, struct xs_txn *t, const char *path, struct xs_node **out)
{
	struct xs_acc *a;
	int rc;

	if (!t) {
		*out = db_find(st, path);
		return 0;
	}
	a = acc_find(t, path);
	if (!a) {
		rc = acc_new(t, path, &a);
		if (rc)
			return rc;
	}
	*out = a->node;
	return 0;
}

/* @n (found by view_get) was changed in place. */
static void view_touch(struct xs_store *st, struct xs_txn *t, struct xs_node *n)
{
	n->gen = ++st->gen;
	if (t)
		acc_find(t, n->h.key)->modified = true;
}

/* Add a new node where view_get just found nothing. Cannot fail. */
static void view_insert(struct xs_store *st, struct xs_txn *t, struct xs_node *n)
{
	n->gen = ++st->gen;
	if (t) {
		struct xs_acc *a = acc_find(t, n->h.key);

		a->node = n;
		a->modified = true;
		if (node_owner(n) == t->domid)
			t->own_delta++;
		return;
	}
	ht_insert(&st->db, &n->h);
	st->owned[node_owner(n)]++;
}

/* Remove @n from the view; returns its perms list, now the caller's to free. */
static struct xs_perm *view_delete(struct xs_store *st, struct xs_txn *t, struct xs_node *n,
				   uint32_t *nperms)
{
	struct xs_perm *perms = n->perms;

	*nperms = n->nperms;
	n->perms = NULL;
	if (t) {
		struct xs_acc *a = acc_find(t, n->h.key);

		if (perms[0].id == t->domid)
			t->own_delta--;
		a->node = NULL;
		a->modified = true;
	} else {
		st->owned[perms[0].id]--;
		ht_remove(&st->db, &n->h);
	}
	node_free(n);
	return perms;
}

static void view_event(struct xs_store *st, struct xs_txn *t, const char *path, int exact,
		       const struct xs_perm *perms, uint32_t nperms,
		       const struct xs_perm *old_perms, uint32_t old_nperms)
{
	struct xs_event ev = {
	    .path = path,
	    .exact = exact,
	    .perms = perms,
	    .nperms = nperms,
	    .old_perms = old_perms,
	    .old_nperms = old_nperms,
	};

	if (t) {
		struct xs_acc *a = acc_find(t, path);

		/* A subtree event replaces an exact one, never the other way round. */
		a->exact = a->fire ? (a->exact && exact) : exact;
		a->fire = true;
		return;
	}
	if (st->fn)
		st->fn(st->arg, &ev);
}

/* Owned-node count of @domid as seen by @t (for the create-time quota check). */
static int quota_allows(const struct xs_store *st, domid_t domid, const struct xs_txn *t,
			uint32_t add)
{
	int64_t cur = st->owned[domid] + (t ? t->own_delta : 0);

	if (domid == 0 || !st->lim.max_nodes_per_dom)
		return 1;
	return cur + add <= st->lim.max_nodes_per_dom;
}

/*
 * Find @path with access @perm. If it is missing or not accessible, answer like xenstored: the
 * caller learns ENOENT only if the nearest existing ancestor would grant @perm, EACCES otherwise.
 */
static int get_node(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		    unsigned int perm, struct xs_node **out)
{
	char p[XS_PATH_BUF];
	struct xs_node *n, *anc = NULL;
	int rc, err;

	*out = NULL;
	rc = view_get(st, t, path, &n);
	if (rc)
		return rc;
	if (n && (xs_perm_for(domid, n->perms, n->nperms) & perm) == perm) {
		*out = n;
		return 0;
	}
	err = n ? -EACCES : -ENOENT;
	snprintf(p, sizeof(p), "%s", path);
	do {
		parent_of(p, p);
		rc = view_get(st, t, p, &anc);
		if (rc)
			return rc;
	} while (!anc && strcmp(p, "/") != 0);
	if (!anc || !(xs_perm_for(domid, anc->perms, anc->nperms) & perm))
		return -EACCES;
	return err;
}

/* ---- operations ---- */

int xs_store_read(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		  const char **val, uint32_t *len)
{
	struct xs_node *n;
	int rc = get_node(st, domid, t, path, XS_P_READ, &n);

	if (rc)
		return rc;
	*val = n->data ? n->data : "";
	*len = n->datalen;
	return 0;
}

/*
 * Create @path (known missing) and its missing parents. Every new node copies its parent's
 * perms; a guest becomes the owner of what it creates. Allocation happens before anything is
 * linked, so a failure leaves the view unchanged.
 */
static int create_node(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		       const void *val, uint32_t len, struct xs_node **out)
{
	char p[XS_PATH_BUF];
	struct xs_node *parent = NULL, **chain = NULL;
	uint32_t levels = 0, i;
	int rc;

	/* Walk up to the nearest existing ancestor; levels = nodes to create. */
	snprintf(p, sizeof(p), "%s", path);
	do {
		levels++;
		parent_of(p, p);
		rc = view_get(st, t, p, &parent);
		if (rc)
			return rc;
	} while (!parent && strcmp(p, "/") != 0);
	if (!parent)
		return -EINVAL; /* no root: cannot happen, the root is never removed */
	if (!quota_allows(st, domid, t, levels))
		return -ENOSPC;

	chain = calloc(levels, sizeof(*chain));
	if (!chain)
		return -ENOMEM;
	/* chain[0] is @path, chain[levels - 1] the child of @parent. */
	snprintf(p, sizeof(p), "%s", path);
	for (i = 0; i < levels; i++) {
		chain[i] = node_new(p, i ? NULL : val, i ? 0 : len, NULL, 0, parent->perms,
				    parent->nperms);
		if (!chain[i]) {
			rc = -ENOMEM;
			goto err_free;
		}
		if (domid != 0)
			chain[i]->perms[0].id = domid;
		parent_of(p, p);
	}
	for (i = 0; i < levels; i++) {
		rc = txn_charge(t, node_bytes(chain[i]) + strlen(chain[i]->h.key));
		if (rc)
			goto err_free;
	}
	/* Grow every parent's child list first; the new nodes have none yet. */
	rc = child_add(parent, basename_of(chain[levels - 1]->h.key));
	if (rc)
		goto err_free;
	for (i = 1; i < levels; i++) {
		rc = child_add(chain[i], basename_of(chain[i - 1]->h.key));
		if (rc) {
			child_del(parent, basename_of(chain[levels - 1]->h.key));
			goto err_free;
		}
	}
	view_touch(st, t, parent);
	for (i = levels; i-- > 0;)
		view_insert(st, t, chain[i]);
	*out = chain[0];
	free(chain);
	return 0;

err_free:
	for (i = 0; i < levels; i++)
		node_free(chain[i]);
	free(chain);
	return rc;
}

int xs_store_write(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		   const void *val, uint32_t len)
{
	struct xs_node *n;
	int rc;

	if (path[0] != '/')
		return -EINVAL;
	if (domid != 0 && st->lim.max_value_bytes && len > st->lim.max_value_bytes)
		return -ENOSPC;
	rc = get_node(st, domid, t, path, XS_P_WRITE, &n);
	if (rc == -ENOENT) {
		rc = create_node(st, domid, t, path, val, len, &n);
	} else if (!rc) {
		char *d = NULL;

		rc = txn_charge(t, len);
		if (rc)
			return rc;
		if (len) {
			d = malloc(len);
			if (!d)
				return -ENOMEM;
			memcpy(d, val, len);
		}
		free(n->data);
		n->data = d;
		n->datalen = len;
		view_touch(st, t, n);
	}
	if (rc)
		return rc;
	view_event(st, t, path, 0, n->perms, n->nperms, NULL, 0);
	return 0;
}

int xs_store_mkdir(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path)
{
	struct xs_node *n;
	int rc;

	if (path[0] != '/')
		return -EINVAL;
	rc = get_node(st, domid, t, path, XS_P_WRITE, &n);
	if (rc != -ENOENT)
		return rc;
	rc = create_node(st, domid, t, path, NULL, 0, &n);
	if (rc)
		return rc;
	view_event(st, t, path, 0, n->perms, n->nperms, NULL, 0);
	return 0;
}

/*
 * Delete @n and its subtree, children first, reporting each node (exactly, the root of the
 * removal as a subtree event so watches on its parents fire too). @p holds @n's path and is
 * used as scratch for the children's.
 */
static int rm_walk(struct xs_store *st, struct xs_txn *t, struct xs_node *n, char *p, int root)
{
	size_t plen = strlen(p);
	struct xs_perm *perms;
	uint32_t nperms;
	int rc;

	for (uint32_t i = 0; i < n->childlen; i += (uint32_t)strlen(n->children + i) + 1) {
		const char *name = n->children + i;
		struct xs_node *c;

		if (plen + 1 + strlen(name) >= XS_PATH_BUF)
			continue; /* cannot exist: no such path was ever accepted */
		snprintf(p + plen, XS_PATH_BUF - plen, "%s%s", plen > 1 ? "/" : "", name);
		rc = view_get(st, t, p, &c);
		if (!rc && c)
			rc = rm_walk(st, t, c, p, 0);
		p[plen] = '\0';
		if (rc)
			return rc;
	}
	/* The event needs the perms of the node, which is about to go. */
	perms = view_delete(st, t, n, &nperms);
	view_event(st, t, p, !root, perms, nperms, NULL, 0);
	free(perms);
	return 0;
}

int xs_store_rm(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path)
{
	char p[XS_PATH_BUF];
	struct xs_node *n, *parent;
	int rc;

	if (path[0] != '/')
		return -EINVAL;
	rc = get_node(st, domid, t, path, XS_P_WRITE, &n);
	parent_of(path, p);
	if (rc == -ENOENT) {
		/* Removing what is not there is fine, as long as the parent is. */
		rc = view_get(st, t, p, &parent);
		if (rc)
			return rc;
		return parent ? 0 : -ENOENT;
	}
	if (rc)
		return rc;
	if (strcmp(path, "/") == 0)
		return -EINVAL;
	rc = view_get(st, t, p, &parent);
	if (rc)
		return rc;
	if (!parent)
		return -EINVAL;
	child_del(parent, basename_of(path));
	view_touch(st, t, parent);
	snprintf(p, sizeof(p), "%s", path);
	return rm_walk(st, t, n, p, 1);
}

int xs_store_directory(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		       const char **children, uint32_t *len, uint64_t *gen)
{
	struct xs_node *n;
	int rc = get_node(st, domid, t, path, XS_P_READ, &n);

	if (rc)
		return rc;
	*children = n->children ? n->children : "";
	*len = n->childlen;
	*gen = n->gen;
	return 0;
}

int xs_store_get_perms(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		       const struct xs_perm **perms, uint32_t *n)
{
	struct xs_node *node;
	int rc = get_node(st, domid, t, path, XS_P_READ, &node);

	if (rc)
		return rc;
	*perms = node->perms;
	*n = node->nperms;
	return 0;
}

int xs_store_set_perms(struct xs_store *st, domid_t domid, struct xs_txn *t, const char *path,
		       const struct xs_perm *perms, uint32_t n)
{
	struct xs_node *node;
	struct xs_perm *np, *old;
	uint32_t old_n;
	int rc;

	if (n < 1)
		return -EINVAL;
	if (domid != 0 && st->lim.max_perms_per_node && n > st->lim.max_perms_per_node)
		return -ENOSPC;
	rc = get_node(st, domid, t, path, XS_P_WRITE | XS_P_OWNER, &node);
	if (rc)
		return rc;
	if (domid != 0 && perms[0].id != node_owner(node))
		return -EPERM;
	rc = txn_charge(t, n * sizeof(*np));
	if (rc)
		return rc;
	np = malloc(n * sizeof(*np));
	if (!np)
		return -ENOMEM;
	memcpy(np, perms, n * sizeof(*np));
	old = node->perms;
	old_n = node->nperms;
	if (!t) {
		st->owned[old[0].id]--;
		st->owned[np[0].id]++;
	} else {
		t->own_delta += (np[0].id == t->domid) - (old[0].id == t->domid);
	}
	node->perms = np;
	node->nperms = n;
	view_touch(st, t, node);
	view_event(st, t, path, 0, np, n, old, old_n);
	free(old);
	return 0;
}

/* ---- transactions ---- */

int xs_store_txn_start(struct xs_store *st, domid_t domid, struct xs_txn **out)
{
	struct xs_txn *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	if (ht_init(&t->acc)) {
		free(t);
		return -ENOMEM;
	}
	t->st = st;
	t->domid = domid;
	t->tail = &t->head;
	*out = t;
	return 0;
}

static void txn_free(struct xs_txn *t)
{
	while (t->head) {
		struct xs_acc *a = t->head;

		t->head = a->next;
		acc_free(a);
	}
	free(t->acc.b);
	free(t);
}

/* Install the modified copies; cannot fail. */
static void txn_apply(struct xs_store *st, struct xs_txn *t)
{
	for (struct xs_acc *a = t->head; a; a = a->next) {
		struct xs_node *cur;

		if (!a->modified)
			continue;
		cur = db_find(st, a->h.key);
		if (cur) {
			st->owned[node_owner(cur)]--;
			ht_remove(&st->db, &cur->h);
			node_free(cur);
		}
		if (a->node) {
			a->node->gen = ++st->gen;
			ht_insert(&st->db, &a->node->h);
			st->owned[node_owner(a->node)]++;
			a->node = NULL;
		}
	}
}

int xs_store_txn_end(struct xs_txn *t, int commit)
{
	struct xs_store *st = t->st;
	int64_t delta = 0;
	int rc = 0;

	if (!commit)
		goto out;
	if (t->fail) {
		rc = -ENOSPC;
		goto out;
	}
	for (struct xs_acc *a = t->head; a; a = a->next) {
		const struct xs_node *cur = db_find(st, a->h.key);

		if ((cur ? cur->gen : XS_NO_GEN) != a->gen) {
			rc = -EAGAIN;
			goto out;
		}
		if (a->modified) {
			delta -= cur && node_owner(cur) == t->domid;
			delta += a->node && node_owner(a->node) == t->domid;
		}
	}
	if (t->domid != 0 && st->lim.max_nodes_per_dom && delta > 0 &&
	    st->owned[t->domid] + delta > st->lim.max_nodes_per_dom) {
		rc = -ENOSPC;
		goto out;
	}
	txn_apply(st, t);
	for (struct xs_acc *a = t->head; a; a = a->next) {
		const struct xs_node *cur;
		struct xs_event ev = {.path = a->h.key, .exact = a->exact};

		if (!a->fire || !st->fn)
			continue;
		cur = db_find(st, a->h.key);
		if (cur) {
			ev.perms = cur->perms;
			ev.nperms = cur->nperms;
		}
		ev.old_perms = a->old_perms;
		ev.old_nperms = a->old_nperms;
		st->fn(st->arg, &ev);
	}
out:
	txn_free(t);
	return rc;
}

/* ---- domains, events ---- */

int xs_store_fire(struct xs_store *st, const char *path)
{
	const struct xs_node *n = db_find(st, path);
	struct xs_event ev = {.path = path};

	if (!n)
		return -ENOENT;
	ev.perms = n->perms;
	ev.nperms = n->nperms;
	if (st->fn)
		st->fn(st->arg, &ev);
	return 0;
}

void xs_store_domain_gone(struct xs_store *st, domid_t domid)
{
	if (domid == 0)
		return;
	for (uint32_t b = 0; b <= st->db.mask; b++) {
		for (struct ht_ent *e = st->db.b[b]; e; e = e->next) {
			struct xs_node *n = (struct xs_node *)e;
			uint32_t j = 1;
			bool changed = false;

			if (node_owner(n) == domid) {
				n->perms[0].id = 0;
				st->owned[domid]--;
				st->owned[0]++;
				changed = true;
			}
			for (uint32_t i = 1; i < n->nperms; i++) {
				if (n->perms[i].id == domid) {
					changed = true;
					continue;
				}
				n->perms[j++] = n->perms[i];
			}
			n->nperms = j;
			/* Open transactions that saw the old perms must not commit them back. */
			if (changed)
				n->gen = ++st->gen;
		}
	}
}

int xs_store_event_visible(struct xs_store *st, const struct xs_event *ev, domid_t domid)
{
	char p[XS_PATH_BUF];
	const struct xs_node *n;

	if (domid == 0)
		return 1;
	if (ev->old_perms && (xs_perm_for(domid, ev->old_perms, ev->old_nperms) & XS_P_READ))
		return 1;
	if (ev->path[0] == '@')
		return ev->perms && (xs_perm_for(domid, ev->perms, ev->nperms) & XS_P_READ);
	if (ev->perms && (xs_perm_for(domid, ev->perms, ev->nperms) & XS_P_READ))
		return 1;
	/* A node gone without perms known to the event is invisible, as in xenstored. */
	n = db_find(st, ev->path);
	if (!ev->perms && !n)
		return 0;
	if (n && (xs_perm_for(domid, n->perms, n->nperms) & XS_P_READ))
		return 1;
	parent_of(ev->path, p);
	n = db_find(st, p);
	return n && (xs_perm_for(domid, n->perms, n->nperms) & XS_P_READ);
}

uint32_t xs_store_nodes_owned(const struct xs_store *st, domid_t domid)
{
	return st->owned[domid];
}

uint32_t xs_store_nr_nodes(const struct xs_store *st)
{
	return st->db.n;
}

/* ---- lifetime ---- */

static int add_initial(struct xs_store *st, const char *path, const char *child)
{
	static const struct xs_perm dom0_only = {.id = 0, .perms = XS_P_NONE};
	struct xs_node *n =
	    node_new(path, NULL, 0, child, child ? (uint32_t)strlen(child) + 1 : 0, &dom0_only, 1);

	if (!n)
		return -ENOMEM;
	n->gen = ++st->gen;
	ht_insert(&st->db, &n->h);
	st->owned[0]++;
	return 0;
}

int xs_store_new(struct xs_store **out, const struct xs_store_limits *lim, xs_event_fn fn,
		 void *arg)
{
	struct xs_store *st = calloc(1, sizeof(*st));
	int rc = -ENOMEM;

	if (!st)
		return -ENOMEM;
	st->owned = calloc(XS_NR_DOMIDS, sizeof(*st->owned));
	if (!st->owned)
		goto err_st;
	if (ht_init(&st->db))
		goto err_owned;
	if (lim)
		st->lim = *lim;
	st->fn = fn;
	st->arg = arg;
	if ((rc = add_initial(st, "/", "tool")) || (rc = add_initial(st, "/tool", "xenstored")) ||
	    (rc = add_initial(st, "/tool/xenstored", NULL)) ||
	    (rc = add_initial(st, "@introduceDomain", NULL)) ||
	    (rc = add_initial(st, "@releaseDomain", NULL))) {
		xs_store_free(st);
		return rc;
	}
	*out = st;
	return 0;

err_owned:
	free(st->owned);
err_st:
	free(st);
	return rc;
}

void xs_store_free(struct xs_store *st)
{
	if (!st)
		return;
	for (uint32_t b = 0; b <= st->db.mask; b++) {
		while (st->db.b[b]) {
			struct ht_ent *e = st->db.b[b];

			st->db.b[b] = e->next;
			node_free((struct xs_node *)e);
		}
	}
	free(st->db.b);
	free(st->owned);
	free(st);
}
