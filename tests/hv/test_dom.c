/*
 * test_dom.c - domains in hvsimd: names, ids, sizes, the xenstore nodes a domain gets and
 * loses, @releaseDomain, the guest's own xenstore view, and how contexts find a domain.
 */
#include "hv/hv.h"
#include "hv/hvsim_internal.h"
#include "tests/harness.h"
#include "tests/hv/test_hvsim.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xenstore.h>

static struct hvsim_fix fix;

static int suite_init(void)
{
	return fix_start(&fix) ? 1 : 0;
}

static int suite_clean(void)
{
	return fix_stop(&fix) == 0 ? 0 : 1;
}

static void test_names(void)
{
	CU_ASSERT_EQUAL(hvsim_name_valid("guest1"), 0);
	CU_ASSERT_EQUAL(hvsim_name_valid("a.b-c_D9"), 0);
	CU_ASSERT_EQUAL(hvsim_name_valid("1x"), 0);
	CU_ASSERT_EQUAL(hvsim_name_valid(""), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_name_valid("."), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_name_valid(".."), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_name_valid("123"), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_name_valid("a/b"), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_name_valid("a b"), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_name_valid("caf\xc3\xa9"), -EINVAL);
	CU_ASSERT_EQUAL(hvsim_name_valid("0123456789012345678901234567890123456789012345678901234"
					 "56789abc"),
			0);
	CU_ASSERT_EQUAL(hvsim_name_valid("0123456789012345678901234567890123456789012345678901234"
					 "56789abcd"),
			-EINVAL);
}

static void test_create_destroy(void)
{
	domid_t a, b, c;

	CU_ASSERT_EQUAL_FATAL(fix_create(&fix, "alpha", 16ull << 20, &a), 0);
	CU_ASSERT(a >= 1);
	CU_ASSERT_EQUAL(fix_create(&fix, "alpha", 16ull << 20, &b), -EEXIST);
	CU_ASSERT_EQUAL(fix_create(&fix, "Domain-0", 16ull << 20, &b), -EEXIST);
	CU_ASSERT_EQUAL(fix_create(&fix, "bad/name", 16ull << 20, &b), -EINVAL);
	CU_ASSERT_EQUAL(fix_create(&fix, "small", 1ull << 20, &b), -EINVAL);
	CU_ASSERT_EQUAL(fix_create(&fix, "huge", 17ull << 30, &b), -EINVAL);
	CU_ASSERT_EQUAL(fix_create(&fix, "odd", (16ull << 20) + 512, &b), -EINVAL);
	CU_ASSERT_EQUAL_FATAL(fix_create(&fix, "beta", 16ull << 20, &b), 0);
	CU_ASSERT_NOT_EQUAL(a, b);
	/* Ids move on, like Xen's: a freed id is not handed out again at once. */
	CU_ASSERT_EQUAL(fix_destroy(&fix, a), 0);
	CU_ASSERT_EQUAL_FATAL(fix_create(&fix, "alpha", 16ull << 20, &c), 0);
	CU_ASSERT(c > b);
	CU_ASSERT_EQUAL(fix_destroy(&fix, a), -ESRCH);
	CU_ASSERT_EQUAL(fix_destroy(&fix, 0), -EPERM);
	CU_ASSERT_EQUAL(fix_destroy(&fix, b), 0);
	CU_ASSERT_EQUAL(fix_destroy(&fix, c), 0);
}

static char *xs_get(struct xs_handle *h, const char *path)
{
	unsigned len;

	return xs_read(h, XBT_NULL, path, &len);
}

static void test_xenstore_nodes(void)
{
	struct hv *dom0;
	struct xs_handle *h;
	char path[64], *v;
	domid_t id;

	CU_ASSERT_EQUAL_FATAL(hv_open(&dom0, HV_KIND_SIM, fix.dir), 0);
	/* hv_xs_open leaves the environment as it found it. */
	CU_ASSERT_EQUAL_FATAL(setenv("XENSTORED_PATH", "/nonexistent/socket", 1), 0);
	h = hv_xs_open(dom0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(h);
	CU_ASSERT_STRING_EQUAL(getenv("XENSTORED_PATH"), "/nonexistent/socket");
	unsetenv("XENSTORED_PATH");
	v = xs_get(h, "/local/domain/0/name");
	CU_ASSERT(v && !strcmp(v, "Domain-0"));
	free(v);

	CU_ASSERT_EQUAL_FATAL(fix_create(&fix, "nodes", 64ull << 20, &id), 0);
	snprintf(path, sizeof(path), "/local/domain/%u/name", id);
	v = xs_get(h, path);
	CU_ASSERT(v && !strcmp(v, "nodes"));
	free(v);
	snprintf(path, sizeof(path), "/local/domain/%u/domid", id);
	v = xs_get(h, path);
	CU_ASSERT(v && (unsigned)atoi(v) == id);
	free(v);
	snprintf(path, sizeof(path), "/local/domain/%u/memory/target", id);
	v = xs_get(h, path);
	CU_ASSERT(v && !strcmp(v, "65536"));
	free(v);
	{
		/* The guest owns device/ (frontends write there); dom0 owns the rest. */
		struct xs_permissions *perms;
		unsigned n;

		snprintf(path, sizeof(path), "/local/domain/%u/device", id);
		perms = xs_get_permissions(h, XBT_NULL, path, &n);
		CU_ASSERT(perms && n >= 1 && perms[0].id == id);
		free(perms);
		snprintf(path, sizeof(path), "/local/domain/%u/name", id);
		perms = xs_get_permissions(h, XBT_NULL, path, &n);
		CU_ASSERT(perms && n == 2 && perms[0].id == 0 && perms[1].id == id &&
			  perms[1].perms == XS_PERM_READ);
		free(perms);
	}

	CU_ASSERT_EQUAL(fix_destroy(&fix, id), 0);
	snprintf(path, sizeof(path), "/local/domain/%u", id);
	v = xs_get(h, path);
	CU_ASSERT_PTR_NULL(v);
	CU_ASSERT_EQUAL(errno, ENOENT);
	free(v);
	xs_close(h);
	hv_close(dom0);
}

/* Wait up to 5 s for a watch event whose path is @want. */
static int wait_watch(struct xs_handle *h, const char *want)
{
	for (int i = 0; i < 50; i++) {
		char **ev;
		unsigned n;
		int hit;

		if (!fix_wait_readable(xs_fileno(h), 100))
			continue;
		ev = xs_read_watch(h, &n);
		if (!ev)
			return 0;
		hit = !strcmp(ev[XS_WATCH_PATH], want);
		free(ev);
		if (hit)
			return 1;
	}
	return 0;
}

static void test_release_domain_watch(void)
{
	struct hv *dom0;
	struct xs_handle *h;
	domid_t id;

	CU_ASSERT_EQUAL_FATAL(hv_open(&dom0, HV_KIND_SIM, fix.dir), 0);
	h = hv_xs_open(dom0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(h);
	CU_ASSERT_FATAL(xs_watch(h, "@introduceDomain", "intro"));
	CU_ASSERT_FATAL(xs_watch(h, "@releaseDomain", "rel"));
	/* Registration fires once each. */
	CU_ASSERT(wait_watch(h, "@introduceDomain"));
	CU_ASSERT(wait_watch(h, "@releaseDomain"));
	CU_ASSERT_EQUAL_FATAL(fix_create(&fix, "watched", 16ull << 20, &id), 0);
	CU_ASSERT(wait_watch(h, "@introduceDomain"));
	CU_ASSERT_EQUAL(fix_destroy(&fix, id), 0);
	CU_ASSERT(wait_watch(h, "@releaseDomain"));
	xs_close(h);
	hv_close(dom0);
}

static void test_guest_xenstore(void)
{
	struct hv *g1, *g2;
	struct xs_handle *h1;
	domid_t a, b;
	char path[256], *v;

	CU_ASSERT_EQUAL_FATAL(fix_create(&fix, "xs1", 16ull << 20, &a), 0);
	CU_ASSERT_EQUAL_FATAL(fix_create(&fix, "xs2", 16ull << 20, &b), 0);
	CU_ASSERT_EQUAL_FATAL(hv_guest_open(&g1, fix.dir, "xs1"), 0);
	CU_ASSERT_EQUAL_FATAL(hv_guest_open(&g2, fix.dir, "xs2"), 0);
	snprintf(path, sizeof(path), "%s/domains/%u/xenstore.sock", fix.dir, a);
	CU_ASSERT_STRING_EQUAL(hv_xenstore_path(g1), path);
	h1 = hv_xs_open(g1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(h1);
	/* Relative paths are the guest's home. */
	v = xs_get(h1, "name");
	CU_ASSERT(v && !strcmp(v, "xs1"));
	free(v);
	CU_ASSERT(xs_write(h1, XBT_NULL, "data/hello", "hi", 2));
	/* Another guest's nodes are out of reach. */
	snprintf(path, sizeof(path), "/local/domain/%u/name", b);
	v = xs_get(h1, path);
	CU_ASSERT_PTR_NULL(v);
	CU_ASSERT_EQUAL(errno, EACCES);
	free(v);
	xs_close(h1);
	hv_close(g1);
	hv_close(g2);
	CU_ASSERT_EQUAL(fix_destroy(&fix, a), 0);
	CU_ASSERT_EQUAL(fix_destroy(&fix, b), 0);
}

static void test_finding_domains(void)
{
	char path[PATH_MAX], target[64], other[160];
	struct hv *hv;
	domid_t id;
	ssize_t n;

	CU_ASSERT_EQUAL_FATAL(fix_create(&fix, "findme", 16ull << 20, &id), 0);
	snprintf(path, sizeof(path), "%s/names/findme", fix.dir);
	n = readlink(path, target, sizeof(target) - 1);
	CU_ASSERT_FATAL(n > 0);
	target[n] = '\0';
	snprintf(path, sizeof(path), "../domains/%u", id);
	CU_ASSERT_STRING_EQUAL(target, path);

	CU_ASSERT_EQUAL(hv_guest_open(&hv, fix.dir, "nosuch"), -ESRCH);
	CU_ASSERT_EQUAL(hv_guest_open(&hv, fix.dir, "9999"), -ESRCH);
	CU_ASSERT_EQUAL(hv_guest_open(&hv, fix.dir, "0"), -EINVAL);
	CU_ASSERT_EQUAL(hv_guest_open(&hv, fix.dir, "../x"), -EINVAL);
	snprintf(other, sizeof(other), "%s/nowhere", harness_tmpdir());
	CU_ASSERT_EQUAL(hv_guest_open(&hv, other, "findme"), -ENOENT);
	CU_ASSERT_EQUAL(hv_open(&hv, HV_KIND_SIM, other), -ENOENT);
	CU_ASSERT_EQUAL(hv_open(&hv, HV_KIND_SIM, NULL), -EINVAL);

	CU_ASSERT_EQUAL_FATAL(hv_guest_open(&hv, fix.dir, "findme"), 0);
	CU_ASSERT_EQUAL(hv_domid(hv), id);
	CU_ASSERT_EQUAL(hv_kind(hv), HV_KIND_SIM);
	hv_close(hv);
	CU_ASSERT_EQUAL(fix_destroy(&fix, id), 0);
	/* Destroy removed the name link and the domain's directory. */
	snprintf(path, sizeof(path), "%s/names/findme", fix.dir);
	CU_ASSERT_EQUAL(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/domains/%u", fix.dir, id);
	CU_ASSERT_EQUAL(access(path, F_OK), -1);
}

static void test_kinds(void)
{
	enum hv_kind k;
	struct hv *hv;
	struct stat st;

	CU_ASSERT_EQUAL(hv_kind_parse("sim", &k), 0);
	CU_ASSERT_EQUAL(k, HV_KIND_SIM);
	CU_ASSERT_EQUAL(hv_kind_parse("xen", &k), 0);
	CU_ASSERT_EQUAL(k, HV_KIND_XEN);
	CU_ASSERT_EQUAL(hv_kind_parse("kvm", &k), -EINVAL);
	CU_ASSERT_STRING_EQUAL(hv_strerror(-ENODEV), "no Xen hypervisor found; use the sim");
	if (stat("/dev/xen", &st) < 0) {
		CU_ASSERT_EQUAL(hv_open(&hv, HV_KIND_XEN, NULL), -ENODEV);
	} else if (hv_open(&hv, HV_KIND_XEN, NULL) == 0) {
		/* A real dom0: the guest side does not exist there. */
		grant_ref_t r;

		CU_ASSERT_EQUAL(hv_guest_alloc_gref(hv, &r), -EOPNOTSUPP);
		CU_ASSERT_PTR_NULL(hv_xenstore_path(hv));
		hv_close(hv);
	}
}

static CU_TestInfo tests[] = {
    {"names", test_names},
    {"create_destroy", test_create_destroy},
    {"xenstore_nodes", test_xenstore_nodes},
    {"release_domain_watch", test_release_domain_watch},
    {"guest_xenstore", test_guest_xenstore},
    {"finding_domains", test_finding_domains},
    {"kinds", test_kinds},
    CU_TEST_INFO_NULL,
};

TEST_SUITE("dom", suite_init, suite_clean, tests)
