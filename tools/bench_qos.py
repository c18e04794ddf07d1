#!/usr/bin/env python3
"""bench_qos.py - `make bench-qos`: issue 5's proof for the credit-weighted scheduler, one run.

Guests are hvsimd domains running fio through build/lib/fio-blkfront.so (4 KiB random reads,
one fio process per guest), served by blkbackd. Every scenario but the last runs on the
simulated device (`blkbackd --sim-device IOPS:LAT_US --no-direct`, the volumes warm in the page
cache), so the device, not the CPU, is the bottleneck; the bench checks that it is.

  path         the same three saturating guests without the simulated device and without QoS:
               what fio + blkbackd can do on this machine (must be well above the device)
  weights      weights 1:2:4, all saturating: each share within +-5% of its weight share,
               weighted Jain index >= 0.99, aggregate >= 95% of the same guests with --no-qos
  cap          a capped guest beside an uncapped one, both saturating: long-run rate within
               +-5% of the cap, no gap between its completions longer than one period
  reservation  a weight-1 guest reserving IOPS beside two weight-1000 guests: it gets them
  noisy        a QD1 guest beside a QD64 guest of equal weight: its p99 <= 2x its p99 alone
               (and the same pair with --no-qos, for comparison)
  reaction     three equal guests, then one set to 4x the weight (blkctl set) mid-run: its
               share shows the change within 3 periods; the plot of this run is the PNG
  overhead     the real disk (a pool under BENCH_DIR, O_DIRECT): one guest 4 KiB randread
               QD32 with QoS on and unreachable caps vs --no-qos, alternating; >= 97%
  overhead-cached  the same through the page cache (--no-direct, the file warm): CPU-bound,
               so what the scheduler costs in CPU shows (not an issue target)

Rates and shares come from blkbackd's own counters, sampled every BENCH_QOS_SAMPLE_MS over one
persistent control-socket connection ({"cmd":"qos"} and {"cmd":"stats"}), over a window that
starts a second after the last guest's first I/O and ends before the first guest stops. Latency
percentiles are fio's own (clat, --output-format=json). The cap's longest stall is the longest
gap between consecutive completions in fio's per-I/O completion-latency log (1 ms resolution).

Usage: bench_qos.py [--quick] | bench_qos.py --markdown RESULT.json

Environment (all optional):
  BENCH_QUICK=1           same as --quick: 3 s scenarios, one overhead pair; the PNG goes to
                          results/ only
  BENCH_RUNTIME=S         seconds per scenario run (default 8; quick 3)
  BENCH_REPS=N            overhead: QoS on/off pairs of min(BENCH_RUNTIME, 4) s (default 5;
                          quick 1); overhead-cached: 2 pairs fewer
  BENCH_QOS_SIM=IOPS:LAT  the simulated device (default 20000:100)
  BENCH_QOS_NOISY_ROUNDS=N  noisy neighbour: rounds of (alone, beside QD64) (default 3; quick 1)
  BENCH_QOS_SCENARIOS=LIST  path,weights,cap,reservation,noisy,reaction,overhead,
                          overhead-cached (default all)
  BENCH_QOS_SAMPLE_MS=MS  counter sampling interval (default 10)
  BENCH_QOS_PLOT=FILE     where the PNG goes (default docs/qos-weight-change.png; quick:
                          results/qos-weight-change-STAMP.png)
  BENCH_SIZE=SIZE         overhead scenario's volume on the real disk (default 1G; quick 256M)
  BENCH_DIR=DIR           where the work dir goes (default /var/tmp: the overhead scenario needs
                          a real disk, and /tmp may be tmpfs)
  BENCH_OUT=DIR           JSON and text report (default results/ in the repo)
  BENCH_KEEP=1            keep the work dir afterwards
  BUILD=DIR               build directory (default build)
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (process handling and machine description of make bench)
from bench import BenchError, log, run, spawn, stop, stop_all, wait_for, tail  # noqa: E402

TOP = bench.TOP
QUICK = "--quick" in sys.argv[1:] or bench.QUICK
RUNTIME = bench.env_int("BENCH_RUNTIME", 3 if QUICK else 8)
REPS = bench.env_int("BENCH_REPS", 1 if QUICK else 5)
DISK_RUNTIME = min(RUNTIME, 4)
NOISY_ROUNDS = bench.env_int("BENCH_QOS_NOISY_ROUNDS", 1 if QUICK else 3)
SIM = os.environ.get("BENCH_QOS_SIM") or "20000:100"
ALL_SCENARIOS = ["path", "weights", "cap", "reservation", "noisy", "reaction", "overhead",
                 "overhead-cached"]
SCENARIOS = bench.env_list("BENCH_QOS_SCENARIOS", ALL_SCENARIOS)
SAMPLE_S = bench.env_int("BENCH_QOS_SAMPLE_MS", 10) / 1000.0
DISK_SIZE = os.environ.get("BENCH_SIZE") or ("256M" if QUICK else "1G")
BIN = bench.BIN
ENGINE = bench.ENGINE
OUT = bench.OUT
PLOT_DOC = os.path.join(TOP, "docs", "qos-weight-change.png")

SIM_VOL_SIZE = "64M"  # per guest on the simulated device; warm in the page cache
WARMUP_S = 1.0        # of each window: the scheduler settles, fio ramps
CAP_IOPS = 5000
RESERVE_IOPS = 5000
NGUESTS = 3
ENGINE_OPTS = ["--ring_order=4", "--persistent=1", "--indirect_segs=256", "--queues=1"]


def sim_iops():
    return int(SIM.split(":")[0])


# ---- the daemons and their control socket ----------------------------------------------------

class Ctl:
    """One persistent connection to blkbackd's control socket: JSON lines (blkback/ctl.h)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10.0)
        self.sock.connect(path)
        self.rf = self.sock.makefile("rb")

    def call(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")
        line = self.rf.readline()
        if not line:
            raise BenchError("blkbackd closed its control socket (answering %s)" % obj["cmd"])
        return json.loads(line)

    def close(self):
        try:
            self.rf.close()
            self.sock.close()
        except OSError:
            pass


class Daemon:
    """One blkbackd on one pool, with the guests' volumes created in it."""

    def __init__(self, rig, name, pool, args):
        self.rig = rig
        self.name = name
        self.pool = pool
        self.args = args
        self.proc = None
        self.logpath = os.path.join(rig.tmp, "blkbackd-%s.log" % name)
        self.attached = []

    def start(self):
        os.makedirs(self.pool, exist_ok=True)
        argv = [os.path.join(BIN, "blkbackd"), "--hv-dir", self.rig.hv, "--pool",
                self.pool] + self.args
        log("  blkbackd %s" % " ".join(self.args))
        self.proc = spawn("blkbackd", argv, self.logpath)
        sock = os.path.join(self.pool, "blkbackd.sock")
        wait_for(lambda: os.path.exists(sock) and self._listening(sock),
                 "blkbackd's control socket", self.proc, self.logpath)

    def _listening(self, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def alive(self):
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError("blkbackd (%s) is not running (status %s)\n%s"
                             % (self.name, self.proc.returncode if self.proc else None,
                                tail(self.logpath)))

    def blkctl(self, *args):
        try:
            return run([os.path.join(BIN, "blkctl"), "--pool", self.pool] + list(args),
                       "blkctl " + args[0])
        except OSError as e:  # e.g. a concurrent build relinking it
            raise BenchError("cannot run blkctl %s: %s" % (args[0], e))

    def create(self, vol, size):
        if not os.path.exists(os.path.join(self.pool, "vols", vol + ".img")):
            self.blkctl("create", vol, "--size", size)

    def attach(self, vol, domain, vdev, opts=()):
        self.blkctl("attach", vol, domain, vdev, *opts)
        self.attached.append((domain, vdev))

    def detach_all(self):
        while self.attached:
            domain, vdev = self.attached.pop()
            if self.proc is not None and self.proc.poll() is None:
                self.blkctl("detach", domain, vdev)

    def stop(self):
        if self.proc is None:
            return
        try:
            self.detach_all()
        finally:
            rc = self.proc.poll()
            stop(self.proc)
            self.proc = None
        if rc is not None:
            raise BenchError("blkbackd (%s) had died (status %s)\n%s"
                             % (self.name, rc, tail(self.logpath)))


class Sampler(threading.Thread):
    """Every SAMPLE_S: blkbackd's per-vbd counters, timestamped (time.monotonic()). Keeps its
    own connection, so blkctl commands meanwhile go through other ones."""

    def __init__(self, daemon):
        super().__init__(daemon=True)
        self.ctl = Ctl(os.path.join(daemon.pool, "blkbackd.sock"))
        self.halt = threading.Event()
        self.samples = []  # {"t", "dev", "vbds": {key: {...}}}
        self.error = None

    def run(self):
        try:
            nxt = time.monotonic()
            while not self.halt.is_set():
                self.samples.append(self.sample())
                nxt += SAMPLE_S
                d = nxt - time.monotonic()
                if d > 0:
                    self.halt.wait(d)
                else:
                    nxt = time.monotonic()
        except Exception as e:  # the main thread reports it
            self.error = e
        finally:
            self.ctl.close()

    def sample(self):
        q = self.ctl.call({"cmd": "qos"})
        t1 = time.monotonic()
        s = self.ctl.call({"cmd": "stats"})
        t2 = time.monotonic()
        # The daemon's own CLOCK_MONOTONIC at its snapshot when it says (time.monotonic() is
        # the same clock), else when the answer came: the snapshot is taken just before the
        # answer, but may start late (the control thread also persists settings).
        tq = q["time_ns"] / 1e9 if q.get("ok") and q.get("time_ns") else t1
        out = {"t": tq, "ts": t2, "vbds": {},
               "dev": q.get("device") if q.get("ok") else None,
               "enabled": q.get("enabled") if q.get("ok") else None}
        for v in s.get("vbds", []):
            out["vbds"][vkey(v)] = {"req": v["rd_req"] + v["wr_req"], "state": v["state"],
                                    "be_p50_us": v.get("rd_lat_p50_us"),
                                    "be_p99_us": v.get("rd_lat_p99_us")}
        for v in q.get("vbds", []) if q.get("ok") else []:
            d = out["vbds"].setdefault(vkey(v), {})
            for k in ("ops", "bytes", "weight", "share_pct", "credit_ns", "state",
                      "throttled_ns", "parked_ns", "inflight", "boosts"):
                if k in v:
                    d["q_" + k] = v[k]
        return out

    def finish(self):
        self.halt.set()
        self.join(10)
        if self.error is not None:
            raise BenchError("sampling blkbackd's counters: %s" % self.error)


def vkey(v):
    return "%s/%s" % (v.get("domain") or v.get("domid"), v.get("vdev"))


# ---- the rig: hvsimd, domains, guests --------------------------------------------------------

class Rig:
    def __init__(self, tmp):
        self.tmp = tmp
        self.hv = os.path.join(tmp, "hv")
        self.hvsimd = None
        self.daemon = None
        self.seq = 0

    def start_hv(self, ndomains):
        lp = os.path.join(self.tmp, "hvsimd.log")
        self.hvsimd = spawn("hvsimd", [os.path.join(BIN, "hvsimd"), "--dir", self.hv], lp)
        for s in ("xenstore.sock", "hv.sock"):
            path = os.path.join(self.hv, s)
            wait_for(lambda: os.path.exists(path), "hvsimd's " + s, self.hvsimd, lp)
        for i in range(1, ndomains + 1):
            run([os.path.join(BIN, "hvctl"), "--dir", self.hv, "domain", "create", "g%d" % i,
                 "--mem", "256M"], "hvctl domain create")

    def use(self, daemon):
        """Stop the current blkbackd (detaching its vbds) and start @daemon."""
        if self.daemon is not None:
            d, self.daemon = self.daemon, None
            d.stop()
        daemon.start()
        self.daemon = daemon
        return daemon


class Guest:
    """One fio process in domain @domain on its vbd @vdev."""

    def __init__(self, domain, vdev, qd, runtime, ramp=WARMUP_S, lat_log=False, delay=0.0):
        self.domain = domain
        self.vdev = vdev
        self.qd = qd
        self.runtime = runtime
        self.ramp = ramp
        self.lat_log = lat_log
        self.delay = delay
        self.proc = None
        self.out = self.err = self.log_prefix = None
        self.result = None
        self.cpu_s = 0.0

    @property
    def key(self):
        return "%s/%s" % (self.domain, self.vdev)

    def start(self, rig, tag):
        rig.seq += 1
        base = os.path.join(rig.tmp, "fio%03d-%s-%s" % (rig.seq, tag, self.domain))
        self.out, self.err = base + ".json", base + ".err"
        argv = ["fio", "--name=" + self.domain, "--ioengine=external:" + ENGINE,
                "--hv_dir=" + rig.hv, "--domain=" + self.domain, "--filename=" + self.vdev,
                "--rw=randread", "--bs=4k", "--iodepth=%d" % self.qd,
                "--runtime=%g" % self.runtime, "--time_based", "--norandommap",
                "--randrepeat=0", "--iomem_align=4096", "--clat_percentiles=1",
                "--percentile_list=50:90:99:99.9", "--output-format=json",
                "--output=" + self.out] + ENGINE_OPTS
        if self.ramp:
            argv.append("--ramp_time=%g" % self.ramp)
        if self.lat_log:
            self.log_prefix = base
            argv += ["--write_lat_log=" + base, "--log_avg_msec=0"]
        self.proc = spawn("fio", argv, self.err)

    def wait(self, timeout):
        ru = bench.reap(self.proc, timeout, "fio in " + self.domain)
        self.cpu_s = ru.ru_utime + ru.ru_stime
        if self.proc.returncode != 0:
            raise BenchError("fio in %s exited %d\n%s" % (self.domain, self.proc.returncode,
                                                          tail(self.err)))
        try:
            with open(self.out) as f:
                text = f.read()
            start = text.find("\n{") + 1 if not text.startswith("{") else 0
            j = json.loads(text[start:])["jobs"][0]
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise BenchError("no fio JSON in %s (%s)\n%s" % (self.out, e, tail(self.err)))
        if j.get("error"):
            raise BenchError("fio job error %d in %s\n%s" % (j["error"], self.domain,
                                                            tail(self.err)))
        r = j["read"]
        pct = r["clat_ns"].get("percentile", {})
        self.result = {"iops": r["iops"], "ios": r["total_ios"],
                       "runtime_ms": j["job_runtime"],
                       "clat_mean_us": r["clat_ns"]["mean"] / 1000.0,
                       "clat_p50_us": pct.get("50.000000", 0) / 1000.0,
                       "clat_p90_us": pct.get("90.000000", 0) / 1000.0,
                       "clat_p99_us": pct.get("99.000000", 0) / 1000.0,
                       "clat_p999_us": pct.get("99.900000", 0) / 1000.0,
                       "clat_max_us": r["clat_ns"]["max"] / 1000.0}
        return self.result

    def completion_times_ms(self):
        """Completion times (ms since the job started) from fio's per-I/O clat log."""
        path = self.log_prefix + "_clat.1.log"
        ts = []
        try:
            with open(path) as f:
                for ln in f:
                    p = ln.split(",", 1)
                    if p[0].strip().isdigit():
                        ts.append(int(p[0]))
        except OSError as e:
            raise BenchError("no fio completion log %s: %s" % (path, e))
        ts.sort()
        return ts


def run_guests(rig, tag, guests, events=()):
    """Start @guests (each after its delay), sample the daemon's counters throughout, run each
    of @events (at, argv) @at seconds after every guest has completed I/O, and wait for all.
    Returns the samples and the events with their times."""
    d = rig.daemon
    d.alive()
    smp = Sampler(d)
    ours = [d.proc.pid, rig.hvsimd.pid]
    c0 = sum(bench.cpu_ticks(p) for p in ours) / bench.HZ
    b0 = bench.cpu_ticks(d.proc.pid) / bench.HZ
    me0 = os.times()
    h0 = bench.host_busy_ticks()
    smp.start()
    done_events = []
    try:
        t0 = time.monotonic()
        pending = sorted(guests, key=lambda g: g.delay)
        started = []
        while pending:
            g = pending[0]
            wait = t0 + g.delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            g.start(rig, tag)
            started.append(pending.pop(0))
        if events:
            keys = [g.key for g in guests]
            t_all = wait_active(smp, keys, d, t0 + max(g.delay for g in guests) + 20)
            for at, argv in sorted(events):
                wait = t_all + at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                ts = time.monotonic()
                d.blkctl(*argv)
                done_events.append({"argv": argv, "t_start": ts, "t_done": time.monotonic()})
        for g in started:
            g.wait(g.delay + g.runtime + g.ramp + 60)
    finally:
        smp.finish()
    d.alive()
    if not smp.samples:
        raise BenchError("no counter samples from blkbackd")
    # What the rest of the machine took meanwhile (other people's builds on a shared box):
    # the host's busy time less ours (blkbackd, hvsimd, the fio processes, this script).
    wall = time.monotonic() - t0
    h1 = bench.host_busy_ticks()
    me1 = os.times()
    c1 = sum(bench.cpu_ticks(p) for p in ours) / bench.HZ
    b1 = bench.cpu_ticks(d.proc.pid) / bench.HZ
    ios = sum(v.get("req", 0) - smp.samples[0]["vbds"].get(k, {}).get("req", 0)
              for k, v in smp.samples[-1]["vbds"].items())
    mine = (c1 - c0) + sum(g.cpu_s for g in guests) + \
        (me1.user + me1.system - me0.user - me0.system)
    busy = (h1[0] - h0[0]) / bench.HZ
    smp.load = {"wall_s": wall, "host_busy_cpus": busy / wall, "ours_cpus": mine / wall,
                "others_cpus": max(0.0, busy - mine) / wall,
                "steal_cpus": (h1[1] - h0[1]) / bench.HZ / wall,
                "blkbackd_us_per_io": (b1 - b0) * 1e6 / ios if ios > 0 else None}
    LOADS.append((tag, smp.load["others_cpus"]))
    if smp.load["others_cpus"] > 0.25:
        log("  (meanwhile other processes on this machine used %.2f of its %d CPUs)"
            % (smp.load["others_cpus"], bench.NCPU))
    return smp, done_events


LOADS = []  # (run tag, CPUs other processes used meanwhile)


def backend_lat(smp, key):
    """blkbackd's own latency percentiles for @key's reads (since the vbd was attached)."""
    for x in reversed(smp.samples):
        v = x["vbds"].get(key)
        if v and v.get("be_p99_us"):
            return {"be_p50_us": v["be_p50_us"], "be_p99_us": v["be_p99_us"]}
    return {}


def trace(smp, keys, field, step=0.030):
    """What a scenario keeps of its samples for the JSON: the load, per-vbd I/Os per period
    (from the first sample) and the device's state every 100 ms."""
    ss = smp.samples
    t0 = ss[0]["t"]
    bins = series(ss, keys, field, t0, ss[-1]["t"], step)
    dev = []
    nxt = t0
    for x in ss:
        if x.get("dev") and x["t"] >= nxt:
            d = x["dev"]
            dev.append([round(x["t"] - t0, 3)] + [d.get(k) for k in DEV_TRACE])
            nxt = x["t"] + 0.1
    return {"load": smp.load, "counter": field, "bin_s": step, "keys": keys,
            "ios_per_bin": [[round(c[k]) for k in keys] for _, c in bins],
            "device_fields": ["t_s"] + DEV_TRACE, "device": dev}


DEV_TRACE = ["vrate_ppm", "window_ns", "inflight_ns", "lat_base_ns", "lat_target_ns",
             "lat_mean_ns", "nactive", "nwaiting"]


def wait_active(smp, keys, d, deadline):
    """The first sample time at which every vbd in @keys has completed I/O."""
    while True:
        s = smp.samples
        if s:
            first = s[0]["vbds"]
            last = s[-1]["vbds"]
            if all(k in last and last[k].get("req", 0) > first.get(k, {}).get("req", 0)
                   for k in keys):
                return s[-1]["t"]
        if smp.error is not None:
            raise BenchError("sampling blkbackd's counters: %s" % smp.error)
        d.alive()
        if time.monotonic() > deadline:
            raise BenchError("guests %s did no I/O" % ", ".join(keys))
        time.sleep(0.01)


# ---- analysis of the counter samples ---------------------------------------------------------

def counter(s, key, field):
    v = s["vbds"].get(key)
    return v.get(field) if v else None


def count_source(samples, keys):
    """The scheduler's own "ops" when every sample has them for every vbd, else the ring's
    request counters (rd_req + wr_req, also there with --no-qos)."""
    if all(s["enabled"] and counter(s, k, "q_ops") is not None for s in samples for k in keys):
        return "q_ops"
    return "req"


def window(samples, keys, field, end_margin=0.5):
    """[a, b]: from WARMUP_S after the last vbd's first I/O to @end_margin before the first vbd
    stopped (its counter's last change)."""
    first = {}
    last = {}
    c0 = {k: counter(samples[0], k, field) or 0 for k in keys}
    prev = dict(c0)
    for s in samples:
        for k in keys:
            c = counter(s, k, field)
            if c is None:
                continue
            if c > c0[k] and k not in first:
                first[k] = s["t"]
            if c > prev[k]:
                last[k] = s["t"]
            prev[k] = c
    missing = [k for k in keys if k not in first]
    if missing:
        raise BenchError("no I/O counted for %s" % ", ".join(missing))
    a = max(first.values()) + WARMUP_S
    b = min(last.values()) - end_margin
    if b - a < 0.5:
        raise BenchError("the guests ran together for only %.2f s" % (b - a + WARMUP_S))
    return a, b


def value_at(samples, key, field, t):
    """@key's counter at time @t, linear between the samples around it."""
    lo = None
    for s in samples:
        c = counter(s, key, field)
        if c is None:
            continue
        if s["t"] >= t:
            if lo is None or s["t"] == lo[0]:
                return float(c)
            return lo[1] + (c - lo[1]) * (t - lo[0]) / (s["t"] - lo[0])
        lo = (s["t"], c)
    return float(lo[1]) if lo else 0.0


def rates(samples, keys, field, a, b):
    return {k: (value_at(samples, k, field, b) - value_at(samples, k, field, a)) / (b - a)
            for k in keys}


def series(samples, keys, field, t0, t1, step):
    """Per-@step bins from @t0 to @t1: (bin start, {key: ops in the bin})."""
    out = []
    t = t0
    prev = {k: value_at(samples, k, field, t) for k in keys}
    while t + step <= t1 + 1e-9:
        cur = {k: value_at(samples, k, field, t + step) for k in keys}
        out.append((t, {k: cur[k] - prev[k] for k in keys}))
        prev = cur
        t += step
    return out


def jain_weighted(t, w):
    x = [ti / wi for ti, wi in zip(t, w)]
    sq = sum(v * v for v in x)
    return sum(x) ** 2 / (len(x) * sq) if sq else 0.0


def period_s(samples):
    for s in samples:
        if s.get("dev") and s["dev"].get("period_ns"):
            return s["dev"]["period_ns"] / 1e9
    return 0.030


def last_dev(samples):
    for s in reversed(samples):
        if s.get("dev"):
            return s["dev"]
    return None


class Checks:
    """The issue's targets, and the extra checks that a scenario measured what it meant to (the
    device saturated, the neighbour getting the rest): measured value, target, met or missed."""

    def __init__(self):
        self.rows = []

    def add(self, scenario, what, value, fmt, target, met, note="", extra=False):
        self.rows.append({"scenario": scenario, "what": what, "value": value,
                          "shown": fmt % value if value is not None else "-",
                          "target": target, "met": met, "note": note, "extra": extra})
        log("  -> %-46s %12s  target %-16s %s%s"
            % (("*" if extra else "") + what, self.rows[-1]["shown"], target,
               "met" if met else ("MISSED" if met is not None else "not measured"),
               "  (%s)" % note if note else ""))

    def lines(self):
        hdr = "%-12s %-46s %12s  %-16s %s" % ("scenario", "measured", "value", "target",
                                               "result")
        out = [hdr, "-" * len(hdr)]
        for r in self.rows:
            out.append("%-12s %-46s %12s  %-16s %s" % (
                r["scenario"], ("*" if r["extra"] else "") + r["what"], r["shown"], r["target"],
                "met" if r["met"] else ("MISSED" if r["met"] is not None else "-")))
        out.append("* not an issue 5 target: a check that the scenario measured what it meant to")
        return out

    def tally(self):
        out = []
        for extra, name in ((False, "issue 5 targets"), (True, "extra checks")):
            rows = [r for r in self.rows if r["extra"] == extra]
            out.append("%s: %d of %d met" % (name, sum(1 for r in rows if r["met"]), len(rows)))
        return "; ".join(out)


# ---- scenarios on the simulated device -------------------------------------------------------

def vdev_for(n):
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "xvd" + (letters[n] if n < 26 else letters[n // 26 - 1] + letters[n % 26])


class SimPools:
    """The three daemons of the simulated-device scenarios; each scenario gets fresh vdevs, so no
    setting persisted by an earlier one applies."""

    def __init__(self, rig):
        self.rig = rig
        self.next_vdev = {}
        base = os.path.join(rig.tmp, "pools")
        self.path = Daemon(rig, "path", os.path.join(base, "path"),
                           ["--no-direct", "--no-qos"])
        self.noqos = Daemon(rig, "sim-noqos", os.path.join(base, "sim-noqos"),
                            ["--no-direct", "--sim-device", SIM, "--no-qos"])
        self.qos = Daemon(rig, "sim-qos", os.path.join(base, "sim-qos"),
                          ["--no-direct", "--sim-device", SIM])

    def switch(self, daemon):
        if self.rig.daemon is daemon:
            return daemon
        self.rig.use(daemon)
        for i in range(1, NGUESTS + 1):
            daemon.create("v%d" % i, SIM_VOL_SIZE)
            img = os.path.join(daemon.pool, "vols", "v%d.img" % i)
            bench.warm(img)
        return daemon

    def attach(self, daemon, settings):
        """@settings: per guest index (1..3) the blkctl attach options; returns the vdev."""
        n = self.next_vdev.get(daemon.name, 0)
        self.next_vdev[daemon.name] = n + 1
        vdev = vdev_for(n)
        for i, opts in sorted(settings.items()):
            daemon.attach("v%d" % i, "g%d" % i, vdev, opts)
        return vdev


def saturating(vdev, n, runtime):
    return [Guest("g%d" % i, vdev, 32, runtime) for i in range(1, n + 1)]


def three_saturating(pools, daemon, tag, weights):
    d = pools.switch(daemon)
    if weights is None:
        vdev = pools.attach(d, {i: [] for i in range(1, NGUESTS + 1)})
    else:
        vdev = pools.attach(d, {i: ["--weight", str(w)] for i, w in enumerate(weights, 1)})
    guests = saturating(vdev, NGUESTS, RUNTIME)
    smp, _ = run_guests(pools.rig, tag, guests)
    keys = [g.key for g in guests]
    field = count_source(smp.samples, keys)
    a, b = window(smp.samples, keys, field)
    r = rates(smp.samples, keys, field, a, b)
    d.detach_all()
    return guests, keys, r, smp, field, (a, b)


def guest_table(title, guests, r, weights=None, extra=None, load=None):
    hdr = "    %-10s %7s %10s %10s %8s %9s %9s" % ("guest", "weight", "IOPS(ctr)", "IOPS(fio)",
                                                  "share", "p50 us", "p99 us")
    lines = ["  " + title, hdr]
    tot = sum(r.values()) or 1.0
    for i, g in enumerate(guests):
        lines.append("    %-10s %7s %10.0f %10.0f %7.1f%% %9.1f %9.1f%s"
                     % (g.key, weights[i] if weights else "-", r[g.key], g.result["iops"],
                        100.0 * r[g.key] / tot, g.result["clat_p50_us"],
                        g.result["clat_p99_us"], extra[i] if extra else ""))
    if load:
        lines.append("    all %.0f IOPS; blkbackd CPU %s us per I/O; other processes used %.2f "
                     "CPUs meanwhile" % (sum(r.values()),
                                         "%.1f" % load["blkbackd_us_per_io"]
                                         if load.get("blkbackd_us_per_io") else "-",
                                         load["others_cpus"]))
    for ln in lines:
        log(ln)
    return lines


def sc_path(pools, res, checks, text):
    log("\n== path: 3 guests QD32 without the simulated device and without QoS")
    guests, keys, r, smp, field, win = three_saturating(pools, pools.path, "path", None)
    agg = sum(r.values())
    text += guest_table("path capacity (no simulated device, no QoS)", guests, r,
                        load=smp.load)
    res["path"] = {"iops": r, "aggregate": agg, "window_s": win[1] - win[0],
                   "fio": {g.key: g.result for g in guests}, "trace": trace(smp, keys, field)}
    checks.add("path", "fio+blkbackd capacity / simulated device", agg / sim_iops(), "%.1fx",
               ">= 1.5x", agg >= 1.5 * sim_iops(),
               "%.0f IOPS here vs %d" % (agg, sim_iops()), extra=True)


def sc_weights(pools, res, checks, text):
    log("\n== weights: 3 guests QD32 with weights 1:2:4 on the simulated device %s" % SIM)
    log("  baseline: the same guests with --no-qos")
    gb, kb, rb, smpb, fb, wb = three_saturating(pools, pools.noqos, "noqos", None)
    agg_b = sum(rb.values())
    text += guest_table("without QoS (--no-qos), simulated device %s" % SIM, gb, rb,
                        load=smpb.load)
    checks.add("weights", "device saturated without QoS (agg / device)", agg_b / sim_iops(),
               "%.3f", ">= 0.95", agg_b >= 0.95 * sim_iops(), "%.0f IOPS" % agg_b, extra=True)
    weights = [100, 200, 400]
    guests, keys, r, smp, field, win = three_saturating(pools, pools.qos, "weights", weights)
    tot = sum(r.values())
    want = [w / float(sum(weights)) for w in weights]
    got = [r[k] / tot for k in keys]
    ext = [" want %5.1f%% (x%.3f)" % (100 * w, g / w) for g, w in zip(got, want)]
    text += guest_table("weights 1:2:4 with QoS", guests, r, weights, ext, smp.load)
    res["weights"] = {"weights": weights, "iops": r, "share": dict(zip(keys, got)),
                      "want": dict(zip(keys, want)), "aggregate": tot, "noqos_iops": rb,
                      "noqos_aggregate": agg_b, "window_s": win[1] - win[0],
                      "fio": {g.key: g.result for g in guests},
                      "noqos_fio": {g.key: g.result for g in gb},
                      "trace": trace(smp, keys, field), "noqos_trace": trace(smpb, kb, fb)}
    worst = max(abs(g / w - 1) for g, w in zip(got, want))
    checks.add("weights", "worst share vs weight share", worst * 100, "%.1f%%", "<= 5%",
               worst <= 0.05, " ".join("%.1f/%.1f" % (100 * g, 100 * w)
                                        for g, w in zip(got, want)))
    j = jain_weighted([r[k] for k in keys], weights)
    checks.add("weights", "weighted Jain index", j, "%.4f", ">= 0.99", j >= 0.99)
    checks.add("weights", "aggregate vs --no-qos", tot / agg_b, "%.3f", ">= 0.95",
               tot >= 0.95 * agg_b, "%.0f vs %.0f IOPS" % (tot, agg_b))


def sc_cap(pools, res, checks, text):
    log("\n== cap: g1 capped at %d IOPS beside g2 uncapped, both QD32, simulated device"
        % CAP_IOPS)
    d = pools.switch(pools.qos)
    vdev = pools.attach(d, {1: ["--cap-iops", str(CAP_IOPS)], 2: []})
    guests = [Guest("g1", vdev, 32, RUNTIME, ramp=0, lat_log=True), Guest("g2", vdev, 32,
                                                                          RUNTIME)]
    smp, _ = run_guests(pools.rig, "cap", guests)
    keys = [g.key for g in guests]
    field = count_source(smp.samples, keys)
    a, b = window(smp.samples, keys, field)
    r = rates(smp.samples, keys, field, a, b)
    d.detach_all()
    text += guest_table("cap %d IOPS on g1" % CAP_IOPS, guests, r, ["cap", "-"],
                        load=smp.load)
    # Completion gaps of the capped guest, skipping its first second (connect, first credit).
    ts = [t for t in guests[0].completion_times_ms() if t >= 1000]
    gaps = [b_ - a_ for a_, b_ in zip(ts, ts[1:])]
    stall = max(gaps) if gaps else None
    # The same from the counter samples, coarser: samples that saw no new I/O since the last
    # one that did prove a gap at least that long.
    sstall = 0.0
    last_t, last_c = None, None
    for s in smp.samples:
        if not (a <= s["t"] <= b):
            continue
        c = counter(s, keys[0], field)
        if last_c is None or c > last_c:
            last_t, last_c = s["t"], c
        else:
            sstall = max(sstall, s["t"] - last_t)
    per = period_s(smp.samples)
    rate = r[keys[0]]
    res["cap"] = {"cap_iops": CAP_IOPS, "iops": r, "window_s": b - a,
                  "trace": trace(smp, keys, field),
                  "stall_ms": stall, "stall_samples_ms": sstall * 1000, "period_ms": per * 1000,
                  "completions_logged": len(ts), "fio": {g.key: g.result for g in guests}}
    checks.add("cap", "capped rate / cap", rate / CAP_IOPS, "%.3f", "1 +- 0.05",
               abs(rate / CAP_IOPS - 1) <= 0.05, "%.0f IOPS" % rate)
    checks.add("cap", "longest gap between completions (ms)", stall, "%.0f",
               "<= %.0f (period)" % (per * 1000), stall is not None and stall <= per * 1000,
               "counter samples: >= %.0f ms" % (sstall * 1000))
    rest = sim_iops() - CAP_IOPS
    checks.add("cap", "uncapped neighbour / rest of the device", r[keys[1]] / rest, "%.3f",
               ">= 0.95", r[keys[1]] >= 0.95 * rest, "%.0f IOPS" % r[keys[1]], extra=True)


def sc_reservation(pools, res, checks, text):
    log("\n== reservation: g1 weight 1 reserving %d IOPS beside g2, g3 of weight 1000, all QD32"
        % RESERVE_IOPS)
    d = pools.switch(pools.qos)
    vdev = pools.attach(d, {1: ["--weight", "1", "--reserve-iops", str(RESERVE_IOPS)],
                            2: ["--weight", "1000"], 3: ["--weight", "1000"]})
    guests = saturating(vdev, 3, RUNTIME)
    smp, _ = run_guests(pools.rig, "reserve", guests)
    keys = [g.key for g in guests]
    field = count_source(smp.samples, keys)
    a, b = window(smp.samples, keys, field)
    r = rates(smp.samples, keys, field, a, b)
    d.detach_all()
    text += guest_table("reservation %d IOPS on g1 (weight 1)" % RESERVE_IOPS, guests, r,
                        [1, 1000, 1000], load=smp.load)
    res["reservation"] = {"reserve_iops": RESERVE_IOPS, "iops": r, "window_s": b - a,
                          "fio": {g.key: g.result for g in guests},
                          "trace": trace(smp, keys, field)}
    got = r[keys[0]]
    checks.add("reservation", "reserved guest / reservation", got / RESERVE_IOPS, "%.3f",
               ">= 0.95", got >= 0.95 * RESERVE_IOPS, "%.0f IOPS" % got)
    tot = sum(r.values())
    checks.add("reservation", "aggregate / device", tot / sim_iops(), "%.3f", ">= 0.95",
               tot >= 0.95 * sim_iops(), "%.0f IOPS" % tot, extra=True)


def noisy_pair(pools, daemon, tag, runtime):
    d = pools.switch(daemon)
    vdev = pools.attach(d, {1: [] if daemon is pools.noqos else ["--weight", "256"],
                            2: [] if daemon is pools.noqos else ["--weight", "256"]})
    # The QD64 guest starts first and runs past the light one's end.
    heavy = Guest("g2", vdev, 64, runtime + 2.5, ramp=0)
    light = Guest("g1", vdev, 1, runtime, delay=0.5)
    smp, _ = run_guests(pools.rig, tag, [heavy, light])
    keys = [light.key, heavy.key]
    field = count_source(smp.samples, keys)
    a, b = window(smp.samples, keys, field)
    r = rates(smp.samples, keys, field, a, b)
    d.detach_all()
    light.result.update(backend_lat(smp, light.key))
    return light, heavy, r, trace(smp, keys, field)


def noisy_solo(pools, runtime):
    d = pools.switch(pools.qos)
    vdev = pools.attach(d, {1: ["--weight", "256"]})
    solo = Guest("g1", vdev, 1, runtime)
    smp, _ = run_guests(pools.rig, "solo", [solo])
    d.detach_all()
    solo.result.update(backend_lat(smp, solo.key))
    return solo, trace(smp, [solo.key], count_source(smp.samples, [solo.key]))


def sc_noisy(pools, res, checks, text):
    """Rounds of (alone, beside QD64) next to each other: a QD1 guest's p99 on a small shared
    machine moves with whatever else runs, so each round's ratio compares neighbours in time
    and the value is the median round."""
    rounds = NOISY_ROUNDS
    runtime = min(RUNTIME, 5)
    log("\n== noisy neighbour: g1 QD1 alone, then beside g2 QD64 of equal weight; %d round(s) "
        "of %d s" % (rounds, runtime))
    lines = ["  noisy neighbour: g1 QD1 completion latency, as fio sees it (clat) and inside "
             "blkbackd (ring to response)",
             "    %-28s %8s %8s %8s %9s %8s %8s %8s" % ("", "IOPS", "p50 us", "p99 us",
                                                     "p99.9 us", "bkd p50", "bkd p99",
                                                     "g2 IOPS")]

    def row(name, g, other):
        lines.append("    %-28s %8.0f %8.1f %8.1f %9.1f %8s %8s %8s"
                     % (name, g.result["iops"], g.result["clat_p50_us"],
                        g.result["clat_p99_us"], g.result["clat_p999_us"],
                        "%.0f" % g.result["be_p50_us"] if g.result.get("be_p50_us") else "-",
                        "%.0f" % g.result["be_p99_us"] if g.result.get("be_p99_us") else "-",
                        "%.0f" % other if other is not None else "-"))

    for ln in lines:
        log(ln)
    out = []
    for i in range(rounds):
        solo, tsolo = noisy_solo(pools, runtime)
        light, heavy, r, tr = noisy_pair(pools, pools.qos, "noisy", runtime)
        row("round %d: alone (QoS on)" % (i + 1), solo, None)
        row("round %d: beside QD64, QoS on" % (i + 1), light, r[heavy.key])
        log(lines[-2])
        log(lines[-1])
        out.append({"solo": solo.result, "with_qos": light.result, "heavy": heavy.result,
                    "rates": r, "ratio": light.result["clat_p99_us"] / solo.result["clat_p99_us"],
                    "agg": sum(r.values()), "trace_solo": tsolo, "trace_with_qos": tr})
    nl, nh, nr, ntr = noisy_pair(pools, pools.noqos, "noisy-noqos", runtime)
    row("beside QD64, --no-qos", nl, nr[nh.key])
    log(lines[-1])
    text += lines
    ratios = [o["ratio"] for o in out]
    ratio = statistics.median(ratios)
    solo_p99 = statistics.median(o["solo"]["clat_p99_us"] for o in out)
    res["noisy"] = {"rounds": out, "ratios": ratios, "ratio": ratio, "runtime_s": runtime,
                    "without_qos": nl.result, "heavy_without_qos": nh.result,
                    "rates_without_qos": nr, "trace_without_qos": ntr,
                    "ratio_without_qos": nl.result["clat_p99_us"] / solo_p99}
    checks.add("noisy", "QD1 p99 beside QD64 / alone (median round)", ratio, "%.2fx", "<= 2x",
               ratio <= 2, "rounds %s; --no-qos %.2fx the median solo"
               % (" ".join("%.2f" % x for x in ratios), res["noisy"]["ratio_without_qos"]))
    agg = statistics.median(o["agg"] for o in out)
    checks.add("noisy", "device busy meanwhile (agg / device)", agg / sim_iops(), "%.3f",
               ">= 0.95", agg >= 0.95 * sim_iops(), "%.0f IOPS; --no-qos %.0f"
               % (agg, sum(nr.values())), extra=True)


def sc_reaction(pools, res, checks, text, stamp):
    log("\n== reaction: 3 guests QD32 of weight 256; g1 set to 1024 halfway")
    d = pools.switch(pools.qos)
    vdev = pools.attach(d, {i: ["--weight", "256"] for i in range(1, NGUESTS + 1)})
    runtime = max(RUNTIME, 4)
    guests = saturating(vdev, NGUESTS, runtime)
    at = WARMUP_S + (runtime - WARMUP_S) / 2.0
    smp, ev = run_guests(pools.rig, "reaction", guests,
                         [(at, ["set", "g1", vdev, "--weight", "1024"])])
    d.detach_all()
    keys = [g.key for g in guests]
    field = count_source(smp.samples, keys)
    a, b = window(smp.samples, keys, field)
    per = period_s(smp.samples)
    # Periods count from the moment blkctl set was started: the daemon applies the weight and
    # then persists it (an fsync) before it answers, so the answer is late by the fsync while
    # the start is early only by the command's own start-up.
    tset = ev[0]["t_start"]
    took = (ev[0]["t_done"] - ev[0]["t_start"]) * 1000
    want_before, want_after = 1.0 / 3, 4.0 / 6
    # Shares per period, in bins aligned on that moment.
    nb = int((tset - a) / per)
    bins = series(smp.samples, keys, field, tset - nb * per, b, per)

    def share(cnt):
        tot = sum(cnt.values())
        return cnt[keys[0]] / tot if tot else 0.0

    after = [(t, share(c)) for t, c in bins if t >= tset - 1e-9]
    first_ok = None
    for i, (t, s) in enumerate(after):
        if abs(s / want_after - 1) <= 0.05:
            first_ok = i
            break
    settled = [s for _, s in after[3:]]
    inside = sum(1 for s in settled if abs(s / want_after - 1) <= 0.05)
    # As the unit test counts: the periods before the first one that shows the new share
    # (from the answer on) are the reaction; that period itself already shows it throughout.
    react_ms = (after[first_ok][0] - tset) * 1000 if first_ok is not None else None
    # The share in the whole second half (after 3 periods) and the first half.
    rb = rates(smp.samples, keys, field, a, tset)
    ra = rates(smp.samples, keys, field, tset + 3 * per, b)
    sb = rb[keys[0]] / sum(rb.values())
    sa = ra[keys[0]] / sum(ra.values())
    lines = ["  reaction: g1 weight 256 -> 1024 (blkctl set took %.1f ms); g1's share per "
             "%.0f ms period from its start on:" % (took, per * 1000),
             "    " + " ".join("%.0f%%" % (100 * s) for _, s in after[:12]) + " ...",
             "    g1 share: %.1f%% before (want %.1f%%), %.1f%% from 3 periods after the set on "
             "(want %.1f%%); %d of %d periods after that within +-5%%"
             % (100 * sb, 100 * want_before, 100 * sa, 100 * want_after, inside, len(settled))]
    for ln in lines:
        log(ln)
    text += lines
    png, data = plot_reaction(smp.samples, keys, field, a - WARMUP_S, b, tset,
                              (sum(rb.values()), sum(ra.values())), stamp)
    res["reaction"] = {"period_ms": per * 1000, "set": ev[0], "react_ms": react_ms,
                       "share_before": sb, "share_after": sa, "shares_after": after,
                       "settled_within": inside, "settled_periods": len(settled),
                       "trace": trace(smp, keys, field), "plot": png, "plot_data": data,
                       "fio": {g.key: g.result for g in guests}}
    checks.add("reaction", "weight change in shares, from blkctl set (ms)", react_ms, "%.0f",
               "<= %.0f (3 per.)" % (3 * per * 1000),
               react_ms is not None and react_ms <= 3 * per * 1000 + 1e-6,
               "%d periods before the first within +-5%%; set itself took %.0f ms"
               % (first_ok, took) if react_ms is not None else "never")
    checks.add("reaction", "g1 share after / weight share", sa / want_after, "%.3f", "1 +- 0.05",
               abs(sa / want_after - 1) <= 0.05,
               "%.1f%% vs %.1f%%" % (100 * sa, 100 * want_after), extra=True)


# ---- the plot --------------------------------------------------------------------------------

def plot_reaction(samples, keys, field, t0, t1, tset, agg, stamp):
    """Per-guest IOPS in 30 ms bins through the weight change, their sum, and each guest's
    weight share of the measured aggregate @agg (before, after the change): data under
    results/, PNG by gnuplot (docs/qos-weight-change.png on a full run)."""
    os.makedirs(OUT, exist_ok=True)
    data = os.path.join(OUT, "qos-weight-change-%s.dat" % stamp)
    step = 0.030
    t0 = max(t0, samples[0]["t"])
    bins = series(samples, keys, field, t0, t1, step)
    with open(data, "w") as f:
        f.write("# t_s (from the first guest's start; weight change at %.3f) %s, IOPS per "
                "%.0f ms bin\n" % (tset - t0, " ".join(keys), step * 1000))
        for t, c in bins:
            f.write("%.3f %s %.0f\n" % (t - t0 + step / 2, " ".join("%.0f" % (c[k] / step)
                                                                   for k in keys),
                                        sum(c.values()) / step))
    png = os.environ.get("BENCH_QOS_PLOT") or (
        os.path.join(OUT, "qos-weight-change-%s.png" % stamp) if QUICK else PLOT_DOC)
    if shutil.which("gnuplot") is None:
        raise BenchError("gnuplot is needed for the plot (make deps installs gnuplot-nox)")
    ts = tset - t0
    script = "\n".join([
        "set terminal pngcairo size 960,480 font 'sans,10'",
        "set output '%s'" % png,
        "set title 'Per-guest IOPS through a weight change (blkbackd --sim-device %s, "
        "30 ms bins)'" % SIM,
        "set xlabel 'seconds'",
        "set ylabel 'IOPS'",
        "set key outside right top",
        "set grid",
        "set arrow from %.3f, graph 0 to %.3f, graph 1 nohead dt 2 lc rgb 'gray40'" % (ts, ts),
        "set label 'blkctl set g1 --weight 1024' at %.3f, graph 0.95 offset 0.5,0" % ts,
        "set yrange [0:%d]" % (int(max(sim_iops(), max(agg)) * 1.1 / 1000 + 1) * 1000),
        "plot '%s' using 1:5 with lines lw 1 lc rgb 'gray70' title 'all guests', \\" % data,
        "     '' using 1:2 with lines lw 1.5 lc rgb '#9400d3' title 'g1: weight 256, then 1024', "
        "\\",
        "     '' using 1:3 with lines lw 1.5 lc rgb '#e69f00' title 'g2: weight 256', \\",
        "     '' using 1:4 with lines lw 1.5 lc rgb '#009e73' title 'g3: weight 256', \\",
        "     (x < %.3f ? %.0f : %.0f) with lines dt 2 lw 1.5 lc rgb 'black' title "
        "'g1 weight share', \\" % (ts, agg[0] / 3, agg[1] * 4 / 6),
        "     (x < %.3f ? %.0f : %.0f) with lines dt 3 lw 1.5 lc rgb 'gray30' title "
        "'g2, g3 weight share'" % (ts, agg[0] / 3, agg[1] / 6),
        ""])
    r = subprocess.run(["gnuplot"], input=script, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise BenchError("gnuplot failed: %s" % r.stdout.strip())
    log("  plot: %s (data %s)" % (bench.shown(png), bench.shown(data)))
    return bench.shown(png), bench.shown(data)


# ---- overhead on the real disk ---------------------------------------------------------------

def sc_overhead(rig, res, checks, text, cached=False):
    """Pairs of runs, QoS off and on next to each other (the order alternating), so a disk or a
    machine whose speed drifts moves both halves of a pair: the value is the median of the
    pairs' ratios. @cached: the same through the page cache (blkbackd --no-direct, the file
    warm), where the path is CPU-bound and what QoS costs in CPU shows."""
    name = "overhead-cached" if cached else "overhead"
    reps = max(1, REPS - 2) if cached else REPS
    log("\n== %s: g1 4k randread QD32, %s, QoS on with unreachable caps vs --no-qos, %d pair(s) "
        "of %d s" % ("overhead through the page cache" if cached else "overhead on the real disk",
                     "cached (--no-direct)" if cached else "O_DIRECT", reps, DISK_RUNTIME))
    pool = os.path.join(rig.tmp, "pools", "disk")
    runs = {"on": [], "off": []}
    img = os.path.join(pool, "vols", "disk.img")
    rounds = []
    ratios = []
    for rep in range(reps):
        order = ["off", "on"] if rep % 2 == 0 else ["on", "off"]
        pair = {}
        for which in order:
            args = ([] if which == "on" else ["--no-qos"]) + (["--no-direct"] if cached else [])
            d = rig.use(Daemon(rig, "%s-%s-%d" % (name, which, rep), pool, args))
            if not os.path.exists(img):
                d.create("disk", DISK_SIZE)
                log("  filling %s (%s)" % (img, DISK_SIZE))
                bench.fill(img)
            if cached:
                bench.warm(img)
            else:
                bench.fsync_and_maybe_evict(img, True)
            vdev = vdev_for(2 * rep + len(pair) + (2 * REPS if cached else 0))
            opts = ["--cap-iops", "10000000", "--cap-bps", str(100 << 30)] if which == "on" \
                else []
            d.attach("disk", "g1", vdev, opts)
            g = Guest("g1", vdev, 32, DISK_RUNTIME)
            smp, _ = run_guests(rig, "%s-%s" % (name, which), [g])
            d.detach_all()
            dev = last_dev(smp.samples)
            runs[which].append(g.result)
            pair[which] = g.result["iops"]
            rounds.append({"qos": which, "rep": rep, "fio": g.result, "device": dev,
                           "load": smp.load})
            log("  QoS %-3s rep %d: %8.0f IOPS  p50 %7.1f us  p99 %8.1f us  blkbackd %.1f us/IO%s"
                % (which, rep + 1, g.result["iops"], g.result["clat_p50_us"],
                   g.result["clat_p99_us"], smp.load["blkbackd_us_per_io"] or 0,
                   "  (vrate %.0f%%, capacity %s IOPS)" % (dev["vrate_ppm"] / 1e4,
                                                          dev.get("capacity_iops"))
                   if dev and which == "on" and "vrate_ppm" in dev else ""))
        ratios.append(pair["on"] / pair["off"])
    rig.daemon.stop()
    rig.daemon = None
    mon = statistics.median(r["iops"] for r in runs["on"])
    moff = statistics.median(r["iops"] for r in runs["off"])
    ratio = statistics.median(ratios)
    lines = ["  %s (%s, %s): median of %d run(s) each; on/off per pair: %s"
             % (name, bench.machine(img)["fs"]["source"], "cached" if cached else "O_DIRECT",
                reps, " ".join("%.3f" % x for x in ratios)),
             "    QoS off %8.0f IOPS  p99 %7.1f us" % (moff, statistics.median(
                 r["clat_p99_us"] for r in runs["off"])),
             "    QoS on  %8.0f IOPS  p99 %7.1f us" % (mon, statistics.median(
                 r["clat_p99_us"] for r in runs["on"]))]
    for ln in lines:
        log(ln)
    text += lines
    cpu = {w: statistics.median(x["load"]["blkbackd_us_per_io"] or 0 for x in rounds
                                if x["qos"] == w) for w in ("on", "off")}
    res[name] = {"rounds": rounds, "median_on": mon, "median_off": moff,
                 "pair_ratios": ratios, "ratio": ratio, "size": DISK_SIZE,
                 "blkbackd_us_per_io": cpu}
    checks.add(name, ("page cache" if cached else "real disk") + " IOPS, QoS on / off (median "
               "pair)", ratio, "%.3f", ">= 0.97", ratio >= 0.97,
               "medians %.0f vs %.0f IOPS; pairs %s; blkbackd %.1f vs %.1f us CPU per I/O"
               % (mon, moff, " ".join("%.2f" % x for x in ratios), cpu["on"], cpu["off"]),
               extra=cached)


# ---- main ------------------------------------------------------------------------------------

def preflight():
    need = [os.path.join(BIN, b) for b in ("hvsimd", "hvctl", "blkbackd", "blkctl")] + [ENGINE]
    missing = [p for p in need if not os.path.exists(p)]
    if missing:
        raise BenchError("not built: %s (run make)" % ", ".join(missing))
    for s in SCENARIOS:
        if s not in ALL_SCENARIOS:
            raise BenchError("unknown scenario %s (%s)" % (s, ", ".join(ALL_SCENARIOS)))
    for tool in ("fio", "gnuplot"):
        if shutil.which(tool) is None:
            raise BenchError("%s is needed (make deps installs it)" % tool)
    iops, _, lat = SIM.partition(":")
    if not iops.isdigit() or (lat and not lat.isdigit()):
        raise BenchError("BENCH_QOS_SIM must be IOPS[:LAT_US], not %s" % SIM)


def snapshot_binaries(tmp):
    """Run private copies of the daemons, tools and engine: a build in the same tree (other
    people's, on a shared machine) relinks them under a running bench otherwise."""
    global BIN, ENGINE
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir)
    for b in ("hvsimd", "hvctl", "blkbackd", "blkctl"):
        shutil.copy2(os.path.join(BIN, b), os.path.join(bindir, b))
    eng = os.path.join(bindir, os.path.basename(ENGINE))
    shutil.copy2(ENGINE, eng)
    BIN, ENGINE = bindir, eng


def main():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, bench._on_signal)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tmp = None
    rig = None
    rc = 0
    keep = False
    t_start = time.monotonic()
    try:
        preflight()
        parent = os.environ.get("BENCH_DIR") or "/var/tmp"
        tmp = tempfile.mkdtemp(prefix="sluice-bench-qos.", dir=parent)
        snapshot_binaries(tmp)
        rig = Rig(tmp)
        mc = bench.machine(tmp)
        if ("overhead" in SCENARIOS or "overhead-cached" in SCENARIOS) and \
                mc["fs"]["type"] == "tmpfs":
            raise BenchError("%s is on tmpfs: the overhead scenario needs a real disk (set "
                             "BENCH_DIR)" % parent)
        log("bench-qos: %s; simulated device %s; %d s per scenario; work dir %s on %s (%s); "
            "%d CPU(s) %s, load %s"
            % (",".join(SCENARIOS), SIM, RUNTIME, tmp, mc["fs"]["source"], mc["fs"]["type"],
               mc["nproc"], mc["cpu"], " ".join(mc["loadavg_start"])))
        if float(mc["loadavg_start"][0]) > 0.5:
            log("bench-qos: warning: load average %s before starting: other work is running "
                "and will disturb the numbers" % mc["loadavg_start"][0])
        report = {"stamp": stamp, "machine": mc, "command": " ".join(sys.argv),
                  "config": {"quick": QUICK, "runtime_s": RUNTIME, "reps": REPS, "sim": SIM,
                             "scenarios": SCENARIOS, "sample_ms": SAMPLE_S * 1000,
                             "disk_size": DISK_SIZE, "warmup_s": WARMUP_S,
                             "engine_opts": ENGINE_OPTS},
                  "results": {}}
        text = ["sluice bench-qos %s (%s)" % (stamp, mc["git"]),
                "machine: %d CPU(s) %s, kernel %s, %d MiB RAM; work dir on %s (%s); simulated "
                "device %s" % (mc["nproc"], mc["cpu"], mc["kernel"], mc["mem_kib"] // 1024,
                               mc["fs"]["source"], mc["fs"]["type"], SIM)]
        checks = Checks()
        rig.start_hv(NGUESTS)
        pools = SimPools(rig)
        res = report["results"]
        for s in SCENARIOS:
            if s == "path":
                sc_path(pools, res, checks, text)
            elif s == "weights":
                sc_weights(pools, res, checks, text)
            elif s == "cap":
                sc_cap(pools, res, checks, text)
            elif s == "reservation":
                sc_reservation(pools, res, checks, text)
            elif s == "noisy":
                sc_noisy(pools, res, checks, text)
            elif s == "reaction":
                sc_reaction(pools, res, checks, text, stamp)
            elif s == "overhead":
                sc_overhead(rig, res, checks, text)
            elif s == "overhead-cached":
                sc_overhead(rig, res, checks, text, cached=True)
        if rig.daemon is not None:
            rig.daemon.stop()
            rig.daemon = None
        report["checks"] = checks.rows
        report["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        report["elapsed_s"] = round(time.monotonic() - t_start, 1)
        summary = ["", "issue 5 targets (bench-qos %s, simulated device %s; overhead on the real "
                   "disk):" % (stamp, SIM)] + checks.lines()
        summary.append(checks.tally())
        if LOADS:
            worst = max(LOADS, key=lambda x: x[1])
            report["others_cpus"] = {"median": statistics.median(x[1] for x in LOADS),
                                     "max": worst[1], "max_run": worst[0]}
            summary.append("other processes on the machine during the runs: median %.2f CPUs, "
                           "most %.2f (%s), of %d" % (report["others_cpus"]["median"], worst[1],
                                                      worst[0], bench.NCPU))
        for ln in summary:
            log(ln)
        text += summary
        os.makedirs(OUT, exist_ok=True)
        jpath = os.path.join(OUT, "bench-qos-%s.json" % stamp)
        with open(jpath, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
        tpath = os.path.join(OUT, "bench-qos-%s.txt" % stamp)
        with open(tpath, "w") as f:
            f.write("\n".join(text) + "\n")
        log("\nbench-qos: done in %.0f s; %s and %s" % (report["elapsed_s"], bench.shown(jpath),
                                                        bench.shown(tpath)))
    except (BenchError, OSError) as e:
        print("bench-qos: FAILED: %s" % e, file=sys.stderr)
        if tmp:
            print("bench-qos: logs kept in %s" % tmp, file=sys.stderr)
        rc = 1
        keep = True
    except (KeyboardInterrupt, SystemExit) as e:
        print("bench-qos: interrupted", file=sys.stderr)
        rc = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 130
    finally:
        if rig is not None and rig.daemon is not None:
            try:
                rig.daemon.detach_all()
            except (BenchError, OSError):
                pass
        stop_all()
        if tmp and not keep and os.environ.get("BENCH_KEEP", "") in ("", "0"):
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


def scenario_load(res, name):
    """The CPUs other processes used during scenario @name's runs (median over its runs)."""
    r = res.get(name, {})
    loads = [v["load"]["others_cpus"] for k, v in r.items()
             if k.startswith("trace") and isinstance(v, dict) and "load" in v]
    for k in ("rounds",):
        for x in r.get(k, []):
            if "load" in x:
                loads.append(x["load"]["others_cpus"])
            for kk in ("trace_solo", "trace_with_qos"):
                if kk in x:
                    loads.append(x[kk]["load"]["others_cpus"])
    return statistics.median(loads) if loads else None


def markdown(path):
    """`bench_qos.py --markdown RESULT.json`: a saved run's targets as a Markdown table, with
    the CPU other processes used during each scenario (for docs/qos.md)."""
    with open(path) as f:
        r = json.load(f)
    out = ["| scenario | measured | value | target | result | others' CPUs |",
           "|---|---|--:|---|---|--:|"]
    for c in r["checks"]:
        res = "met" if c["met"] else ("**missed**" if c["met"] is not None else "-")
        what = ("(extra) " if c.get("extra") else "") + c["what"]
        what += " (%s)" % c["note"] if c.get("note") else ""
        load = scenario_load(r["results"], c["scenario"])
        out.append("| %s | %s | %s | %s | %s | %s |"
                   % (c["scenario"], what, c["shown"], c["target"], res,
                      "%.2f" % load if load is not None else ""))
    w = r["results"].get("weights")
    if w:
        out += ["", "Weights 1:2:4, per guest (counters over the common window; p99 is fio's "
                "clat):", "", "| guest | weight | IOPS | share | weight share | p99 |",
                "|---|--:|--:|--:|--:|--:|"]
        for k, wt in zip(sorted(w["iops"]), w["weights"]):
            out.append("| %s | %d | %.0f | %.1f%% | %.1f%% | %.1f ms |"
                       % (k.split("/")[0], wt, w["iops"][k], 100 * w["share"][k],
                          100 * w["want"][k], w["fio"][k]["clat_p99_us"] / 1000))
        out.append("| all (`--no-qos`: %.0f) | | %.0f | | | |"
                   % (w["noqos_aggregate"], w["aggregate"]))
    n = r["results"].get("noisy")
    if n:
        out += ["", "Noisy neighbour: g1 QD1 p99 in µs, fio's clat (in brackets blkbackd's own "
                "p99, ring to response):", "",
                "| round | alone | beside QD64, QoS on | ratio | g2 (QD64) IOPS |",
                "|---|--:|--:|--:|--:|"]
        for i, x in enumerate(n["rounds"]):
            heavy = [v for k, v in x["rates"].items() if k.startswith("g2/")]
            out.append("| %d | %.0f (%s) | %.0f (%s) | %.2fx | %s |"
                       % (i + 1, x["solo"]["clat_p99_us"], fmt_us(x["solo"].get("be_p99_us")),
                          x["with_qos"]["clat_p99_us"], fmt_us(x["with_qos"].get("be_p99_us")),
                          x["ratio"], "%.0f" % heavy[0] if heavy else ""))
        heavy = [v for k, v in n["rates_without_qos"].items() if k.startswith("g2/")]
        out.append("| `--no-qos` | | %.0f (%s) | %.1fx the median alone | %s |"
                   % (n["without_qos"]["clat_p99_us"], fmt_us(n["without_qos"].get("be_p99_us")),
                      n["ratio_without_qos"], "%.0f" % heavy[0] if heavy else ""))
    return "\n".join(out)


def fmt_us(v):
    return "%.0f" % v if v else "-"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--markdown":
        print(markdown(sys.argv[2]))
        sys.exit(0)
    if any(a not in ("--quick",) for a in sys.argv[1:]):
        sys.exit("usage: bench_qos.py [--quick] | bench_qos.py --markdown RESULT.json")
    sys.exit(main())
