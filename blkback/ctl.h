/*
 * ctl.h - blkbackd's control socket (POOL/blkbackd.sock), spoken by blkctl.
 *
 * Protocol: AF_UNIX stream; the client sends one JSON object on one line, the daemon answers one
 * JSON object on one line, then either side may send the next request. Every answer has
 * "ok": true|false; a refusal has "error": "<one clear sentence>" and "errno": <positive errno>.
 *
 *   {"cmd":"ping"}                                  -> {"ok":true,"pid":N,"hv_dir":"..."}
 *   {"cmd":"attach","vol":V,"domain":D,"vdev":"xvda","ro":false}
 *                                                   -> {"ok":true,"domid":N,"devid":51712}
 *        D is a domain name or decimal domid. The daemon writes the frontend and backend nodes
 *        as a Xen toolstack does (state 1 on both sides); its own backend watch then serves it.
 *   {"cmd":"detach","domain":D,"vdev":"xvda"}       -> {"ok":true}
 *        Closes the vbd (Closing/Closed handshake, in-flight I/O completes), removes the nodes.
 *        The answer comes when the frontend closed, or after 5 s if it does not react; that
 *        connection reads no further request until then.
 *   {"cmd":"resize","vol":V,"size":BYTES,"shrink":false} -> {"ok":true,"old_size":B,"size":B}
 *        Online: every vbd of V sees the new size (sectors + state rewritten in one transaction).
 *   {"cmd":"stats"} or {"cmd":"stats","domain":D,"vdev":X}
 *        -> {"ok":true,"vbds":[{"domid","domain","vdev","devid","vol","state","ro",
 *             "rd_req","wr_req","f_req","ds_req","oo_req","rd_sect","wr_sect","errors",
 *             "inflight","rd_lat_p50_us","rd_lat_p99_us","wr_lat_p50_us","wr_lat_p99_us"}]}
 *        "state" is the backend's XenbusState by name ("InitWait", "Connected", "Closed"...);
 *        counters are integers (kept across reconnects of the vbd), latencies are numbers
 *        in microseconds (0 when nothing was measured yet). Every vbd blkbackd serves is
 *        listed, connected or not.
 *   {"cmd":"attached","vol":V}                      -> {"ok":true,"vbds":[{"domid","vdev"}...]}
 *
 *   QoS (qos_daemon.c). The settings fields are "weight" (1..65535), "cap_iops", "cap_bps",
 *   "reserve_iops", "burst_iops", "burst_bps", "burst_seconds" (integers, 0 = none):
 *   "attach" takes them too (unset ones get the defaults); they are checked against the device
 *   and saved in POOL/qos/<domain>-<vdev>.json, and a detach removes them.
 *   {"cmd":"set","domain":D,"vdev":X, <settings fields>} -> {"ok":true,"settings":{...}}
 *        Fields not given keep their values; online, effective within one period.
 *   {"cmd":"qos"} -> {"ok":true,"enabled":B,"time_ns":MONOTONIC_NS,"device":{"period_ns",
 *        "periods","vrate_ppm","window_ns","inflight_ns","lat_base_ns","lat_target_ns",
 *        "lat_mean_ns","grant_delay_ns","budget_ns","capacity_iops","reserved_iops",
 *        "weight_active","nvbd","nactive","nwaiting","model","sim_device"},
 *        "vbds":[{"domid","domain","vdev","vol",
 *        <settings fields>,"state","share_pct","credit_ns","iops","bps","ops","bytes","dev_ns",
 *        "throttled_ns","parked_ns","boosts","inflight"}]}
 *        ops, bytes, dev_ns, throttled_ns, parked_ns, boosts are cumulative across reconnects;
 *        "state" is the scheduler's (idle, boost, under, over, parked) or "disconnected";
 *        with --no-qos the device has only "model" and "sim_device".
 *
 *   Dedup volumes (ctl_dedup.c; the daemon owns the pool's dedup store):
 *   {"cmd":"dedup_create","vol":V,"size":BYTES}      -> {"ok":true}   (size a multiple of 4096)
 *   {"cmd":"snapshot","src":V,"dst":S} / {"cmd":"clone","src":S,"dst":V} -> {"ok":true}
 *   {"cmd":"dedup_delete","vol":V}                   -> {"ok":true}   (refused while open)
 *   {"cmd":"gc"}          -> {"ok":true,"container_bytes_before","container_bytes","freed_bytes"}
 *   {"cmd":"fsck","repair":B,"verify":B}             -> {"ok":true,"report":{...,"clean":B}}
 *   {"cmd":"pool"}                                   -> {"ok":true,"dedup":{logical_bytes,
 *        stored_bytes, zero_blocks, unique_blocks, dedup_ratio, ...}}
 *   {"cmd":"dedup_list"}  -> {"ok":true,"vols":[{name,origin,size,mapped_bytes,share_bytes,
 *        readonly}]}
 *   {"cmd":"import"|"export","vol":V,"file":ABSOLUTE_PATH} -> {"ok":true}
 *
 * Requests are at most CTL_MAX_LINE bytes; a longer line or invalid JSON gets an error answer
 * and the connection is closed.
 */
#ifndef SLUICE_BLKBACK_CTL_H
#define SLUICE_BLKBACK_CTL_H

#define CTL_MAX_LINE 4096

#endif
