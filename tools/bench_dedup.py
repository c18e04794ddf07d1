#!/usr/bin/env python3
"""bench_dedup.py - `make bench-dedup`: issue 6's numbers for the dedup store, from one run.

1. Dedup ratio on real data. Four Debian root file systems made by debootstrap (one release,
   four package sets) as ext4 images (mkfs.ext4 -d, no mount), cached under BENCH_DEDUP_CACHE
   keyed by release and package set. Each is imported into its own dedup volume of a fresh pool
   (`blkctl import` through blkbackd) and `blkctl pool --json` is compared with an independent
   count done here with hashlib over the same image files: logical blocks = non-zero 4 KiB
   blocks of all images, zero blocks = the rest, unique blocks = distinct sha256 of the non-zero
   ones, ratio = logical / unique (docs/dedup.md). Every number must be EQUAL, or the bench fails.
2. Index size per TB of unique data: the store's content index (LMDB pages of its `content`
   database, blkctl pool's index_bytes) after the imports, per unique block, times 1e12 / 4096.
   The whole LMDB file (block maps, free pages included) is reported beside it.
3. Speed against the raw target on the same disk, O_DIRECT for raw (blkbackd's default): a raw
   and a dedup volume of the same pool attached to one guest (hvsimd), fio through
   build/lib/fio-blkfront.so, 4 KiB QD32: random reads of data already there (no page cache on
   either side: the container files are dropped from it first), unique random writes (fio
   refill_buffers: every block new), fully duplicate random writes (every block the same
   content, already in the store). Each job runs REPS times, raw and dedup alternating; the table
   shows medians and the ratios against the targets (0.5x, 1x, 0.8x raw).

Environment (all optional):
  BENCH_RUNTIME=S       seconds per fio run (default 5)
  BENCH_REPS=N          repetitions per job (default 3)
  BENCH_SIZE=SIZE       size of the raw and the dedup volume of the speed part (default 4G: a random
                        read job over less would soon read the containers from the page cache)
  BENCH_DIR=DIR         where the work dir with the pool goes (default /var/tmp; /tmp may be tmpfs)
  BENCH_DEDUP_CACHE=DIR image cache (default /var/cache/sluice-bench)
  BENCH_DEDUP_MIRROR=URL Debian mirror (default http://deb.debian.org/debian)
  BENCH_DEDUP_PARTS=LIST ratio,speed (default both)
  BENCH_DEDUP_JOBS=LIST speed jobs (default read,unique-write,dup-write)
  BENCH_OUT=DIR         JSON and text report (default results/ in the repo)
  BENCH_KEEP=1          keep the work dir afterwards
  BUILD=DIR             build directory (default build)
"""

import glob
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (process handling, fio runs and machine description of make bench)
from bench import BenchError, log, run, spawn, stop_all, wait_for, tail  # noqa: E402

TOP = bench.TOP
RUNTIME = bench.env_int("BENCH_RUNTIME", 5)
REPS = bench.env_int("BENCH_REPS", 3)
SIZE = os.environ.get("BENCH_SIZE") or "4G"
CACHE = os.environ.get("BENCH_DEDUP_CACHE") or "/var/cache/sluice-bench"
MIRROR = os.environ.get("BENCH_DEDUP_MIRROR") or "http://deb.debian.org/debian"
PARTS = bench.env_list("BENCH_DEDUP_PARTS", ["ratio", "speed"])
BUILD = bench.BUILD
BIN = bench.BIN
ENGINE = bench.ENGINE
OUT = bench.OUT
BLK = 4096
RELEASE = "bookworm"

# name, debootstrap arguments: one release, four package sets that grow.
IMAGES = [
    ("minbase", ["--variant=minbase"]),
    ("minbase-net", ["--variant=minbase",
                     "--include=less,procps,iproute2,curl,ca-certificates,netbase"]),
    ("default", []),
    ("default-server", ["--include=openssh-server,sudo,python3,rsync,lvm2"]),
]

# name, fio arguments, target ratio against raw, label
SPEED_JOBS = [
    ("read", ["--rw=randread"], 0.8, "4k randread QD32"),
    ("unique-write", ["--rw=randwrite", "--refill_buffers"], 0.5, "4k randwrite QD32, unique"),
    ("dup-write", ["--rw=randwrite", "--scramble_buffers=0", "--buffer_pattern=0x5a6b7c8d"], 1.0,
     "4k randwrite QD32, all duplicate"),
]

SPEED_JOBS = [j for j in SPEED_JOBS if j[0] in bench.env_list("BENCH_DEDUP_JOBS",
                                                             [j[0] for j in SPEED_JOBS])]


# ---- images ------------------------------------------------------------------------------------

def image_key(name, args):
    h = hashlib.sha256(json.dumps([RELEASE, MIRROR, args]).encode()).hexdigest()[:12]
    return "%s-%s-%s" % (RELEASE, name, h)


def du_bytes(path):
    out = run(["du", "-s", "--block-size=1", "-x", path], "du " + path)
    return int(out.split()[0])


def make_image(name, args):
    """The cached ext4 image of one package set; built (debootstrap + mkfs.ext4 -d) if missing."""
    os.makedirs(CACHE, exist_ok=True)
    key = image_key(name, args)
    img = os.path.join(CACHE, key + ".img")
    if os.path.exists(img):
        log("  %-15s cached: %s (%d MiB)" % (name, img, os.path.getsize(img) >> 20))
        return img
    if shutil.which("debootstrap") is None or shutil.which("mkfs.ext4") is None:
        raise BenchError("debootstrap and mkfs.ext4 are needed to build the images "
                         "(make deps installs them)")
    if os.getuid() != 0:
        raise BenchError("building the Debian images needs root (debootstrap); run as root")
    debs = os.path.join(CACHE, "debs")
    os.makedirs(debs, exist_ok=True)
    tree = tempfile.mkdtemp(prefix="rootfs.%s." % name, dir=CACHE)
    lp = os.path.join(CACHE, key + ".log")
    t0 = time.monotonic()
    try:
        log("  %-15s debootstrap %s %s (log %s)" % (name, " ".join(args), RELEASE, lp))
        with open(lp, "w") as f:
            r = subprocess.run(["debootstrap", "--cache-dir=" + debs] + args +
                               [RELEASE, tree, MIRROR], stdin=subprocess.DEVNULL, stdout=f,
                               stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise BenchError("debootstrap of %s failed (status %d)\n%s"
                             % (name, r.returncode, tail(lp)))
        # Room for the tree plus ext4's own metadata (inode tables, journal) and some free space,
        # rounded up to 64 MiB.
        size = du_bytes(tree) * 13 // 10 + (128 << 20)
        size = (size + (64 << 20) - 1) // (64 << 20) * (64 << 20)
        part = img + ".part"
        if os.path.exists(part):
            os.unlink(part)
        run(["mkfs.ext4", "-q", "-F", "-L", name[:16], "-d", tree, part, str(size // 1024)],
            "mkfs.ext4 -d " + name)
        os.rename(part, img)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    log("  %-15s built in %.0f s: %s (%d MiB)" % (name, time.monotonic() - t0, img,
                                                  os.path.getsize(img) >> 20))
    return img


def count_blocks(paths):
    """The independent count: per image its non-zero and zero 4 KiB blocks, and the distinct
    sha256 of the non-zero blocks over all images."""
    zero = bytes(BLK)
    seen = set()
    per = []
    for p in paths:
        nz = z = 0
        with open(p, "rb", buffering=0) as f:
            while True:
                buf = f.read(BLK * 256)
                if not buf:
                    break
                if len(buf) % BLK:
                    raise BenchError("%s is not a multiple of 4 KiB" % p)
                mv = memoryview(buf)
                for o in range(0, len(buf), BLK):
                    b = mv[o:o + BLK]
                    if b == zero:
                        z += 1
                    else:
                        nz += 1
                        seen.add(hashlib.sha256(b).digest())
        per.append({"image": p, "nonzero_blocks": nz, "zero_blocks": z})
    return per, len(seen)


# ---- the rig: hvsimd with one guest domain, blkbackd on a pool on the real disk ---------------

class Rig:
    def __init__(self, tmp):
        self.tmp = tmp
        self.hv = os.path.join(tmp, "hv")
        self.pool = os.path.join(tmp, "pool")
        self.store = os.path.join(self.pool, "dedup")
        self.domain = "bench"
        self.hvsimd = None
        self.blkbackd = None
        self.disk = None

    def logpath(self, name):
        return os.path.join(self.tmp, name + ".log")

    def blkctl(self, *args):
        return run([os.path.join(BIN, "blkctl"), "--pool", self.pool] + list(args),
                   "blkctl " + " ".join(args[:2]))

    def start(self):
        lp = self.logpath("hvsimd")
        self.hvsimd = spawn("hvsimd", [os.path.join(BIN, "hvsimd"), "--dir", self.hv], lp)
        for s in ("xenstore.sock", "hv.sock"):
            path = os.path.join(self.hv, s)
            wait_for(lambda: os.path.exists(path), "hvsimd's " + s, self.hvsimd, lp)
        run([os.path.join(BIN, "hvctl"), "--dir", self.hv, "domain", "create", self.domain,
             "--mem", "256M"], "hvctl domain create")
        os.makedirs(self.pool, exist_ok=True)
        lp = self.logpath("blkbackd")
        self.blkbackd = spawn("blkbackd", [os.path.join(BIN, "blkbackd"), "--hv-dir", self.hv,
                                           "--pool", self.pool], lp)
        sock = os.path.join(self.pool, "blkbackd.sock")
        wait_for(lambda: os.path.exists(sock), "blkbackd's control socket", self.blkbackd, lp)
        time.sleep(0.2)

    def pool_stats(self):
        out = self.blkctl("pool", "--json")
        try:
            return json.loads(out)
        except ValueError:
            raise BenchError("blkctl pool --json printed no JSON: %s" % out.strip())

    def containers(self):
        return sorted(glob.glob(os.path.join(self.store, "containers", "*.ctr")))

    def alive(self):
        for n, p in (("hvsimd", self.hvsimd), ("blkbackd", self.blkbackd)):
            if p.poll() is not None:
                raise BenchError("%s died (status %s)\n%s" % (n, p.returncode,
                                                             tail(self.logpath(n))))


def stats_of(st):
    """The pool numbers the comparison needs, whatever the JSON nests them in."""
    if isinstance(st, dict) and "logical_bytes" not in st:
        for v in st.values():
            if isinstance(v, dict) and "logical_bytes" in v:
                return v
    if not isinstance(st, dict) or "logical_bytes" not in st:
        raise BenchError("blkctl pool --json has no logical_bytes: %s" % json.dumps(st)[:300])
    return st


# ---- part 1 and 2: ratio and index size ------------------------------------------------------

def ratio_part(rig, report, text):
    log("\n== dedup ratio: %d Debian %s root file systems (debootstrap, ext4 via mkfs.ext4 -d), "
        "cache %s" % (len(IMAGES), RELEASE, CACHE))
    imgs = [(n, make_image(n, a), a) for n, a in IMAGES]
    log("counting blocks of the images here (hashlib sha256 of every non-zero 4 KiB block)")
    t0 = time.monotonic()
    per, distinct = count_blocks([p for _, p, _ in imgs])
    log("  counted in %.1f s" % (time.monotonic() - t0))
    want = {"logical_bytes": sum(x["nonzero_blocks"] for x in per) * BLK,
            "zero_blocks": sum(x["zero_blocks"] for x in per),
            "unique_blocks": distinct, "stored_bytes": distinct * BLK}
    want["dedup_ratio"] = want["logical_bytes"] / want["stored_bytes"]

    rows = []
    for (name, path, args), cnt in zip(imgs, per):
        vol = "deb-" + name
        size = os.path.getsize(path)
        rig.blkctl("create", vol, "--size", "%dM" % (size >> 20), "--store", "dedup")
        t0 = time.monotonic()
        rig.blkctl("import", vol, os.path.abspath(path))
        dt = time.monotonic() - t0
        rig.alive()
        log("  imported %-15s %5d MiB image, %7d non-zero blocks, in %5.1f s (%4.0f MB/s)"
            % (name, size >> 20, cnt["nonzero_blocks"], dt, size / dt / 1e6))
        rows.append({"name": name, "debootstrap": args, "image": path, "image_bytes": size,
                     "nonzero_blocks": cnt["nonzero_blocks"], "zero_blocks": cnt["zero_blocks"],
                     "import_s": round(dt, 2)})
    st = stats_of(rig.pool_stats())
    got = {k: st[k] for k in want}
    ok = all(got[k] == want[k] for k in want)
    lmdb_file = os.path.getsize(os.path.join(rig.store, "index.mdb"))
    per_blk = st["index_bytes"] / st["unique_blocks"]
    idx = {"index_bytes": st["index_bytes"], "map_bytes": st["map_bytes"],
           "lmdb_file_bytes": lmdb_file, "unique_blocks": st["unique_blocks"],
           "index_bytes_per_unique_block": per_blk,
           "index_gb_per_tb": per_blk * 1e12 / BLK / 1e9,
           "lmdb_file_gb_per_tb": lmdb_file / st["unique_blocks"] * 1e12 / BLK / 1e9,
           "target_gb_per_tb": 24.0}
    idx["met"] = idx["index_gb_per_tb"] <= 24.0

    lines = ["dedup ratio: %d Debian %s images imported into dedup volumes of one pool"
             % (len(rows), RELEASE), "",
             "%-15s %-70s %6s %10s %10s" % ("image", "debootstrap", "MiB", "non-zero", "zero"),
             "-" * 115]
    for r in rows:
        lines.append("%-15s %-70s %6d %10d %10d" % (r["name"], " ".join(r["debootstrap"]) or
                                                    "(default variant)", r["image_bytes"] >> 20,
                                                    r["nonzero_blocks"], r["zero_blocks"]))
    lines += ["", "%-14s %20s %20s  %s" % ("", "blkctl pool --json", "counted here", ""),
              "-" * 64]
    for k in ("logical_bytes", "stored_bytes", "unique_blocks", "zero_blocks", "dedup_ratio"):
        fmt = "%-14s %20.12f %20.12f  %s" if k == "dedup_ratio" else "%-14s %20d %20d  %s"
        lines.append(fmt % (k, got[k], want[k], "equal" if got[k] == want[k] else "DIFFERENT"))
    lines += ["", "content index after the imports: %d bytes (LMDB pages of the content db) for "
              "%d unique blocks = %.1f bytes per unique block = %.1f GB per TB of unique data "
              "(target <= 24: %s)" % (idx["index_bytes"], idx["unique_blocks"], per_blk,
                                      idx["index_gb_per_tb"], "met" if idx["met"] else "MISSED"),
              "  whole LMDB file (index + block maps %d bytes + free pages): %d bytes = %.1f GB "
              "per TB of unique data" % (idx["map_bytes"], lmdb_file,
                                        idx["lmdb_file_gb_per_tb"])]
    for ln in lines:
        log(ln)
    text += [""] + lines
    report["ratio"] = {"images": rows, "blkctl_pool": st, "counted": want, "equal": ok,
                       "index": idx}
    if not ok:
        raise BenchError("the store's numbers differ from the independent count: %s vs %s"
                         % (got, want))


# ---- part 3: speed against raw -----------------------------------------------------------------

def size_bytes(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    s = s.strip().upper()
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


def drop_cache(path):
    """Write back and drop @path's pages, so the next reads of it come from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def containers_cached(rig):
    """Share of the container files' pages in the page cache (mincore), over all of them."""
    tot = cached = 0
    for c in rig.containers():
        sz = os.path.getsize(c)
        f = bench.cached_fraction(c)
        tot += sz
        cached += f * sz if f >= 0 else 0
    return cached / tot if tot else 0.0


def fio_run(rig, job, vdev, tag):
    name, args, _, _ = job
    out = os.path.join(rig.tmp, tag + ".json")
    err = os.path.join(rig.tmp, tag + ".err")
    argv = ["fio", "--name=" + name, "--bs=4k", "--iodepth=32", "--runtime=%d" % RUNTIME,
            "--time_based", "--norandommap", "--randrepeat=0", "--iomem_align=4096",
            "--output-format=json", "--output=" + out,
            "--ioengine=external:" + ENGINE, "--hv_dir=" + rig.hv, "--domain=" + rig.domain,
            "--filename=" + vdev] + args
    rig.alive()
    b0 = bench.cpu_ticks(rig.blkbackd.pid)
    d0 = bench.disk_stats(rig.disk)
    t0 = time.monotonic()
    p = spawn("fio", argv, err)
    bench.reap(p, RUNTIME + 120, "fio")
    wall = time.monotonic() - t0
    d1 = bench.disk_stats(rig.disk)
    rig.alive()
    b1 = bench.cpu_ticks(rig.blkbackd.pid)
    if p.returncode != 0:
        raise BenchError("fio (%s) exited %d\n%s" % (tag, p.returncode, tail(err)))
    try:
        with open(out) as f:
            t = f.read()
        res = json.loads(t[t.find("{"):])
    except (OSError, ValueError) as e:
        raise BenchError("no fio JSON in %s (%s)\n%s" % (out, e, tail(err)))
    j = res["jobs"][0]
    d = j["read"] if j["read"]["total_ios"] else j["write"]
    ios = d["total_ios"]
    pct = d.get("clat_ns", {}).get("percentile", {})
    dd = bench.disk_delta(d0, d1, wall)
    return {"iops": d["iops"], "ios": ios, "p50_us": pct.get("50.000000", 0) / 1000.0,
            "p99_us": pct.get("99.000000", 0) / 1000.0,
            "be_us_per_io": (b1 - b0) / bench.HZ * 1e6 / ios if ios else 0.0,
            "disk_iops": dd["iops"] if dd else None, "disk_aqu": dd["aqu"] if dd else None}


def speed_part(rig, report, text):
    size = size_bytes(SIZE)
    log("\n== speed: a raw and a dedup volume of %s on %s, fio through blkbackd, %d s x %d"
        % (SIZE, rig.pool, RUNTIME, REPS))
    rig.blkctl("create", "raw", "--size", SIZE)
    rig.blkctl("create", "dd", "--size", SIZE, "--store", "dedup")
    raw_img = os.path.join(rig.pool, "vols", "raw.img")
    if not os.path.isfile(raw_img):
        raise BenchError("blkctl create made no %s" % raw_img)
    log("filling both with unique data (raw: fio; dedup: blkctl import of random data)")
    bench.fill(raw_img)
    src = os.path.join(rig.tmp, "random.img")
    with open(src, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    rig.blkctl("import", "dd", src)
    os.unlink(src)
    rig.blkctl("attach", "raw", rig.domain, "xvda")
    rig.blkctl("attach", "dd", rig.domain, "xvdb")
    vdev = {"raw": "xvda", "dedup": "xvdb"}

    runs = {}
    seq = 0
    for job in SPEED_JOBS:
        for rep in range(REPS):
            order = ["raw", "dedup"] if rep % 2 == 0 else ["dedup", "raw"]
            for who in order:
                # Neither side reads from the page cache: raw is O_DIRECT, the containers are
                # written back and dropped from it. The index stays: it is mmap'd and hot.
                drop_cache(raw_img)
                for c in rig.containers():
                    drop_cache(c)
                time.sleep(1)
                seq += 1
                r = run_one(rig, job, who, vdev[who], "run%03d-%s-%s" % (seq, job[0], who))
                r.update({"job": job[0], "who": who, "rep": rep,
                          "cached_end": containers_cached(rig) if who == "dedup" else 0.0})
                runs.setdefault((job[0], who), []).append(r)
                log("  %-34s %-6s rep %d: %8.0f IOPS  p50 %7.1f us  p99 %8.1f us  "
                    "blkbackd %6.2f us/IO  disk %6.0f IOPS QD %5.1f%s"
                    % (job[3], who, rep + 1, r["iops"], r["p50_us"], r["p99_us"],
                       r["be_us_per_io"], r["disk_iops"] or 0, r["disk_aqu"] or 0,
                       "  containers %3.0f%% cached at the end" % (r["cached_end"] * 100)
                       if who == "dedup" else ""))
    med = {}
    for k, v in runs.items():
        med[k] = {m: statistics.median(x[m] for x in v if x[m] is not None)
                  for m in ("iops", "p50_us", "p99_us", "be_us_per_io", "disk_iops", "disk_aqu",
                            "cached_end")}
        med[k]["iops_runs"] = [round(x["iops"]) for x in v]
    hdr = "%-34s %-6s %9s %8s %9s %9s %9s %7s %9s  %s" % (
        "job", "volume", "IOPS", "p50 us", "p99 us", "srv us/IO", "cached", "x raw", "target", "")
    lines = ["speed: median of %d run(s) of %d s, 4 KiB, QD32, one guest queue; srv us/IO = "
             "blkbackd CPU per I/O;" % (REPS, RUNTIME),
             "cached = share of the container files in the page cache when a dedup run ended "
             "(each run starts with none)", hdr, "-" * len(hdr)]
    tg = []
    for job in SPEED_JOBS:
        r, d = med[(job[0], "raw")], med[(job[0], "dedup")]
        x = d["iops"] / r["iops"] if r["iops"] else float("nan")
        met = x >= job[2]
        tg.append({"job": job[0], "target": ">= %.1fx raw IOPS" % job[2], "value": round(x, 3),
                   "met": met})
        for who, m in (("raw", r), ("dedup", d)):
            lines.append("%-34s %-6s %9.0f %8.1f %9.1f %9.2f %9s %7s %9s  %s"
                         % (job[3], who, m["iops"], m["p50_us"], m["p99_us"], m["be_us_per_io"],
                            "%.0f%%" % (m["cached_end"] * 100) if who == "dedup" else "",
                            "%.2f" % x if who == "dedup" else "",
                            ">= %.1fx" % job[2] if who == "dedup" else "",
                            ("met" if met else "MISSED") if who == "dedup" else ""))
    for ln in lines:
        log(ln)
    text += [""] + lines
    report["speed"] = {"size": SIZE, "runtime_s": RUNTIME, "reps": REPS,
                       "medians": [dict(job=k[0], volume=k[1], **v) for k, v in med.items()],
                       "runs": [r for v in runs.values() for r in v], "targets": tg}


def run_one(rig, job, who, vdev, tag):
    try:
        return fio_run(rig, job, vdev, tag)
    except BenchError as e:
        raise BenchError("%s on the %s volume: %s" % (job[0], who, e))


# ---- main ------------------------------------------------------------------------------------

def preflight():
    need = [os.path.join(BIN, b) for b in ("hvsimd", "hvctl", "blkbackd", "blkctl")] + [ENGINE]
    missing = [p for p in need if not os.path.exists(p)]
    if missing:
        raise BenchError("not built: %s (run make)" % ", ".join(missing))
    for p in PARTS:
        if p not in ("ratio", "speed"):
            raise BenchError("unknown part %s (ratio, speed)" % p)
    if shutil.which("fio") is None:
        raise BenchError("fio is needed (make deps installs it)")


def main():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, bench._on_signal)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tmp = None
    rc = 0
    keep = False
    t_start = time.monotonic()
    try:
        preflight()
        parent = os.environ.get("BENCH_DIR") or "/var/tmp"
        tmp = tempfile.mkdtemp(prefix="sluice-bench-dedup.", dir=parent)
        rig = Rig(tmp)
        rig.start()
        mc = bench.machine(rig.pool)
        rig.disk = mc["device"].get("disk")
        if mc["fs"]["type"] == "tmpfs":
            raise BenchError("%s is on tmpfs: O_DIRECT means nothing there (set BENCH_DIR)"
                             % parent)
        log("bench-dedup: work dir %s on %s (%s); %d CPU(s) %s, load %s"
            % (tmp, mc["fs"]["source"], mc["fs"]["type"], mc["nproc"], mc["cpu"],
               " ".join(mc["loadavg_start"])))
        report = {"stamp": stamp, "machine": mc, "parts": PARTS,
                  "config": {"runtime_s": RUNTIME, "reps": REPS, "size": SIZE, "cache": CACHE,
                             "mirror": MIRROR, "release": RELEASE}}
        text = ["sluice bench-dedup %s (%s)" % (stamp, mc["git"]),
                "machine: %d CPU(s) %s, kernel %s, %d MiB RAM; pool on %s (%s)"
                % (mc["nproc"], mc["cpu"], mc["kernel"], mc["mem_kib"] // 1024,
                   mc["fs"]["source"], mc["fs"]["type"])]
        if "ratio" in PARTS:
            ratio_part(rig, report, text)
        if "speed" in PARTS:
            speed_part(rig, report, text)
        report["elapsed_s"] = round(time.monotonic() - t_start, 1)
        os.makedirs(OUT, exist_ok=True)
        jpath = os.path.join(OUT, "bench-dedup-%s.json" % stamp)
        with open(jpath, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
        tpath = os.path.join(OUT, "bench-dedup-%s.txt" % stamp)
        with open(tpath, "w") as f:
            f.write("\n".join(text) + "\n")
        log("\nbench-dedup: done in %.0f s; %s and %s" % (report["elapsed_s"], bench.shown(jpath),
                                                          bench.shown(tpath)))
    except BenchError as e:
        print("bench-dedup: FAILED: %s" % e, file=sys.stderr)
        if tmp:
            print("bench-dedup: logs kept in %s" % tmp, file=sys.stderr)
        rc = 1
        keep = True
    except (KeyboardInterrupt, SystemExit) as e:
        print("bench-dedup: interrupted", file=sys.stderr)
        rc = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 130
    finally:
        stop_all()
        if tmp and not keep and os.environ.get("BENCH_KEEP", "") in ("", "0"):
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
