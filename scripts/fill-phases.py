#!/usr/bin/env python3
"""Where one commit cycle of a backlog fill goes (issue 9), from `perf script` output on stdin:
a trace of our broker on sys_{enter,exit}_fdatasync, sys_enter_pwrite64, sys_enter_sendto,
sys_exit_recvfrom and sys_exit_futex (`scripts/bench-disk.sh --phases` records it). Per cycle,
from one journal fdatasync to the next, the median and mean of its phases:
  sync->sendto    the journal's sync returned -> the PUBACKs' write (the acknowledgement path)
  sendto->recv    -> the publisher's next publishes read (the client's turn and loopback)
  recv->pwrite    -> redb's first page write (the publishes handled, the writer's apply/commit)
  pwrite->jwrite  -> the journal record's write (redb's page writes, the record built)
  jwrite->fsync   -> the journal's fdatasync called (the record's direct write)
  fsync           the journal's fdatasync
"""
import re, statistics, sys
ev = []
for line in sys.stdin:
    m = re.match(r"\s*(\S+)\s+\d+\s+\[\d+\]\s+([\d.]+):\s+syscalls:(\w+):\s*(.*)", line)
    if m:
        ev.append((float(m.group(2)) * 1e6, m.group(1), m.group(3), m.group(4)))
names = ["sync->sendto", "sendto->recv", "recv->pwrite", "pwrite->jwrite", "jwrite->fsync",
         "fsync", "cycle"]
phases = {k: [] for k in names}
syncs = [i for i, e in enumerate(ev) if e[2] == "sys_exit_fdatasync"]
for a, b in zip(syncs, syncs[1:]):
    seg = ev[a:b + 1]
    t0, end = seg[0][0], seg[-1][0]
    first = lambda pred, after: next((e[0] for e in seg if e[0] >= after and pred(e)), None)
    sent = first(lambda e: e[2] == "sys_enter_sendto", t0)
    if sent is None:
        continue
    recv = first(lambda e: e[2] == "sys_exit_recvfrom" and not e[3].startswith("0xffff"), sent)
    if recv is None:
        continue
    writes = [e[0] for e in seg if e[2] == "sys_enter_pwrite64" and e[0] > recv]
    if not writes:
        continue
    fsync = first(lambda e: e[2] == "sys_enter_fdatasync", writes[-1])
    if fsync is None:
        continue
    for k, v in zip(names, [sent - t0, recv - sent, writes[0] - recv, writes[-1] - writes[0],
                            fsync - writes[-1], end - fsync, end - t0]):
        phases[k].append(v)
if not phases["cycle"]:
    sys.exit("no whole cycle traced (journal off, or not a disk file system?)")
print("cycles", len(phases["cycle"]))
for k in names:
    v = phases[k]
    print("%-15s median %6.1f us  mean %6.1f us" % (k, statistics.median(v), statistics.mean(v)))
