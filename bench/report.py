"""Turns the raw rounds of a side-by-side benchmark into a Markdown table of medians.

Input: a title, raw.tsv (name, round, cpu ticks, base64 wrk output), rss.tsv (name, VmHWM kB),
clock ticks per second, rounds, seconds. Ratios are per round against HAProxy, then medians.
"""
import base64
import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from knoxybench.load import hey_figures, wrk_figures  # noqa: E402

title, raw, rss_file, hz, rounds, secs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]


def parse(out):
    """(requests, rps, p50, p99, errors) of a wrk or hey report, by the suite's own readers."""
    fig = (hey_figures if "Status code distribution" in out else wrk_figures)(out)
    return fig["requests"], fig["rps"], fig["p50"], fig["p99"], fig["errors"]


rows = defaultdict(dict)
for line in open(raw):
    name, rnd, ticks, b64 = line.rstrip("\n").split("\t")
    out = base64.b64decode(b64).decode()
    reqs, rps, p50, p99, errors = parse(out)
    rows[name][int(rnd)] = {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "cpu_us": int(ticks) / hz / max(reqs, 1) * 1e6,
        "errors": errors,
    }
rss = {n: int(kb) for n, kb in (l.split() for l in open(rss_file))}
base = rows["haproxy"]

print(f"# {title} ({rounds} rounds of {secs} s, medians)\n")
load = os.environ.get("WRK_ARGS", "-t1 -c50")
rate = os.environ.get("RATE")
if rate:
    clients = int(os.environ.get("CLIENTS", "50"))
    load_text = (f"`hey -c {clients} -q {int(rate) // clients}`: {int(rate):,} requests/s offered to every system "
                 "(each client capped at its share; a system slower than that gets fewer)")
else:
    load_text = f"`wrk {load}` (closed loop, at each system's saturation)"
print(f"{load_text}, HTTP/1.1 keep-alive, 13-byte responses from nginx (1 worker); systems in a new "
      "random order each round; CPU/req = (utime+stime of the proxy) / requests; ratios per round "
      "against HAProxy, then the median; [min-max] over rounds.\n")
print("| proxy | req/s [min-max] | p50 ms | p99 ms | CPU µs/req | CPU ratio [min-max] | p99 ratio | peak RSS MB | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for name, by_round in rows.items():
    med = lambda k: statistics.median(r[k] for r in by_round.values())
    ratios = lambda k: [by_round[i][k] / base[i][k] for i in by_round if i in base]
    rps = [r["rps"] for r in by_round.values()]
    cr = ratios("cpu_us")
    print(f"| {name} | {med('rps'):,.0f} [{min(rps):,.0f}-{max(rps):,.0f}] | {med('p50'):.2f} | {med('p99'):.2f} "
          f"| {med('cpu_us'):.1f} | {statistics.median(cr):.2f} [{min(cr):.2f}-{max(cr):.2f}] "
          f"| {statistics.median(ratios('p99')):.2f} | {rss.get(name, 0) / 1024:.1f} "
          f"| {sum(r['errors'] for r in by_round.values())} |")
cpu = lambda n: statistics.median(r["cpu_us"] for r in rows[n].values()) if n in rows else None
if cpu("knoxy-queue") and cpu("knoxy-queue-cc10"):
    print(f"\nCONTAINER_CONCURRENCY=10 vs 0: CPU/req {cpu('knoxy-queue-cc10') / cpu('knoxy-queue') - 1:+.1%}")
