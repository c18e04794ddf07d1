/*
 * test_xs_store.c - the xenstore database without any I/O: path rules, Xen permissions and the
 * errors they imply, quotas, transactions (isolation, conflicts -> EAGAIN) and the events the
 * server turns into watch firings.
 */
#include "hv/xs_internal.h"
#include "tests/harness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 64

struct ev_log {
	int n;
	char path[MAX_EVENTS][128];
	int exact[MAX_EVENTS];
	int had_old[MAX_EVENTS];
	int visible_to_1[MAX_EVENTS];
	struct xs_store *st;
};

static struct ev_log evl;

static void ev_record(void *arg, const struct xs_event *ev)
{
	struct ev_log *l = arg;

	if (l->n == MAX_EVENTS)
		return;
	snprintf(l->path[l->n], sizeof(l->path[0]), "%s", ev->path);
	l->exact[l->n] = ev->exact;
	l->had_old[l->n] = ev->old_perms != NULL;
	l->visible_to_1[l->n] = xs_store_event_visible(l->st, ev, 1);
	l->n++;
}

static int ev_find(const char *path)
{
	for (int i = 0; i < evl.n; i++)
		if (strcmp(evl.path[i], path) == 0)
			return i;
	return -1;
}

static struct xs_store *mk(uint32_t max_value, uint32_t max_nodes)
{
	struct xs_store_limits lim = {
	    .max_value_bytes = max_value,
	    .max_nodes_per_dom = max_nodes,
	    .max_perms_per_node = 5,
	    .max_txn_nodes = 1024,
	};
	struct xs_store *st = NULL;

	memset(&evl, 0, sizeof(evl));
	CU_ASSERT_FATAL(xs_store_new(&st, &lim, ev_record, &evl) == 0);
	evl.st = st;
	return st;
}

/* A guest home as toolstacks make it: /local/domain/<id> owned by the guest, others none. */
static void mk_home(struct xs_store *st, domid_t id)
{
	char p[64];
	struct xs_perm perm = {.id = id, .perms = XS_P_NONE};

	snprintf(p, sizeof(p), "/local/domain/%u", (unsigned)id);
	CU_ASSERT_EQUAL_FATAL(xs_store_mkdir(st, 0, NULL, p), 0);
	CU_ASSERT_EQUAL_FATAL(xs_store_set_perms(st, 0, NULL, p, &perm, 1), 0);
}

static int rd(struct xs_store *st, domid_t d, struct xs_txn *t, const char *p, char *out)
{
	const char *v;
	uint32_t len;
	int rc = xs_store_read(st, d, t, p, &v, &len);

	if (!rc && out) {
		memcpy(out, v, len);
		out[len] = '\0';
	}
	return rc;
}

static int wr(struct xs_store *st, domid_t d, struct xs_txn *t, const char *p, const char *v)
{
	return xs_store_write(st, d, t, p, v, (uint32_t)strlen(v));
}

static void test_canonicalize(void)
{
	char out[XS_PATH_BUF], big[XENSTORE_ABS_PATH_MAX + 8];
	int rel = -1;

	CU_ASSERT_EQUAL(xs_canonicalize(0, "/a/b-c_d@e", 0, out, &rel), 0);
	CU_ASSERT_STRING_EQUAL(out, "/a/b-c_d@e");
	CU_ASSERT_EQUAL(rel, 0);
	CU_ASSERT_EQUAL(xs_canonicalize(7, "device/vbd", 0, out, &rel), 0);
	CU_ASSERT_STRING_EQUAL(out, "/local/domain/7/device/vbd");
	CU_ASSERT_EQUAL(rel, 1);
	CU_ASSERT_EQUAL(xs_canonicalize(0, "/", 0, out, NULL), 0);
	CU_ASSERT_EQUAL(xs_canonicalize(0, "", 0, out, NULL), -EINVAL);
	CU_ASSERT_EQUAL(xs_canonicalize(0, "/a/", 0, out, NULL), -EINVAL);
	CU_ASSERT_EQUAL(xs_canonicalize(0, "/a//b", 0, out, NULL), -EINVAL);
	CU_ASSERT_EQUAL(xs_canonicalize(0, "/a b", 0, out, NULL), -EINVAL);
	CU_ASSERT_EQUAL(xs_canonicalize(0, "/a.b", 0, out, NULL), -EINVAL);
	CU_ASSERT_EQUAL(xs_canonicalize(0, "@releaseDomain", 0, out, NULL), -EINVAL);
	CU_ASSERT_EQUAL(xs_canonicalize(0, "@releaseDomain", 1, out, &rel), 0);
	CU_ASSERT_EQUAL(rel, 0);

	/* dom0: up to XENSTORE_ABS_PATH_MAX; one more is EINVAL, as xenstored. */
	memset(big, 'x', sizeof(big));
	big[0] = '/';
	big[XENSTORE_ABS_PATH_MAX] = '\0';
	CU_ASSERT_EQUAL(xs_canonicalize(0, big, 0, out, NULL), 0);
	big[XENSTORE_ABS_PATH_MAX] = 'x';
	big[XENSTORE_ABS_PATH_MAX + 1] = '\0';
	CU_ASSERT_EQUAL(xs_canonicalize(0, big, 0, out, NULL), -EINVAL);
	/* A guest: XENSTORE_REL_PATH_MAX below its home, and the same bound elsewhere. */
	memset(big, 'x', sizeof(big));
	big[XENSTORE_REL_PATH_MAX] = '\0';
	CU_ASSERT_EQUAL(xs_canonicalize(3, big, 0, out, NULL), 0);
	big[XENSTORE_REL_PATH_MAX] = 'x';
	big[XENSTORE_REL_PATH_MAX + 1] = '\0';
	CU_ASSERT_EQUAL(xs_canonicalize(3, big, 0, out, NULL), -EINVAL);
	big[0] = '/';
	CU_ASSERT_EQUAL(xs_canonicalize(3, big, 0, out, NULL), -EINVAL);
	CU_ASSERT_EQUAL(xs_canonicalize(0, big, 0, out, NULL), 0);
}

static void test_perms_strings(void)
{
	static const char s[] = "b5\0r0\0w65535\0n12";
	struct xs_perm p[4], bad[2];
	char buf[XS_PERM_STR_MAX];

	CU_ASSERT_EQUAL(xs_perms_parse(s, 4, p), 0);
	CU_ASSERT_EQUAL(p[0].id, 5);
	CU_ASSERT_EQUAL(p[0].perms, XS_P_READ | XS_P_WRITE);
	CU_ASSERT_EQUAL(p[1].perms, XS_P_READ);
	CU_ASSERT_EQUAL(p[2].id, 65535);
	CU_ASSERT_EQUAL(p[2].perms, XS_P_WRITE);
	CU_ASSERT_EQUAL(p[3].perms, XS_P_NONE);
	xs_perm_format(&p[2], buf);
	CU_ASSERT_STRING_EQUAL(buf, "w65535");
	xs_perm_format(&p[0], buf);
	CU_ASSERT_STRING_EQUAL(buf, "b5");
	CU_ASSERT_EQUAL(xs_perms_parse("x1", 1, bad), -EINVAL);
	CU_ASSERT_EQUAL(xs_perms_parse("r", 1, bad), -EINVAL);
	CU_ASSERT_EQUAL(xs_perms_parse("r1a", 1, bad), -EINVAL);
	CU_ASSERT_EQUAL(xs_perms_parse("r65536", 1, bad), -EINVAL);
	CU_ASSERT_EQUAL(xs_perms_parse("r1\0", 2, bad), -EINVAL);

	/* Owner gets all; listed domains their entry; the rest the owner's entry; dom0 all. */
	CU_ASSERT_EQUAL(xs_perm_for(5, p, 4), XS_P_READ | XS_P_WRITE | XS_P_OWNER);
	CU_ASSERT_EQUAL(xs_perm_for(0, p, 4), XS_P_READ | XS_P_WRITE | XS_P_OWNER);
	CU_ASSERT_EQUAL(xs_perm_for(12, p, 4), XS_P_NONE);
	CU_ASSERT_EQUAL(xs_perm_for(9, p, 4), XS_P_READ | XS_P_WRITE);
}

static void test_basic_tree(void)
{
	struct xs_store *st = mk(0, 0);
	const char *ch;
	uint32_t len;
	uint64_t gen;
	char v[64];

	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/a/b/c", "hello"), 0);
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/a/b/c", v), 0);
	CU_ASSERT_STRING_EQUAL(v, "hello");
	/* Implicit parents exist, with empty values. */
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/a/b", v), 0);
	CU_ASSERT_STRING_EQUAL(v, "");
	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/a/z", "1"), 0);
	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/a/m", "2"), 0);
	CU_ASSERT_EQUAL(xs_store_directory(st, 0, NULL, "/a", &ch, &len, &gen), 0);
	/* Creation order, NUL-separated, as DIRECTORY returns it. */
	CU_ASSERT_EQUAL(len, 6);
	CU_ASSERT(memcmp(ch, "b\0z\0m\0", 6) == 0);
	/* Binary values with NULs survive. */
	CU_ASSERT_EQUAL(xs_store_write(st, 0, NULL, "/bin", "x\0y", 3), 0);
	{
		const char *bv;

		CU_ASSERT_EQUAL(xs_store_read(st, 0, NULL, "/bin", &bv, &len), 0);
		CU_ASSERT_EQUAL(len, 3);
		CU_ASSERT(memcmp(bv, "x\0y", 3) == 0);
	}
	/* MKDIR leaves an existing value alone. */
	CU_ASSERT_EQUAL(xs_store_mkdir(st, 0, NULL, "/a/b/c"), 0);
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/a/b/c", v), 0);
	CU_ASSERT_STRING_EQUAL(v, "hello");
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/nope", v), -ENOENT);

	/* RM is recursive; a missing node is fine if its parent exists. */
	CU_ASSERT_EQUAL(xs_store_rm(st, 0, NULL, "/a/b"), 0);
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/a/b/c", v), -ENOENT);
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/a/b", v), -ENOENT);
	CU_ASSERT_EQUAL(xs_store_directory(st, 0, NULL, "/a", &ch, &len, &gen), 0);
	CU_ASSERT_EQUAL(len, 4);
	CU_ASSERT(memcmp(ch, "z\0m\0", 4) == 0);
	CU_ASSERT_EQUAL(xs_store_rm(st, 0, NULL, "/a/b"), 0);
	CU_ASSERT_EQUAL(xs_store_rm(st, 0, NULL, "/a/b/c"), -ENOENT);
	CU_ASSERT_EQUAL(xs_store_rm(st, 0, NULL, "/"), -EINVAL);
	/* Initial content of xenstored, and the special nodes, are there. */
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/tool/xenstored", v), 0);
	{
		const struct xs_perm *p;
		uint32_t n;

		CU_ASSERT_EQUAL(xs_store_get_perms(st, 0, NULL, "@releaseDomain", &p, &n), 0);
		CU_ASSERT_EQUAL(n, 1);
		CU_ASSERT_EQUAL(p[0].id, 0);
	}
	xs_store_free(st);
}

static void test_guest_perms(void)
{
	struct xs_store *st = mk(0, 0);
	const struct xs_perm *p;
	struct xs_perm np[2];
	uint32_t n;
	char v[64];

	mk_home(st, 1);
	mk_home(st, 2);
	/* A guest writes under its home; what it creates is its own and inherits the rest. */
	CU_ASSERT_EQUAL(wr(st, 1, NULL, "/local/domain/1/data/x", "1"), 0);
	CU_ASSERT_EQUAL(xs_store_get_perms(st, 1, NULL, "/local/domain/1/data/x", &p, &n), 0);
	CU_ASSERT_EQUAL(n, 1);
	CU_ASSERT_EQUAL(p[0].id, 1);
	CU_ASSERT_EQUAL(p[0].perms, XS_P_NONE);
	CU_ASSERT_EQUAL(xs_store_nodes_owned(st, 1), 3); /* home, data, x */

	/* Another guest's nodes: EACCES for present and absent ones alike (no probing). */
	CU_ASSERT_EQUAL(rd(st, 2, NULL, "/local/domain/1/data/x", v), -EACCES);
	CU_ASSERT_EQUAL(rd(st, 2, NULL, "/local/domain/1/nothing", v), -EACCES);
	CU_ASSERT_EQUAL(wr(st, 2, NULL, "/local/domain/1/data/x", "evil"), -EACCES);
	CU_ASSERT_EQUAL(wr(st, 2, NULL, "/local/domain/1/new", "evil"), -EACCES);
	CU_ASSERT_EQUAL(xs_store_rm(st, 2, NULL, "/local/domain/1/data"), -EACCES);
	CU_ASSERT_EQUAL(wr(st, 2, NULL, "/elsewhere", "x"), -EACCES);
	/* In its own tree a missing node is plainly missing. */
	CU_ASSERT_EQUAL(rd(st, 1, NULL, "/local/domain/1/nothing", v), -ENOENT);
	/* dom0 bypasses everything. */
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/local/domain/1/data/x", v), 0);

	/* Owner grants read to domain 2. */
	np[0] = (struct xs_perm){.id = 1, .perms = XS_P_NONE};
	np[1] = (struct xs_perm){.id = 2, .perms = XS_P_READ};
	CU_ASSERT_EQUAL(xs_store_set_perms(st, 1, NULL, "/local/domain/1/data/x", np, 2), 0);
	CU_ASSERT_EQUAL(rd(st, 2, NULL, "/local/domain/1/data/x", v), 0);
	CU_ASSERT_STRING_EQUAL(v, "1");
	CU_ASSERT_EQUAL(wr(st, 2, NULL, "/local/domain/1/data/x", "no"), -EACCES);
	/* Only the owner may change perms, and a guest may not give a node away. */
	CU_ASSERT_EQUAL(xs_store_set_perms(st, 2, NULL, "/local/domain/1/data/x", np, 2), -EACCES);
	np[0].id = 2;
	CU_ASSERT_EQUAL(xs_store_set_perms(st, 1, NULL, "/local/domain/1/data/x", np, 2), -EPERM);
	/* dom0 may. */
	CU_ASSERT_EQUAL(xs_store_set_perms(st, 0, NULL, "/local/domain/1/data/x", np, 2), 0);
	CU_ASSERT_EQUAL(xs_store_nodes_owned(st, 1), 2);
	CU_ASSERT_EQUAL(xs_store_nodes_owned(st, 2), 2);

	/* Nodes dom0 creates under a guest's home inherit the guest as owner. */
	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/local/domain/1/name", "g1"), 0);
	CU_ASSERT_EQUAL(xs_store_get_perms(st, 0, NULL, "/local/domain/1/name", &p, &n), 0);
	CU_ASSERT_EQUAL(p[0].id, 1);
	CU_ASSERT_EQUAL(rd(st, 1, NULL, "/local/domain/1/name", v), 0);

	/* Domain 2 goes: its nodes pass to dom0 and its entries vanish. */
	xs_store_domain_gone(st, 2);
	CU_ASSERT_EQUAL(xs_store_nodes_owned(st, 2), 0);
	CU_ASSERT_EQUAL(xs_store_get_perms(st, 0, NULL, "/local/domain/1/data/x", &p, &n), 0);
	CU_ASSERT_EQUAL(p[0].id, 0);
	CU_ASSERT_EQUAL(n, 1);
	CU_ASSERT_EQUAL(xs_store_get_perms(st, 0, NULL, "/local/domain/2", &p, &n), 0);
	CU_ASSERT_EQUAL(p[0].id, 0);
	CU_ASSERT_EQUAL(rd(st, 2, NULL, "/local/domain/2", v), -EACCES);
	xs_store_free(st);
}

static void test_quotas(void)
{
	struct xs_store *st = mk(16, 5);
	char big[64];
	struct xs_perm np[6] = {{1, 0}, {2, 1}, {3, 1}, {4, 1}, {5, 1}, {6, 1}};

	mk_home(st, 1);
	memset(big, 'v', sizeof(big));
	big[17] = '\0';
	/* Value size: ENOSPC for a guest (xenstored's node-size quota), dom0 unlimited. */
	CU_ASSERT_EQUAL(wr(st, 1, NULL, "/local/domain/1/v", big), -ENOSPC);
	big[16] = '\0';
	CU_ASSERT_EQUAL(wr(st, 1, NULL, "/local/domain/1/v", big), 0);
	big[40] = 'v';
	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/local/domain/1/v0", big), 0);
	/* Nodes: the home, v and v0 are the guest's (3 of 5); two more fit, implicit ones count. */
	CU_ASSERT_EQUAL(xs_store_nodes_owned(st, 1), 3);
	CU_ASSERT_EQUAL(wr(st, 1, NULL, "/local/domain/1/a/b/c", "x"), -ENOSPC);
	CU_ASSERT_EQUAL(wr(st, 1, NULL, "/local/domain/1/a/b", "x"), 0);
	CU_ASSERT_EQUAL(xs_store_mkdir(st, 1, NULL, "/local/domain/1/c"), -ENOSPC);
	CU_ASSERT_EQUAL(xs_store_rm(st, 1, NULL, "/local/domain/1/a"), 0);
	CU_ASSERT_EQUAL(xs_store_nodes_owned(st, 1), 3);
	CU_ASSERT_EQUAL(xs_store_mkdir(st, 1, NULL, "/local/domain/1/c"), 0);
	/* dom0 is not bound by a guest's quota, even creating nodes the guest owns. */
	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/local/domain/1/d/e/f", "x"), 0);
	CU_ASSERT_EQUAL(xs_store_nodes_owned(st, 1), 7);
	/* Permission entries per node. */
	CU_ASSERT_EQUAL(xs_store_set_perms(st, 1, NULL, "/local/domain/1/c", np, 6), -ENOSPC);
	CU_ASSERT_EQUAL(xs_store_set_perms(st, 1, NULL, "/local/domain/1/c", np, 5), 0);
	CU_ASSERT_EQUAL(xs_store_set_perms(st, 0, NULL, "/local/domain/1/c", np, 6), 0);
	xs_store_free(st);
}

static void test_txn_isolation(void)
{
	struct xs_store *st = mk(0, 0);
	struct xs_txn *t;
	char v[64];

	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/t/a", "1"), 0);
	evl.n = 0;
	CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 0, &t), 0);
	CU_ASSERT_EQUAL(wr(st, 0, t, "/t/a", "2"), 0);
	CU_ASSERT_EQUAL(wr(st, 0, t, "/t/new/deep", "3"), 0);
	CU_ASSERT_EQUAL(xs_store_rm(st, 0, t, "/t/a"), 0);
	CU_ASSERT_EQUAL(wr(st, 0, t, "/t/a", "4"), 0);
	/* Inside: its own view. Outside: unchanged, and no events yet. */
	CU_ASSERT_EQUAL(rd(st, 0, t, "/t/a", v), 0);
	CU_ASSERT_STRING_EQUAL(v, "4");
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/t/a", v), 0);
	CU_ASSERT_STRING_EQUAL(v, "1");
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/t/new/deep", v), -ENOENT);
	CU_ASSERT_EQUAL(evl.n, 0);
	CU_ASSERT_EQUAL(xs_store_txn_end(t, 1), 0);
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/t/a", v), 0);
	CU_ASSERT_STRING_EQUAL(v, "4");
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/t/new/deep", v), 0);
	CU_ASSERT_STRING_EQUAL(v, "3");
	/* Events come at commit. */
	CU_ASSERT(ev_find("/t/a") >= 0);
	CU_ASSERT(ev_find("/t/new/deep") >= 0);

	/* Abort discards everything. */
	CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 0, &t), 0);
	CU_ASSERT_EQUAL(xs_store_rm(st, 0, t, "/t"), 0);
	CU_ASSERT_EQUAL(rd(st, 0, t, "/t/a", v), -ENOENT);
	evl.n = 0;
	CU_ASSERT_EQUAL(xs_store_txn_end(t, 0), 0);
	CU_ASSERT_EQUAL(evl.n, 0);
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/t/a", v), 0);
	xs_store_free(st);
}

static void test_txn_conflict(void)
{
	struct xs_store *st = mk(0, 0);
	struct xs_txn *t;
	char v[64];

	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/c/a", "1"), 0);
	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/c/b", "1"), 0);

	/* Read a, someone else writes a, commit -> EAGAIN and nothing applied. */
	CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 0, &t), 0);
	CU_ASSERT_EQUAL(rd(st, 0, t, "/c/a", v), 0);
	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/c/a", "other"), 0);
	CU_ASSERT_EQUAL(wr(st, 0, t, "/c/b", "mine"), 0);
	CU_ASSERT_EQUAL(xs_store_txn_end(t, 1), -EAGAIN);
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/c/b", v), 0);
	CU_ASSERT_STRING_EQUAL(v, "1");

	/* Deleted under it: EAGAIN too. */
	CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 0, &t), 0);
	CU_ASSERT_EQUAL(rd(st, 0, t, "/c/b", v), 0);
	CU_ASSERT_EQUAL(xs_store_rm(st, 0, NULL, "/c/b"), 0);
	CU_ASSERT_EQUAL(wr(st, 0, t, "/c/x", "1"), 0);
	CU_ASSERT_EQUAL(xs_store_txn_end(t, 1), -EAGAIN);

	/* A node the transaction found missing is created meanwhile: EAGAIN. */
	CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 0, &t), 0);
	CU_ASSERT_EQUAL(rd(st, 0, t, "/c/ghost", v), -ENOENT);
	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/c/ghost", "boo"), 0);
	CU_ASSERT_EQUAL(xs_store_txn_end(t, 1), -EAGAIN);

	/* Unrelated writes elsewhere do not conflict. */
	CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 0, &t), 0);
	CU_ASSERT_EQUAL(rd(st, 0, t, "/c/a", v), 0);
	CU_ASSERT_EQUAL(wr(st, 0, t, "/c/a", "txn"), 0);
	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/unrelated", "1"), 0);
	CU_ASSERT_EQUAL(xs_store_txn_end(t, 1), 0);
	CU_ASSERT_EQUAL(rd(st, 0, NULL, "/c/a", v), 0);
	CU_ASSERT_STRING_EQUAL(v, "txn");

	/* Two transactions on the same node: the first commit wins, the second retries. */
	{
		struct xs_txn *t2;

		CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 0, &t), 0);
		CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 0, &t2), 0);
		CU_ASSERT_EQUAL(wr(st, 0, t, "/c/a", "one"), 0);
		CU_ASSERT_EQUAL(wr(st, 0, t2, "/c/a", "two"), 0);
		CU_ASSERT_EQUAL(xs_store_txn_end(t, 1), 0);
		CU_ASSERT_EQUAL(xs_store_txn_end(t2, 1), -EAGAIN);
		CU_ASSERT_EQUAL(rd(st, 0, NULL, "/c/a", v), 0);
		CU_ASSERT_STRING_EQUAL(v, "one");
	}
	xs_store_free(st);
}

static void test_txn_quota(void)
{
	struct xs_store *st = mk(0, 4);
	struct xs_txn *t;

	mk_home(st, 1);
	/* Quota counts what the transaction itself created. */
	CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 1, &t), 0);
	CU_ASSERT_EQUAL(wr(st, 1, t, "/local/domain/1/a", "1"), 0);
	CU_ASSERT_EQUAL(wr(st, 1, t, "/local/domain/1/b", "1"), 0);
	CU_ASSERT_EQUAL(wr(st, 1, t, "/local/domain/1/c", "1"), 0);
	CU_ASSERT_EQUAL(wr(st, 1, t, "/local/domain/1/d", "1"), -ENOSPC);
	CU_ASSERT_EQUAL(xs_store_txn_end(t, 1), 0);
	CU_ASSERT_EQUAL(xs_store_nodes_owned(st, 1), 4);
	xs_store_free(st);
}

static void test_txn_bytes(void)
{
	struct xs_store_limits lim = {.max_txn_bytes = 8192};
	struct xs_store *st;
	struct xs_txn *t;
	char big[3000];
	const char *v;
	uint32_t len;

	CU_ASSERT_EQUAL_FATAL(xs_store_new(&st, &lim, NULL, NULL), 0);
	mk_home(st, 1);
	memset(big, 'b', sizeof(big));
	CU_ASSERT_EQUAL(xs_store_write(st, 0, NULL, "/local/domain/1/a", big, sizeof(big)), 0);
	CU_ASSERT_EQUAL(xs_store_write(st, 0, NULL, "/local/domain/1/b", big, sizeof(big)), 0);
	CU_ASSERT_EQUAL(xs_store_write(st, 0, NULL, "/local/domain/1/c", big, sizeof(big)), 0);
	/* A guest's transaction holding copies beyond its budget fails, for good. */
	CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 1, &t), 0);
	CU_ASSERT_EQUAL(xs_store_read(st, 1, t, "/local/domain/1/a", &v, &len), 0);
	CU_ASSERT_EQUAL(xs_store_read(st, 1, t, "/local/domain/1/b", &v, &len), 0);
	CU_ASSERT_EQUAL(xs_store_read(st, 1, t, "/local/domain/1/c", &v, &len), -ENOSPC);
	CU_ASSERT_EQUAL(xs_store_txn_end(t, 1), -ENOSPC);
	/* dom0's are not bounded. */
	CU_ASSERT_EQUAL_FATAL(xs_store_txn_start(st, 0, &t), 0);
	CU_ASSERT_EQUAL(xs_store_read(st, 0, t, "/local/domain/1/a", &v, &len), 0);
	CU_ASSERT_EQUAL(xs_store_read(st, 0, t, "/local/domain/1/b", &v, &len), 0);
	CU_ASSERT_EQUAL(xs_store_read(st, 0, t, "/local/domain/1/c", &v, &len), 0);
	CU_ASSERT_EQUAL(xs_store_txn_end(t, 1), 0);
	xs_store_free(st);
}

static void test_events(void)
{
	struct xs_store *st = mk(0, 0);
	struct xs_perm np[2] = {{0, XS_P_NONE}, {1, XS_P_READ}};
	int i;

	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/e/a/x", "1"), 0);
	CU_ASSERT_EQUAL(wr(st, 0, NULL, "/e/a/y", "1"), 0);
	/* A write reports its own path, as a subtree event (watches on parents match). */
	CU_ASSERT_EQUAL(evl.n, 2);
	CU_ASSERT_STRING_EQUAL(evl.path[0], "/e/a/x");
	CU_ASSERT_EQUAL(evl.exact[0], 0);
	CU_ASSERT_EQUAL(evl.visible_to_1[0], 0);

	/* SET_PERMS reports the old perms: a domain losing access still hears of it. */
	evl.n = 0;
	CU_ASSERT_EQUAL(xs_store_set_perms(st, 0, NULL, "/e/a/x", np, 2), 0);
	CU_ASSERT_EQUAL(evl.n, 1);
	CU_ASSERT_EQUAL(evl.had_old[0], 1);
	CU_ASSERT_EQUAL(evl.visible_to_1[0], 1);

	/* RM: each removed node exactly, then the root of the removal as a subtree event. */
	evl.n = 0;
	CU_ASSERT_EQUAL(xs_store_rm(st, 0, NULL, "/e/a"), 0);
	CU_ASSERT_EQUAL(evl.n, 3);
	i = ev_find("/e/a/x");
	CU_ASSERT(i >= 0 && evl.exact[i] == 1);
	CU_ASSERT(i >= 0 && evl.visible_to_1[i] == 1); /* it could read x */
	i = ev_find("/e/a/y");
	CU_ASSERT(i >= 0 && evl.exact[i] == 1 && evl.visible_to_1[i] == 0);
	CU_ASSERT_STRING_EQUAL(evl.path[2], "/e/a");
	CU_ASSERT_EQUAL(evl.exact[2], 0);

	/* MKDIR of an existing node changes nothing and reports nothing. */
	evl.n = 0;
	CU_ASSERT_EQUAL(xs_store_mkdir(st, 0, NULL, "/e"), 0);
	CU_ASSERT_EQUAL(evl.n, 0);
	CU_ASSERT_EQUAL(xs_store_fire(st, "@releaseDomain"), 0);
	CU_ASSERT_EQUAL(evl.n, 1);
	CU_ASSERT_EQUAL(evl.visible_to_1[0], 0);
	CU_ASSERT_EQUAL(xs_store_fire(st, "@nope"), -ENOENT);
	xs_store_free(st);
}

static CU_TestInfo tests[] = {
    {"canonicalize", test_canonicalize},
    {"perms_strings", test_perms_strings},
    {"basic_tree", test_basic_tree},
    {"guest_perms", test_guest_perms},
    {"quotas", test_quotas},
    {"txn_isolation", test_txn_isolation},
    {"txn_conflict", test_txn_conflict},
    {"txn_quota", test_txn_quota},
    {"txn_bytes", test_txn_bytes},
    {"events", test_events},
    CU_TEST_INFO_NULL,
};

TEST_SUITE("xs_store", NULL, NULL, tests)
