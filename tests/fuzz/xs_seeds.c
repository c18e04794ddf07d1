/*
 * xs_seeds.c - write the starting corpus for xs_fuzz into the directory given: one file per
 * conversation, each a control byte (see xs_fuzz.c) and well-formed requests, so the fuzzer
 * begins inside every handler instead of having to discover the framing.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <xen/io/xs_wire.h>

static void frame(FILE *f, uint32_t type, uint32_t tx_id, const char *p, uint32_t len)
{
	static uint32_t req;
	struct xsd_sockmsg h = {.type = type, .req_id = ++req, .tx_id = tx_id, .len = len};

	fwrite(&h, sizeof(h), 1, f);
	fwrite(p, 1, len, f);
}

#define F(f, type, tx, lit) frame((f), (type), (tx), (lit), (uint32_t)sizeof(lit))

static FILE *open_seed(const char *dir, const char *name, uint8_t ctl)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (f)
		fputc(ctl, f);
	return f;
}

int main(int argc, char **argv)
{
	FILE *f;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	if ((f = open_seed(argv[1], "dom0-rw", 0))) {
		F(f, XS_WRITE, 0, "/a/b\0value");
		F(f, XS_READ, 0, "/a/b");
		F(f, XS_MKDIR, 0, "/a/c");
		F(f, XS_DIRECTORY, 0, "/a");
		F(f, XS_DIRECTORY_PART, 0,
		  "/a\0"
		  "0");
		F(f, XS_GET_PERMS, 0, "/a/b");
		F(f, XS_SET_PERMS, 0, "/a/b\0n1\0r2");
		F(f, XS_RM, 0, "/a");
		fclose(f);
	}
	if ((f = open_seed(argv[1], "dom0-txn", 0))) {
		F(f, XS_TRANSACTION_START, 0, "");
		F(f, XS_WRITE, 1,
		  "/t/x\0"
		  "1");
		F(f, XS_READ, 1, "/t/x");
		F(f, XS_RM, 1, "/t");
		F(f, XS_TRANSACTION_END, 1, "T");
		F(f, XS_TRANSACTION_START, 0, "");
		F(f, XS_TRANSACTION_END, 2, "F");
		fclose(f);
	}
	if ((f = open_seed(argv[1], "dom0-watch", 0))) {
		F(f, XS_WATCH, 0, "/w\0tok");
		F(f, XS_WRITE, 0,
		  "/w/x\0"
		  "1");
		F(f, XS_WATCH, 0, "@introduceDomain\0in");
		F(f, XS_INTRODUCE, 0,
		  "5\0"
		  "0\0"
		  "1");
		F(f, XS_IS_DOMAIN_INTRODUCED, 0, "5");
		F(f, XS_RELEASE, 0, "5");
		F(f, XS_GET_DOMAIN_PATH, 0, "5");
		F(f, XS_UNWATCH, 0, "/w\0tok");
		F(f, XS_RESET_WATCHES, 0, "");
		fclose(f);
	}
	if ((f = open_seed(argv[1], "guest1-rel", 1 | (3 << 2)))) {
		F(f, XS_WRITE, 0, "data/x\0v");
		F(f, XS_WATCH, 0, "data\0rel");
		F(f, XS_READ, 0, "/local/domain/2");
		F(f, XS_SET_PERMS, 0, "data/x\0n1\0r2");
		F(f, XS_TRANSACTION_START, 0, "");
		F(f, XS_WRITE, 1, "data/y\0w");
		F(f, XS_TRANSACTION_END, 1, "T");
		fclose(f);
	}
	return 0;
}
