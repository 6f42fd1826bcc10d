"""From raw rounds to what the report says: medians with their min-max spread over rounds,
and ratios to HAProxy taken per round (the two ran in the same round) before the median."""
import statistics

FIGURES = ("rps", "p50", "p90", "p99", "max", "cpu_us")
RATIOS = ("rps", "p99", "cpu_us")
# Rows in this order: the ceiling, the peers, then Knoxy.
ROLE_ORDER = ("ceiling", "peer", "knoxy")


def side_by_side(scenario, runs, rss):
    """runs: dicts with target, load, round and the figures of one run; rss: target -> MB."""
    loads = []
    for ld in scenario.loads:
        by_target = {}
        for t in scenario.targets:
            mine = [r for r in runs if r["target"] == t.name and r["load"] == ld.name]
            if mine:
                by_target[t.name] = (t, {r["round"]: r for r in mine})
        # The baseline: HAProxy, or the chain of HAProxies where the scenario has one.
        base = next((rounds for name, (_, rounds) in by_target.items() if name.startswith("haproxy")), {})
        systems = []
        for name, (t, rounds) in by_target.items():
            row = {"name": name, "role": t.role, "rss_mb": rss.get(name), "rounds": list(rounds.values()),
                   "errors": sum(r["errors"] for r in rounds.values()), "median": {}, "min": {}, "max": {},
                   "vs_haproxy": {}}
            for k in FIGURES:  # the ceiling's cpu_us is None: its CPU would be the backend's
                values = [r[k] for r in rounds.values() if r[k] is not None]
                row["median"][k], row["min"][k], row["max"][k] = (
                    (statistics.median(values), min(values), max(values)) if values else (None, None, None))
            for k in RATIOS:
                ratios = [rounds[i][k] / base[i][k] for i in rounds
                          if i in base and rounds[i][k] is not None and base[i][k]]
                if ratios and t.role != "ceiling":
                    row["vs_haproxy"][k] = {"median": statistics.median(ratios), "min": min(ratios),
                                            "max": max(ratios)}
            if t.hops:  # each hop's share: the median over rounds
                row["median_hops"] = {hop: statistics.median(r["cpu_us_hops"][hop] for r in rounds.values())
                                      for hop in t.hops}
            systems.append(row)
        loads.append({"name": ld.name, "kind": ld.kind, "describe": ld.describe, "systems": systems})
    return {"name": scenario.name, "title": scenario.title, "setup": scenario.setup,
            "pinned": scenario.pinned, "loads": loads}


def in_order(report):
    """Each table's rows in ROLE_ORDER, as the Markdown and the charts show them."""
    for s in report["scenarios"]:
        for ld in s["loads"]:
            ld["systems"].sort(key=lambda row: ROLE_ORDER.index(row["role"]))
    return report


def markdown(report):
    meta = report["meta"]
    out = [f"# Knoxy against its peers ({meta['date']}, {meta['commit']})", ""]
    out += [f"`{meta['command']}`: {meta['rounds']} rounds of {meta['secs']} s per system and load, the systems "
            "in a new random order each round; each figure is the median over rounds, with its min-max in "
            "brackets; ratios to HAProxy are taken within each round, then the median. CPU per request is the "
            "utime+stime of the system's own processes (from `/proc/PID/stat`) over its run, divided by the "
            "requests answered. Peak RSS is VmHWM, summed over the system's processes.", ""]
    out += [f"- Machine: {meta['cpus']} × {meta['cpu_model']}, Linux {meta['kernel']}, {meta['memory']}.",
            f"- Pinning: {meta['pinning']}.",
            "- Tools: " + ", ".join(f"{k} {v}" for k, v in meta["tools"].items()) + ".",
            f"- Took {meta['took_s'] / 60:.1f} minutes.", ""]
    if report.get("charts"):
        out += [" ".join(f"![{title}]({path})" for title, path in report["charts"]), ""]
    out += _headline(report)
    for s in report["scenarios"]:
        out += [f"## {s['title']}", "", s["setup"] + ("" if s["pinned"] else " Nothing pinned."), ""]
        for ld in s["loads"]:
            out += [f"{ld['describe']}.", "",
                    "| system | req/s | × HAProxy | p50 ms | p90 ms | p99 ms | p99 × HAProxy | max ms "
                    "| CPU µs/req | CPU × HAProxy | peak RSS MB | errors |",
                    "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for row in ld["systems"]:
                med, lo, hi, vs = row["median"], row["min"], row["max"], row["vs_haproxy"]
                spread = lambda k, f: f"{f(med[k])} [{f(lo[k])}-{f(hi[k])}]" if med[k] is not None else "—"
                ratio = lambda k: (f"{vs[k]['median']:.2f} [{vs[k]['min']:.2f}-{vs[k]['max']:.2f}]" if k in vs
                                   else "—")
                name = row["name"] + (" (ceiling)" if row["role"] == "ceiling" else "")
                hops = row.get("median_hops")
                cpu = spread("cpu_us", _one) + (" (" + ", ".join(f"{h} {_one(v)}" for h, v in hops.items()) + ")"
                                                 if hops else "")
                out.append(f"| {name} | {spread('rps', _int)} | {ratio('rps')} | {_ms(med['p50'])} | "
                           f"{_ms(med['p90'])} | {spread('p99', _ms)} | {ratio('p99')} | {_ms(med['max'])} | "
                           f"{cpu} | {ratio('cpu_us')} | "
                           f"{_one(row['rss_mb']) if row['rss_mb'] else '—'} | {row['errors']} |")
            out.append("")
    for own in report["own"]:
        out += [f"## {own['title']}", "", own["setup"], ""] + _own_table(own) + [""]
    if report.get("failed"):
        out += ["## Scenarios that failed", ""]
        out += [f"- `{f['scenario']}`: {f['error']}" for f in report["failed"]] + [""]
    out += ["## Knative's own components", "",
            "Knative's Go queue-proxy and activator cannot be installed from the registries this machine "
            "reaches, so they are not in the runs above. Figures measured elsewhere, as published:", "",
            "- Knative's queue-proxy, measured on the real binary on this machine kind, spends about 8x HAProxy's "
            "CPU per proxied request and adds milliseconds of p99 (the figure the project's brief gives; beside it "
            "knoxy-queue's ratio is in the first table). Public reports of the same: knative/serving#15627 (fewer "
            "requests/s through the queue-proxy than straight to the container, `hey -c 70`) and #10085.",
            "- Knative's activator probes a pod that turned ready on a 200 ms tick "
            "(knative/serving pkg/activator/net/revision_backends.go), so a cold start waits up to 200 ms "
            "after the pod is ready; Knoxy's cold-start figure above is the same wait.", ""]
    return "\n".join(out)


def _headline(report):
    """One line per scenario: Knoxy's first system against HAProxy, closed loop."""
    lines = []
    for s in report["scenarios"]:
        for ld in s["loads"]:
            for knoxy in (r for r in ld["systems"] if r["role"] == "knoxy" and r["vs_haproxy"]):
                vs = knoxy["vs_haproxy"]
                lines.append(f"| {s['title']} | {ld['name']} | {knoxy['name']} | " + " | ".join(
                    f"{vs[k]['median']:.2f}" if k in vs else "—" for k in ("rps", "cpu_us", "p99")) + " |")
    if not lines:
        return []
    return (["## At a glance: Knoxy ÷ HAProxy (medians of per-round ratios)", "",
             "| scenario | load | Knoxy system | req/s | CPU/req | p99 |", "|---|---|---|---|---|---|"]
            + lines + ["", "Above 1 is more requests/s, more CPU per request, a longer p99 than HAProxy.", ""])


def _own_table(own):
    f = own["figures"]
    if own["name"] == "cold-start":
        rows = ["| cold starts | p50 ms | p90 ms | p99 ms | max ms | burst | answered 200 | failed | burst took |",
                "|---|---|---|---|---|---|---|---|---|",
                f"| {len(own['samples_ms'])} | {f['p50']:.2f} | {f['p90']:.2f} | {f['p99']:.2f} | {f['max']:.2f} | "
                f"{f['burst']} | {f['burst_ok']} | {f['burst_failed']} | {f['burst_ms']:.0f} ms |"]
        if own.get("local"):
            spread = lambda xs: f"{statistics.median(xs):.1f} ms [{min(xs):.1f}-{max(xs):.1f}]"
            rows += ["", "The whole cold start in `knoxy local` (`bench/knoxybench/local.py`: knoxy-helloworld behind "
                     "knoxy-queue, both started as processes; stable window 6 s, scale-to-zero grace 2 s), "
                     f"{len(own['local']['whole_ms'])} requests each sent at zero, median [min-max]:", "",
                     "| request at zero to response | instance ready to response |", "|---|---|",
                     f"| {spread(own['local']['whole_ms'])} | {spread(own['local']['ready_to_answer_ms'])} |"]
        return rows
    if own["name"] == "reload":
        rows = ["| system | new host served after: median, max | each, ms | req/s | p50 ms | p99 ms | max ms "
                "| CPU µs/req | peak RSS MB | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, fig in f.items():
            waits = ", ".join(f"{w:.0f}" for w in fig["samples_ms"])
            rows.append(f"| {name} | {fig['served_p50']:.0f} ms, {fig['served_max']:.0f} ms | {waits} | "
                        f"{_int(fig['rps'])} | {_ms(fig['p50'])} | {_ms(fig['p99'])} | {_ms(fig['max'])} | "
                        f"{_one(fig['cpu_us'])} | {_one(fig['rss_mb'])} | {fig['errors']} |")
        return rows
    rows = ["| command | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | knoxy local CPU µs/req | errors |",
            "|---|---|---|---|---|---|---|---|---|"]
    for fig in f.values():
        rows.append(f"| `{fig['command']}` | {fig['requests']} | {_int(fig['rps'])} | {_ms(fig['p50'])} | "
                    f"{_ms(fig['p90'])} | {_ms(fig['p99'])} | {_ms(fig['max'])} | {_one(fig['cpu_us'])} | "
                    f"{fig['errors']} |")
    return rows


def _int(v):
    return f"{v:,.0f}"


def _one(v):
    return f"{v:.1f}"


def _ms(v):
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"
