#!/usr/bin/env python3
"""bench.py - `make bench`: Sluice's I/O path against the limit and against the peers.

Every contender runs on the SAME backing file in the same run: the pool volume's image file.

  direct  fio ioengine=io_uring on the file in dom0 (the limit)
  sluice  fio through build/lib/fio-blkfront.so -> blkbackd -> the file
  nbdkit  nbdkit's file plugin on the file (unix socket), fio ioengine=nbd
  qsd     a qemu-storage-daemon NBD export of the file (unix socket, raw), fio ioengine=nbd

Two passes: "cached" (the file warm in the page cache, buffered I/O everywhere: fio direct=0,
blkbackd --no-direct, nbdkit's default, qsd cache.direct=off) and "direct" (O_DIRECT on disk: fio
direct=1, blkbackd's default O_DIRECT, qsd cache.direct=on; nbdkit 1.32's file plugin has no
O_DIRECT, its nearest is cache=none, which drops the pages it read or wrote from the cache).
Within a pass every job is repeated; each repetition runs the contenders in a rotated order and
the table shows the median of each number. A second table shows what each fast-path feature of
the blkif transport buys (sluice only, each feature off vs on, everything else at the defaults).

Environment (all optional):
  BENCH_QUICK=1       smoke run, about 2 minutes (1 s runs, 1 repetition, 256 MiB file)
  BENCH_RUNTIME=S     seconds per measured run (default 5; quick 1)
  BENCH_RAMP=S        a warm-up run of S seconds before each measured run (default 0: see below)
  BENCH_REPS=N        repetitions per job (default 3; quick 1)
  BENCH_SIZE=SIZE     backing file size for blkctl create (default 1G; quick 256M)
  BENCH_DIR=DIR       where the temp dir with the pool goes (default /var/tmp: /tmp may be tmpfs,
                      where O_DIRECT means nothing)
  BENCH_PASSES=LIST   cached,direct (default both)
  BENCH_CONTENDERS=LIST  direct,sluice,nbdkit,qsd (default all)
  BENCH_JOBS=LIST     job names (default all: rr4k-qd1,rr4k-qd32,rw4k-qd32,sr128k-qd8,sw128k-qd8)
  BENCH_FEATURES=0    skip the feature table
  BENCH_FEATURE_PASS=P  the pass the feature table runs in (default cached)
  BENCH_PERF=auto|1|0 perf record -g on blkbackd during a 4k randread QD32 sluice run: when a
                      target was missed in that pass (auto, the default), always, or never
  BENCH_SLUICE_OPTS=K=V,...  engine options for the sluice contender, over the defaults
                      (ring_order=4,persistent=1,indirect_segs=256,queues=1,poll_us=0)
  BENCH_BLKBACKD_ARGS="..."  extra blkbackd arguments (e.g. "--poll-us 50")
  BENCH_OUT=DIR       where the JSON and text reports go (default results/ in the repo)
  BENCH_KEEP=1        keep the temp dir (logs) afterwards
  BUILD=DIR           build directory (default build)

CPU time per I/O. For the backends it is the process's utime+stime (/proc/PID/stat, all its
threads) over the life of one fio process, divided by the I/Os that fio process completed; for
sluice it is blkbackd plus hvsimd (hvsimd is not on the data path; it is counted so nothing
hides). For direct there is no backend: its column is fio's own usr+sys CPU, as fio reports it.
fio excludes ramp_time I/Os from its counts but the backend process still does them, so the
measured runs have no ramp_time: connect and setup (a few ms) are inside each 5 s run. BENCH_RAMP
adds a separate warm-up fio run before each measured one instead.
"""

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_list(name, default):
    v = os.environ.get(name, "")
    return [x for x in v.replace(" ", ",").split(",") if x] if v.strip() else list(default)


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
RUNTIME = env_int("BENCH_RUNTIME", 1 if QUICK else 5)
RAMP = env_int("BENCH_RAMP", 0)
REPS = env_int("BENCH_REPS", 1 if QUICK else 3)
SIZE = os.environ.get("BENCH_SIZE") or ("256M" if QUICK else "1G")
PASSES = env_list("BENCH_PASSES", ["cached", "direct"])
CONTENDERS = env_list("BENCH_CONTENDERS", ["direct", "sluice", "nbdkit", "qsd"])
FEATURES = os.environ.get("BENCH_FEATURES", "1") != "0"
FEATURE_PASS = os.environ.get("BENCH_FEATURE_PASS", "cached")
PERF = os.environ.get("BENCH_PERF", "auto")
BUILD = os.environ.get("BUILD", "build")
BIN = os.path.join(TOP, BUILD, "bin")
ENGINE = os.path.join(TOP, BUILD, "lib", "fio-blkfront.so")
OUT = os.environ.get("BENCH_OUT") or os.path.join(TOP, "results")
NCPU = os.cpu_count() or 1
HZ = os.sysconf("SC_CLK_TCK")

# name, fio rw, block size, iodepth, label
ALL_JOBS = [
    ("rr4k-qd1", "randread", "4k", 1, "4k randread QD1"),
    ("rr4k-qd32", "randread", "4k", 32, "4k randread QD32"),
    ("rw4k-qd32", "randwrite", "4k", 32, "4k randwrite QD32"),
    ("sr128k-qd8", "read", "128k", 8, "128k seq read QD8"),
    ("sw128k-qd8", "write", "128k", 8, "128k seq write QD8"),
]
EXTRA_JOBS = [("rr4k-qd128", "randread", "4k", 128, "4k randread QD128")]
JOB_BY_NAME = {j[0]: j for j in ALL_JOBS + EXTRA_JOBS}
JOBS = [JOB_BY_NAME[n] for n in env_list("BENCH_JOBS", [j[0] for j in ALL_JOBS])]

# The engine's defaults: every fast-path feature on, one queue.
SLUICE_DEFAULT = {"ring_order": 4, "persistent": 1, "indirect_segs": 256, "queues": 1,
                  "poll_us": 0}
for kv in env_list("BENCH_SLUICE_OPTS", []):
    k, _, v = kv.partition("=")
    if k not in SLUICE_DEFAULT or not v.isdigit():
        sys.exit("bench: BENCH_SLUICE_OPTS: %s is not one of %s=N" % (kv, "|".join(SLUICE_DEFAULT)))
    SLUICE_DEFAULT[k] = int(v)
BLKBACKD_ARGS = os.environ.get("BENCH_BLKBACKD_ARGS", "").split()

# feature, job, what changes for "off", what changes for "on"
FEATURE_ROWS = [
    ("ring order 0 -> 4", "rr4k-qd128", {"ring_order": 0}, {"ring_order": 4}),
    ("ring order 0 -> 4", "rr4k-qd32", {"ring_order": 0}, {"ring_order": 4}),
    ("persistent grants off -> on", "rr4k-qd32", {"persistent": 0}, {"persistent": 1}),
    ("persistent grants off -> on", "sr128k-qd8", {"persistent": 0}, {"persistent": 1}),
    ("indirect 0 -> 256 segments", "sr128k-qd8", {"indirect_segs": 0}, {"indirect_segs": 256}),
    ("queues 1 -> %d" % NCPU, "rr4k-qd32", {"queues": 1}, {"queues": NCPU}),
    ("guest poll_us 0 -> 50", "rr4k-qd1", {"poll_us": 0}, {"poll_us": 50}),
]


class BenchError(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# ---- processes: every one we start is in PROCS until it is reaped -----------------------------

PROCS = []  # (name, Popen)
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: if this script is killed outright (SIGKILL, no finally), the
    # daemons still get SIGTERM and shut down instead of lingering.
    _libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def spawn(name, argv, logpath, new_session=True):
    logf = open(logpath, "ab")
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             preexec_fn=_die_with_parent, start_new_session=new_session)
    except OSError as e:
        raise BenchError("%s: cannot start %s: %s" % (name, argv[0], e))
    finally:
        logf.close()
    PROCS.append((name, p))
    return p


def stop(p, grace=10.0):
    """SIGTERM, then SIGKILL after @grace seconds; always reaps. Only our own pid."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass
    for i, (_, q) in enumerate(PROCS):
        if q is p:
            del PROCS[i]
            break


def stop_all():
    # Newest first: fio before the servers, blkbackd before hvsimd.
    while PROCS:
        name, p = PROCS[-1]
        try:
            stop(p)
        except Exception as e:  # keep going: nothing may be left behind
            print("bench: stopping %s (pid %d): %s" % (name, p.pid, e), file=sys.stderr)
            if PROCS and PROCS[-1][1] is p:
                PROCS.pop()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
        return "\n".join("    " + ln for ln in lines[-n:])
    except OSError:
        return "    (no %s)" % path


def wait_for(cond, what, proc=None, logpath=None, timeout=15.0):
    """Poll @cond until true; fail early if @proc died. Bounded by @timeout seconds."""
    end = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise BenchError("%s exited (status %s) before %s\n%s"
                             % (os.path.basename(proc.args[0]), proc.returncode, what,
                                tail(logpath) if logpath else ""))
        if time.monotonic() > end:
            raise BenchError("timed out waiting for %s\n%s" % (what, tail(logpath) if logpath
                                                                else ""))
        time.sleep(0.05)


def run(argv, what):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise BenchError("%s failed (%s): %s" % (what, " ".join(argv), r.stdout.strip()))
    return r.stdout


def cpu_ticks(pid):
    """utime + stime of every thread of @pid, in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def host_busy_ticks():
    """(busy, steal) clock ticks of all CPUs: busy is user..softirq; steal is time the
    hypervisor ran something else on our vCPUs (on a VM: its own I/O emulation, neighbours)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:3]) + sum(v[5:7]), v[7]


def disk_stats(disk):
    """(I/Os completed, weighted ms in queue, ms busy) of @disk from /proc/diskstats, or None."""
    if not disk:
        return None
    with open("/proc/diskstats") as f:
        for ln in f:
            v = ln.split()
            if len(v) >= 14 and v[2] == disk:
                return int(v[3]) + int(v[7]), int(v[13]), int(v[12])
    return None


def disk_delta(d0, d1, wall):
    """What the disk saw during a run: its IOPS, mean requests in flight (iostat's aqu-sz),
    mean time in its queue per request and utilisation."""
    if d0 is None or d1 is None:
        return None
    ios, wq, busy = (b - a for a, b in zip(d0, d1))
    return {"iops": ios / wall, "aqu": wq / (wall * 1000.0),
            "await_us": wq * 1000.0 / ios if ios else 0.0, "util": busy / (wall * 1000.0)}


# ---- the backing file ------------------------------------------------------------------------

def fsync_and_maybe_evict(path, evict):
    """Write back what the last run dirtied (outside any measured window); for the O_DIRECT pass
    also drop the file's pages so no contender reads from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        if evict:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path):
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass


def cached_fraction(path):
    """Fraction of the file's pages in the page cache (mincore(2)): proof the cached pass is."""
    size = os.path.getsize(path)
    page = os.sysconf("SC_PAGE_SIZE")
    npages = (size + page - 1) // page
    if npages == 0:
        return 0.0
    mmap_ = _libc.mmap
    mmap_.restype = ctypes.c_void_p
    mmap_.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
    _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    vec = (ctypes.c_ubyte * npages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        a = mmap_(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if a is None or a == ctypes.c_void_p(-1).value:
            return -1.0
        try:
            if _libc.mincore(a, size, vec) != 0:
                return -1.0
        finally:
            _libc.munmap(a, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in vec) / npages


def fill(path):
    """Write every block once so no contender reads holes (ext4 answers those without a disk)."""
    run(["fio", "--name=fill", "--filename=" + path, "--rw=write", "--bs=1M", "--iodepth=8",
         "--ioengine=io_uring", "--direct=1", "--invalidate=0", "--output-format=terse"],
        "filling the backing file")


# ---- contenders ------------------------------------------------------------------------------

class Rig:
    """The temp dir, hvsimd with the guest domain, and the backing file (the pool volume)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.hv = os.path.join(tmp, "hv")
        self.pool = os.path.join(tmp, "pool")
        self.img = os.path.join(self.pool, "vols", "bench.img")
        self.domain = "bench"
        self.hvsimd = None
        self.blkbackd = None
        self.nbdkit = None
        self.qsd = None
        self.pass_ = None
        self.disk = None  # the block device under the backing file (for /proc/diskstats)

    def logpath(self, name):
        return os.path.join(self.tmp, name + ".log")

    def blkctl(self, *args):
        return run([os.path.join(BIN, "blkctl"), "--pool", self.pool] + list(args),
                   "blkctl " + args[0])

    def start_hv(self):
        lp = self.logpath("hvsimd")
        self.hvsimd = spawn("hvsimd", [os.path.join(BIN, "hvsimd"), "--dir", self.hv], lp)
        for s in ("xenstore.sock", "hv.sock"):
            path = os.path.join(self.hv, s)
            wait_for(lambda: os.path.exists(path), "hvsimd's " + s, self.hvsimd, lp)
        run([os.path.join(BIN, "hvctl"), "--dir", self.hv, "domain", "create", self.domain,
             "--mem", "256M"], "hvctl domain create")

    def start_pass(self, pass_):
        """blkbackd, nbdkit and qsd for one pass; the vbd attached."""
        self.pass_ = pass_
        direct = pass_ == "direct"
        if "sluice" in CONTENDERS:
            lp = self.logpath("blkbackd-" + pass_)
            argv = [os.path.join(BIN, "blkbackd"), "--hv-dir", self.hv, "--pool", self.pool]
            if not direct:
                argv.append("--no-direct")
            argv += BLKBACKD_ARGS
            self.blkbackd = spawn("blkbackd", argv, lp)
            sock = os.path.join(self.pool, "blkbackd.sock")
            wait_for(lambda: os.path.exists(sock) and self._ctl_ok(), "blkbackd's control socket",
                     self.blkbackd, lp)
            self.blkctl("attach", "bench", self.domain, "xvda")
        if "nbdkit" in CONTENDERS:
            lp = self.logpath("nbdkit-" + pass_)
            sock = os.path.join(self.tmp, "nbdkit.sock")
            argv = ["nbdkit", "--foreground", "--exit-with-parent", "--unix", sock, "file",
                    self.img]
            if direct:
                argv.append("cache=none")
            self.nbdkit = spawn("nbdkit", argv, lp)
            wait_for(lambda: os.path.exists(sock), "nbdkit's socket", self.nbdkit, lp)
        if "qsd" in CONTENDERS:
            lp = self.logpath("qsd-" + pass_)
            sock = os.path.join(self.tmp, "qsd.sock")
            argv = ["qemu-storage-daemon",
                    "--blockdev", "driver=file,node-name=file0,filename=%s,aio=io_uring,"
                    "cache.direct=%s" % (self.img, "on" if direct else "off"),
                    "--blockdev", "driver=raw,node-name=fmt0,file=file0",
                    "--nbd-server", "addr.type=unix,addr.path=" + sock,
                    "--export", "type=nbd,id=exp0,node-name=fmt0,name=,writable=on"]
            self.qsd = spawn("qemu-storage-daemon", argv, lp)
            wait_for(lambda: os.path.exists(sock), "qemu-storage-daemon's socket", self.qsd, lp)

    def _ctl_ok(self):
        """blkbackd listens on its control socket (a stale file from the last pass does not)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(os.path.join(self.pool, "blkbackd.sock"))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def end_pass(self):
        if self.blkbackd is not None:
            if self.blkbackd.poll() is None:
                self.blkctl("detach", self.domain, "xvda")
            stop(self.blkbackd)
            self.blkbackd = None
        for name in ("nbdkit", "qsd"):
            p = getattr(self, name)
            if p is not None:
                stop(p)
                setattr(self, name, None)
        for s in ("nbdkit.sock", "qsd.sock"):
            try:
                os.unlink(os.path.join(self.tmp, s))
            except FileNotFoundError:
                pass

    def server(self, contender):
        """(name, process) of each backend process whose CPU counts for @contender."""
        if contender == "sluice":
            return [("blkbackd", self.blkbackd), ("hvsimd", self.hvsimd)]
        if contender == "nbdkit":
            return [("nbdkit", self.nbdkit)]
        if contender == "qsd":
            return [("qsd", self.qsd)]
        return []

    def server_log(self, name):
        return self.logpath(name if name == "hvsimd" else name + "-" + self.pass_)

    def fio_args(self, contender, cfg):
        direct = self.pass_ == "direct"
        if contender == "direct":
            return ["--ioengine=io_uring", "--filename=" + self.img,
                    "--direct=%d" % direct, "--invalidate=0"]
        if contender == "sluice":
            a = ["--ioengine=external:" + ENGINE, "--hv_dir=" + self.hv,
                 "--domain=" + self.domain, "--filename=xvda"]
            return a + ["--%s=%d" % (k, v) for k, v in sorted(cfg.items())]
        sock = os.path.join(self.tmp, contender + ".sock")
        return ["--ioengine=nbd", "--uri=nbd+unix:///?socket=" + sock]


TRANSPORT_RE = re.compile(r"(\d+) queue\(s\) of (\d+) slots, (\d+) segments per request"
                          r"( \(indirect\))?([^\n]*)")


def check_transport(errpath, cfg):
    """What the engine logged it negotiated; it must be what @cfg asked for."""
    with open(errpath, errors="replace") as f:
        m = TRANSPORT_RE.search(f.read())
    if not m:
        raise BenchError("the engine did not log the negotiated transport\n" + tail(errpath))
    t = {"queues": int(m.group(1)), "slots": int(m.group(2)), "segments": int(m.group(3)),
         "indirect": bool(m.group(4)), "persistent": "persistent grants" in m.group(5)}
    want_segs = cfg["indirect_segs"] if cfg["indirect_segs"] else 11
    ok = (t["queues"] == cfg["queues"] and t["slots"] == 32 << cfg["ring_order"] and
          t["indirect"] == bool(cfg["indirect_segs"]) and t["segments"] == want_segs and
          t["persistent"] == bool(cfg["persistent"]))
    if not ok:
        raise BenchError("negotiated %s, asked for %s" % (t, cfg))
    return t


# ---- one measured run ------------------------------------------------------------------------

RUN_SEQ = [0]


def fio_argv(job, runtime, out):
    name, rw, bs, qd, _ = job
    return ["fio", "--name=" + name, "--rw=" + rw, "--bs=" + bs, "--iodepth=%d" % qd,
            "--runtime=%d" % runtime, "--time_based", "--norandommap", "--randrepeat=0",
            "--iomem_align=4096", "--lat_percentiles=1", "--clat_percentiles=1",
            "--output-format=json", "--output=" + out]


def reap(p, timeout, what):
    """Wait for @p with wait4 (its CPU, threads and children included); bounded."""
    end = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            for i, (_, q) in enumerate(PROCS):
                if q is p:
                    del PROCS[i]
                    break
            return ru
        if time.monotonic() > end:
            raise BenchError("%s did not finish within %d s" % (what, timeout))
        time.sleep(0.02)


def measure(rig, job, contender, cfg=None, perf_out=None):
    """One fio run of @job through @contender in the current pass; returns its record."""
    cfg = dict(SLUICE_DEFAULT, **(cfg or {})) if contender == "sluice" else {}
    what = "%s, job %s, %s pass" % (contender, job[0], rig.pass_)
    try:
        return _measure(rig, job, contender, cfg, what, perf_out)
    except BenchError as e:
        raise BenchError("contender %s failed (job %s, %s pass): %s"
                         % (contender, job[0], rig.pass_, e))


def _measure(rig, job, contender, cfg, what, perf_out):
    RUN_SEQ[0] += 1
    tag = "run%04d-%s-%s-%s" % (RUN_SEQ[0], rig.pass_, job[0], contender)
    out = os.path.join(rig.tmp, tag + ".json")
    err = os.path.join(rig.tmp, tag + ".err")
    args = rig.fio_args(contender, cfg)
    servers = rig.server(contender)
    for n, p in servers:
        if p is None or p.poll() is not None:
            raise BenchError("%s is not running\n%s" % (n, tail(rig.server_log(n))))

    fsync_and_maybe_evict(rig.img, rig.pass_ == "direct")
    if RAMP > 0:
        w = spawn("fio", fio_argv(job, RAMP, out) + args, err)
        reap(w, RAMP + 60, "warm-up fio")
        if w.returncode != 0:
            raise BenchError("warm-up fio exited %d\n%s" % (w.returncode, tail(err)))

    perf = None
    if perf_out:
        perf = spawn("perf", ["perf", "record", "-g", "-o", perf_out, "-p",
                              str(rig.blkbackd.pid)], perf_out + ".log")
        # perf writes the file's header once its events are open on the process.
        wait_for(lambda: os.path.exists(perf_out) and os.path.getsize(perf_out) > 0,
                 "perf record to attach", perf, perf_out + ".log")
    b0 = {n: cpu_ticks(p.pid) for n, p in servers}
    h0 = host_busy_ticks()
    d0 = disk_stats(rig.disk)
    t0 = time.monotonic()
    fio = spawn("fio", fio_argv(job, RUNTIME, out) + args, err)
    ru = reap(fio, RUNTIME + 120, "fio")
    wall = time.monotonic() - t0
    h1 = host_busy_ticks()
    d1 = disk_stats(rig.disk)
    b1 = {}
    for n, p in servers:
        if p.poll() is not None:
            raise BenchError("%s died during the run (status %s)\n%s"
                             % (n, p.returncode, tail(rig.server_log(n))))
        b1[n] = cpu_ticks(p.pid)
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        reap(perf, 60, "perf record")
    if fio.returncode != 0:
        raise BenchError("fio exited %d\n%s" % (fio.returncode, tail(err)))
    notes = ""
    try:
        with open(out) as f:
            text = f.read()
        # fio writes its error log (and the engine's log_err lines) into --output too, ahead
        # of the JSON document: keep them as notes.
        start = text.find("\n{") + 1 if not text.startswith("{") else 0
        notes = text[:start].strip()
        res = json.loads(text[start:])
    except (OSError, ValueError) as e:
        raise BenchError("no fio JSON in %s (%s)\n%s" % (out, e, tail(err)))
    j = res["jobs"][0]
    if j.get("error"):
        raise BenchError("fio job error %d\n%s" % (j["error"], tail(err)))
    side = j["read"] if job[1] in ("read", "randread") else j["write"]
    ios = j["read"]["total_ios"] + j["write"]["total_ios"]
    if ios == 0:
        raise BenchError("fio completed no I/O\n%s" % tail(err))
    pct = side["lat_ns"].get("percentile") or side["clat_ns"].get("percentile", {})
    fio_cpu = (j["usr_cpu"] + j["sys_cpu"]) / 100.0 * j["job_runtime"] / 1000.0
    be = {n: (b1[n] - b0[n]) / HZ for n in b0}
    be_total = sum(be.values()) if servers else fio_cpu
    rec = {
        "pass": rig.pass_, "job": job[0], "contender": contender, "config": cfg,
        "iops": side["iops"], "mbps": side["bw_bytes"] / 1e6,
        "p50_us": pct.get("50.000000", 0) / 1000.0, "p99_us": pct.get("99.000000", 0) / 1000.0,
        "lat_mean_us": side["lat_ns"]["mean"] / 1000.0,
        "clat_mean_us": side["clat_ns"]["mean"] / 1000.0,
        "clat_p50_us": side["clat_ns"].get("percentile", {}).get("50.000000", 0) / 1000.0,
        "clat_p99_us": side["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000.0,
        "slat_mean_us": side["slat_ns"]["mean"] / 1000.0,
        "ios": ios, "runtime_ms": j["job_runtime"],
        "fio_cpu_s": fio_cpu,
        "fio_process_cpu_s": ru.ru_utime + ru.ru_stime,
        "backend_cpu_s": be,
        "be_us_per_io": be_total / ios * 1e6,
        "fio_us_per_io": fio_cpu / ios * 1e6,
        "wall_s": wall,
        "host_busy_s": (h1[0] - h0[0]) / HZ,
        "steal_s": (h1[1] - h0[1]) / HZ,
        "disk": disk_delta(d0, d1, wall),
    }
    # CPU the rest of the machine used meanwhile (other people's builds on a shared box): the
    # host's busy time less fio's and the backend's. In CPUs, so 0.5 is half a core taken.
    rec["others_cpu_s"] = rec["host_busy_s"] - rec["fio_process_cpu_s"] - sum(be.values())
    rec["others_load"] = max(0.0, rec["others_cpu_s"]) / wall
    rec["disk_aqu"] = rec["disk"]["aqu"] if rec["disk"] else 0.0
    if notes:
        rec["fio_notes"] = notes
    if contender == "sluice":
        rec["transport"] = check_transport(err, cfg)
    return rec


# ---- summaries -------------------------------------------------------------------------------

METRICS = ["iops", "mbps", "p50_us", "p99_us", "be_us_per_io", "fio_us_per_io", "others_cpu_s",
           "others_load", "disk_aqu"]


def median_of(recs):
    m = {k: statistics.median(r[k] for r in recs) for k in METRICS}
    m["runs"] = len(recs)
    m["iops_runs"] = [round(r["iops"]) for r in recs]
    return m


def ratio(a, b):
    return a / b if b else float("nan")


def fmt_ratio(x):
    return "-" if x != x else "%.2f" % x


def main_table(pass_, med):
    """Lines of the pass's table; @med[(job, contender)] holds medians."""
    hdr = ("%-18s %-7s %9s %8s %8s %8s %8s %8s %7s %7s %7s %7s %6s"
           % ("job", "who", "IOPS", "MB/s", "p50 us", "p99 us", "srv us", "fio us",
              "xdirect", "xnbdkit", "xqsd", "p50/dir", "devQD"))
    lines = ["%s pass: median of %d run(s) of %d s; p50/p99 = fio total latency (lat, issue to "
             "completion); x = IOPS ratio;" % (pass_, REPS, RUNTIME),
             "srv us = backend CPU us per I/O (direct: fio's own), fio us = fio's CPU us per I/O, "
             "devQD = mean requests in flight at the disk (iostat aqu-sz)",
             hdr, "-" * len(hdr)]
    for job in JOBS:
        for c in CONTENDERS:
            m = med.get((job[0], c))
            if m is None:
                continue
            refs = {r: med.get((job[0], r)) for r in ("direct", "nbdkit", "qsd")}
            rs = [fmt_ratio(ratio(m["iops"], refs[r]["iops"])) if refs[r] and r != c else "-"
                  for r in ("direct", "nbdkit", "qsd")]
            lat = (fmt_ratio(ratio(m["p50_us"], refs["direct"]["p50_us"]))
                   if refs["direct"] and c != "direct" else "-")
            lines.append("%-18s %-7s %9.0f %8.1f %8.1f %8.1f %8.2f %8.2f %7s %7s %7s %7s %6.1f"
                         % (job[4], c, m["iops"], m["mbps"], m["p50_us"], m["p99_us"],
                            m["be_us_per_io"], m["fio_us_per_io"], rs[0], rs[1], rs[2], lat,
                            m["disk_aqu"]))
    loads = [m["others_load"] for m in med.values()]
    if loads:
        lines.append("other processes on the machine meanwhile: median %.2f CPUs, worst job %.2f "
                     "(of %d)" % (statistics.median(loads), max(loads), NCPU))
    return lines


def targets(pass_, med):
    """The issue's targets for this pass: list of dicts, and the lines that say them."""
    out = []

    def get(job, c, k):
        m = med.get((job, c))
        return m[k] if m else None

    def check(name, val, want, higher):
        if val is None or val != val:
            out.append({"target": name, "value": None, "want": want, "met": None})
            return
        met = val >= want if higher else val <= want
        out.append({"target": name, "value": round(val, 3), "want": want, "met": met})

    s = lambda job, k: get(job, "sluice", k)  # noqa: E731
    for peer, want in (("direct", 0.8), ("nbdkit", 3.0), ("qsd", 3.0)):
        a, b = s("rr4k-qd32", "iops"), get("rr4k-qd32", peer, "iops")
        check("4k randread QD32 IOPS vs %s >= %.1fx" % (peer, want),
              ratio(a, b) if a and b else None, want, True)
    a, b = s("rr4k-qd1", "p50_us"), get("rr4k-qd1", "direct", "p50_us")
    check("4k randread QD1 p50 latency vs direct <= 1.5x", ratio(a, b) if a and b else None,
          1.5, False)
    for job, label in (("sr128k-qd8", "read"), ("sw128k-qd8", "write")):
        a, b = s(job, "mbps"), get(job, "direct", "mbps")
        check("128k sequential %s MB/s vs direct >= 0.9x" % label,
              ratio(a, b) if a and b else None, 0.9, True)
    lines = ["targets, %s pass:" % pass_]
    for t in out:
        if t["met"] is None:
            lines.append("  %-48s not measured (contender or job not in this run)" % t["target"])
        elif t["met"]:
            lines.append("  %-48s %.2fx  met" % (t["target"], t["value"]))
        else:
            short = (t["want"] - t["value"]) / t["want"] if t["want"] > t["value"] else \
                (t["value"] - t["want"]) / t["want"]
            lines.append("  %-48s %.2fx  MISSED by %.0f%%" % (t["target"], t["value"],
                                                            short * 100))
    return out, lines


def shown(path):
    """@path relative to the repo when it is inside it."""
    rel = os.path.relpath(path, TOP)
    return path if rel.startswith("..") else rel


def engine_has_feature_options():
    with open(ENGINE, "rb") as f:
        blob = f.read()
    return all(o.encode() + b"\0" in blob
               for o in ("ring_order", "persistent", "indirect_segs", "queues"))


def feature_table(rig, records):
    rows, lines = [], []
    hdr = ("%-28s %-18s %9s %9s %6s %8s %8s %8s %8s"
           % ("feature off -> on", "job", "IOPS off", "IOPS on", "gain", "p50 off", "p50 on",
              "srv off", "srv on"))
    lines += ["feature gains, sluice only, %s pass (median of %d run(s); srv = blkbackd+hvsimd "
              "CPU us per I/O; the rest at engine defaults %s)" % (rig.pass_, REPS,
                                                                 SLUICE_DEFAULT),
              hdr, "-" * len(hdr)]
    for feat, jobname, off, on in FEATURE_ROWS:
        if feat.startswith("queues") and NCPU < 2:
            continue
        job = JOB_BY_NAME[jobname]
        recs = {"off": [], "on": []}
        for rep in range(REPS):
            order = ["off", "on"] if rep % 2 == 0 else ["on", "off"]
            for which in order:
                r = measure(rig, job, "sluice", off if which == "off" else on)
                r.update({"feature": feat, "setting": which, "rep": rep})
                records.append(r)
                recs[which].append(r)
        mo, mn = median_of(recs["off"]), median_of(recs["on"])
        rows.append({"feature": feat, "job": jobname, "off": off, "on": on,
                     "median_off": mo, "median_on": mn, "gain": ratio(mn["iops"], mo["iops"])})
        lines.append("%-28s %-18s %9.0f %9.0f %6s %8.1f %8.1f %8.2f %8.2f"
                     % (feat, job[4], mo["iops"], mn["iops"],
                        fmt_ratio(ratio(mn["iops"], mo["iops"])), mo["p50_us"], mn["p50_us"],
                        mo["be_us_per_io"], mn["be_us_per_io"]))
        log(lines[-1])
    return rows, lines


def perf_profile(rig, stamp):
    """perf record -g on blkbackd through one 4k randread QD32 sluice run; the flat profile."""
    if shutil.which("perf") is None:
        return None, ["perf: not installed (make deps installs linux-perf); no profile"]
    os.makedirs(OUT, exist_ok=True)
    data = os.path.join(rig.tmp, "perf-%s.data" % rig.pass_)
    rec = measure(rig, JOB_BY_NAME["rr4k-qd32"], "sluice", perf_out=data)
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none",
                          "--sort", "dso,symbol", "--percent-limit", "0.5"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    path = os.path.join(OUT, "perf-%s-%s.txt" % (stamp, rig.pass_))
    with open(path, "w") as f:
        f.write(rep.stdout)
    top, by_dso = [], {}
    for ln in rep.stdout.splitlines():
        m = re.match(r"\s+(\d+\.\d+)%\s+(\S+)\s+\[(.)\]\s+(\S+)", ln)
        if m:
            top.append("%6s%%  %-20s %s" % (m.group(1), m.group(2), m.group(4)))
    dso = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none",
                          "--sort", "dso"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    for ln in dso.stdout.splitlines():
        m = re.match(r"\s+(\d+\.\d+)%\s+(\S+)", ln)
        if m:
            by_dso[m.group(2)] = float(m.group(1))
    graph = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                            "-g", "graph,2,caller", "--percent-limit", "2"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    with open(path, "a") as f:
        f.write("\n# by dso\n" + dso.stdout + "\n# call graphs (-g)\n" + graph.stdout)
    lines = ["perf record -g on blkbackd, 4k randread QD32, %s pass (%.0f IOPS while profiled); "
             "full report: %s" % (rig.pass_, rec["iops"], shown(path)),
             "  self time by dso: " + ", ".join("%s %.1f%%" % kv for kv in by_dso.items()),
             "  top symbols (self):"]
    lines += ["  " + t for t in top[:20]]
    return {"report": path, "iops": rec["iops"], "top": top[:40], "by_dso": by_dso}, lines


# ---- machine and main ------------------------------------------------------------------------

def sh(argv):
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        return r.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine(path):
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for ln in f:
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = f.readline().split()[1]
    src, fstype, opts = (sh(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", path]).split()
                         + ["", "", ""])[:3]
    dev = {}
    base = os.path.basename(src)
    sysq = "/sys/class/block/%s" % base
    if os.path.isdir(sysq):
        parent = os.path.basename(os.path.dirname(os.path.realpath(sysq)))
        disk = base if os.path.isdir("/sys/block/" + base) else parent
        for k in ("rotational", "scheduler", "nr_requests"):
            try:
                with open("/sys/block/%s/queue/%s" % (disk, k)) as f:
                    dev[k] = f.read().strip()
            except OSError:
                pass
        try:
            with open("/sys/block/%s/device/vendor" % disk) as f:
                dev["vendor"] = f.read().strip()
        except OSError:
            pass
        dev["disk"] = disk
        if os.path.exists("/sys/block/%s/device/driver" % disk):
            dev["driver"] = os.path.basename(os.path.realpath("/sys/block/%s/device/driver"
                                                              % disk))
    return {
        "nproc": NCPU, "cpu": cpu, "kernel": os.uname().release, "mem_kib": int(mem),
        "fs": {"source": src, "type": fstype, "options": opts}, "device": dev,
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "fio": sh(["fio", "--version"]), "nbdkit": sh(["nbdkit", "--version"]),
        "qemu-storage-daemon": sh(["qemu-storage-daemon", "--version"]).splitlines()[0]
        if shutil.which("qemu-storage-daemon") else "",
        "git": sh(["git", "-C", TOP, "describe", "--always", "--dirty"]),
    }


def preflight():
    need = [os.path.join(BIN, b) for b in ("hvsimd", "hvctl", "blkbackd", "blkctl")] + [ENGINE]
    missing = [p for p in need if not os.path.exists(p)]
    if missing:
        raise BenchError("not built: %s (run make)" % ", ".join(missing))
    tools = {"direct": "fio", "sluice": "fio", "nbdkit": "nbdkit", "qsd": "qemu-storage-daemon"}
    for c in CONTENDERS:
        if c not in tools:
            raise BenchError("unknown contender %s (direct, sluice, nbdkit, qsd)" % c)
        if shutil.which(tools[c]) is None:
            raise BenchError("contender %s needs %s (make deps installs it)" % (c, tools[c]))
    for p in PASSES:
        if p not in ("cached", "direct"):
            raise BenchError("unknown pass %s (cached, direct)" % p)


def run_pass(rig, pass_, stamp, records, report, text):
    log("\n== %s pass: starting blkbackd%s, nbdkit, qemu-storage-daemon"
        % (pass_, " --no-direct" if pass_ == "cached" else ""))
    if pass_ == "cached":
        warm(rig.img)
    else:
        fsync_and_maybe_evict(rig.img, True)
    frac0 = cached_fraction(rig.img)
    rig.start_pass(pass_)
    runs = {}
    for ji, job in enumerate(JOBS):
        for rep in range(REPS):
            k = (ji + rep) % len(CONTENDERS)
            for pos, c in enumerate(CONTENDERS[k:] + CONTENDERS[:k]):
                r = measure(rig, job, c)
                r.update({"rep": rep, "position": pos})
                records.append(r)
                runs.setdefault((job[0], c), []).append(r)
                log("  %-18s %-7s rep %d: %9.0f IOPS %8.1f MB/s  p50 %7.1f us  p99 %8.1f us  "
                    "srv %6.2f us/IO" % (job[4], c, rep + 1, r["iops"], r["mbps"], r["p50_us"],
                                         r["p99_us"], r["be_us_per_io"]))
    frac1 = cached_fraction(rig.img)
    med = {k: median_of(v) for k, v in runs.items()}
    p = {"pass": pass_, "page_cache_fraction_before": frac0,
         "page_cache_fraction_after": frac1,
         "medians": [dict(job=k[0], contender=k[1], **v) for k, v in med.items()]}
    lines = main_table(pass_, med)
    lines.append("page cache holding the file: %.0f%% before the pass, %.0f%% after"
                 % (frac0 * 100, frac1 * 100))
    tg, tl = targets(pass_, med)
    p["targets"] = tg
    lines += tl
    log("")
    for ln in lines:
        log(ln)
    text += [""] + lines
    if FEATURES and pass_ == FEATURE_PASS and "sluice" in CONTENDERS:
        log("")
        if engine_has_feature_options():
            rows, fl = feature_table(rig, records)
            p["features"] = rows
            text += [""] + fl
        else:
            msg = ("feature table skipped: %s lacks the ring_order/persistent/indirect_segs/"
                   "queues options" % os.path.relpath(ENGINE, TOP))
            log(msg)
            text += ["", msg]
    missed = any(t["met"] is False for t in tg)
    if "sluice" in CONTENDERS and (PERF == "1" or (PERF == "auto" and missed)):
        log("\nprofiling blkbackd (perf record -g) during a 4k randread QD32 sluice run")
        prof, pl = perf_profile(rig, stamp)
        p["perf"] = prof
        for ln in pl:
            log(ln)
        text += [""] + pl
    report["passes"].append(p)
    rig.end_pass()


def main():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rig = None
    tmp = None
    rc = 0
    keep = False  # a failed run keeps its work dir (logs) for a look; an interrupted one not
    t_start = time.monotonic()
    try:
        preflight()
        parent = os.environ.get("BENCH_DIR") or "/var/tmp"
        tmp = tempfile.mkdtemp(prefix="sluice-bench.", dir=parent)
        rig = Rig(tmp)
        report = {"stamp": stamp, "command": " ".join(sys.argv),
                  "config": {"quick": QUICK, "runtime_s": RUNTIME, "ramp_s": RAMP, "reps": REPS,
                             "size": SIZE, "passes": PASSES, "contenders": CONTENDERS,
                             "jobs": [j[0] for j in JOBS], "sluice_defaults": SLUICE_DEFAULT,
                             "blkbackd_args": BLKBACKD_ARGS,
                             "env": {k: v for k, v in os.environ.items()
                                     if k.startswith("BENCH_")}},
                  "passes": [], "runs": []}
        log("bench: %d contender(s) x %d job(s) x %d pass(es) x %d rep(s), %d s each; "
            "work dir %s" % (len(CONTENDERS), len(JOBS), len(PASSES), REPS, RUNTIME, tmp))
        rig.start_hv()
        os.makedirs(rig.pool, exist_ok=True)
        rig.blkctl("create", "bench", "--size", SIZE)
        if not os.path.isfile(rig.img):
            raise BenchError("blkctl create made no %s" % rig.img)
        log("backing file %s (%s), filling it" % (rig.img, SIZE))
        fill(rig.img)
        report["machine"] = machine(rig.img)
        rig.disk = report["machine"]["device"].get("disk")
        mc = report["machine"]
        log("machine: %d CPU(s) %s, kernel %s; backing file on %s %s; load %s"
            % (mc["nproc"], mc["cpu"], mc["kernel"], mc["fs"]["source"], mc["fs"]["type"],
               " ".join(mc["loadavg_start"])))
        if float(mc["loadavg_start"][0]) > 0.5:
            log("bench: warning: load average %s before starting: other work is running and "
                "will disturb the numbers" % mc["loadavg_start"][0])
        text = ["sluice bench %s (%s)" % (stamp, mc["git"]),
                "machine: %d CPU(s) %s, kernel %s, %d MiB RAM; backing file %s on %s (%s)"
                % (mc["nproc"], mc["cpu"], mc["kernel"], mc["mem_kib"] // 1024, SIZE,
                   mc["fs"]["source"], mc["fs"]["type"])]
        for pass_ in PASSES:
            run_pass(rig, pass_, stamp, report["runs"], report, text)
        report["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        report["elapsed_s"] = round(time.monotonic() - t_start, 1)
        os.makedirs(OUT, exist_ok=True)
        jpath = os.path.join(OUT, "bench-%s.json" % stamp)
        with open(jpath, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
        tpath = os.path.join(OUT, "bench-%s.txt" % stamp)
        with open(tpath, "w") as f:
            f.write("\n".join(text) + "\n")
        log("\nbench: done in %.0f s; %s and %s" % (report["elapsed_s"],
                                                   shown(jpath), shown(tpath)))
    except BenchError as e:
        print("bench: FAILED: %s" % e, file=sys.stderr)
        if tmp:
            print("bench: logs kept in %s" % tmp, file=sys.stderr)
        rc = 1
        keep = True
    except (KeyboardInterrupt, SystemExit) as e:
        print("bench: interrupted", file=sys.stderr)
        rc = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 130
    finally:
        if rig is not None and rig.blkbackd is not None and rig.blkbackd.poll() is None:
            try:
                rig.blkctl("detach", rig.domain, "xvda")
            except BenchError:
                pass
        stop_all()
        if tmp and not keep and os.environ.get("BENCH_KEEP", "") in ("", "0"):
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


def markdown(path):
    """`bench.py --markdown RESULT.json`: a saved run's tables in Markdown (for docs/perf.md)."""
    with open(path) as f:
        r = json.load(f)
    label = {j[0]: j[4] for j in ALL_JOBS + EXTRA_JOBS}
    order = [j[0] for j in ALL_JOBS]
    who = ["direct", "sluice", "nbdkit", "qsd"]
    out = []
    for p in r["passes"]:
        med = {(m["job"], m["contender"]): m for m in p["medians"]}
        out += ["", "#### %s pass" % p["pass"], "",
                "| job | contender | IOPS | MB/s | p50 µs | p99 µs | backend CPU µs/IO | "
                "fio CPU µs/IO | × direct | × nbdkit | × qsd | p50 × direct | disk QD |",
                "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for job in order:
            for c in who:
                m = med.get((job, c))
                if m is None:
                    continue
                rs = []
                for ref in ("direct", "nbdkit", "qsd"):
                    b = med.get((job, ref))
                    rs.append(fmt_ratio(ratio(m["iops"], b["iops"])) if b and ref != c else "")
                d = med.get((job, "direct"))
                lat = fmt_ratio(ratio(m["p50_us"], d["p50_us"])) if d and c != "direct" else ""
                name = "**sluice**" if c == "sluice" else c
                out.append("| %s | %s | %.0f | %.1f | %.1f | %.1f | %.2f | %.2f | %s | %s | %s "
                           "| %s | %s |" % (label[job], name, m["iops"], m["mbps"], m["p50_us"],
                                       m["p99_us"], m["be_us_per_io"], m["fio_us_per_io"],
                                       rs[0], rs[1], rs[2], lat,
                                       "%.1f" % m["disk_aqu"] if "disk_aqu" in m else ""))
        out += ["", "Targets (%s pass):" % p["pass"], ""]
        for t in p["targets"]:
            if t["met"] is None:
                out.append("- %s: not measured" % t["target"])
            elif t["met"]:
                out.append("- %s: **%.2fx, met**" % (t["target"], t["value"]))
            else:
                gap = abs(t["want"] - t["value"]) / t["want"] * 100
                out.append("- %s: **%.2fx, missed by %.0f%%**" % (t["target"], t["value"], gap))
        if p.get("features"):
            out += ["", "Feature gains (sluice only, %s pass):" % p["pass"], "",
                    "| feature off → on | job | IOPS off | IOPS on | gain | p50 µs off "
                    "| p50 µs on | blkbackd CPU µs/IO off | on |",
                    "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
            for f in p["features"]:
                mo, mn = f["median_off"], f["median_on"]
                out.append("| %s | %s | %.0f | %.0f | %sx | %.1f | %.1f | %.2f | %.2f |"
                           % (f["feature"], label[f["job"]], mo["iops"], mn["iops"],
                              fmt_ratio(f["gain"]), mo["p50_us"], mn["p50_us"],
                              mo["be_us_per_io"], mn["be_us_per_io"]))
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--markdown":
        print(markdown(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
