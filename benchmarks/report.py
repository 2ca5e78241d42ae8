"""Turn the benchmark's figures into one markdown table, the ratios and the issue's targets."""

MIB = 1024 * 1024


def format_report(results):
    """The whole report as markdown text."""
    context = results["context"]
    lines = [
        f"Model `{context['model']}` ({context['parameters']:,} parameters); "
        f"{context['images']} real JPEGs; load generator: {context['load_generator']}, "
        f"{context['seconds']} s per level; {context['machine']}; "
        f"CPU {context['idle_before']:.0%} idle just before; "
        f"load average {context['load_before']} before, {context['load_after']} after.",
        "",
        "| server | clients | requests/s | p50 ms | p99 ms | ready s | peak RSS MiB | other CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in ("service", "peer"):
        server = results.get(key)
        if not server:
            continue
        for index, level in enumerate(server["levels"]):
            extra = (f"{server['ready_seconds']:.2f} | {server['peak_rss_bytes'] / MIB:,.0f}"
                     if index == 0 else " | ")
            lines.append(f"| {server['label'] if index == 0 else ''} | {level['clients']} | "
                         f"{level['requests_per_second']:,.1f} | {level['p50_ms']:.1f} | "
                         f"{level['p99_ms']:.1f} | {extra} | {level['other_cpu_share']:.0%} |")
    service = results.get("service") or {}
    for level in service.get("v2_levels", []):
        lines.append(f"| service, /v2 infer (one binary BYTES image, top 3) | {level['clients']} | "
                     f"{level['requests_per_second']:,.1f} | {level['p50_ms']:.1f} | "
                     f"{level['p99_ms']:.1f} | | | {level['other_cpu_share']:.0%} |")
    limit = results.get("in_process")
    if limit:
        lines.append(f"| in-process limit (decode + model call, no HTTP) | 1 | "
                     f"{1000 / limit['single_p50_ms']:,.1f} | {limit['single_p50_ms']:.2f} | | | | "
                     f"{limit['other_cpu_share']:.0%} |")
        lines.append(f"| in-process limit, batches of {limit['batch_size']} (images/s) | | "
                     f"{limit['batched_images_per_second']:,.1f} | | | | | |")
    lines += ["", *format_ratios(results), "", *format_targets(results)]
    return "\n".join(lines) + "\n"


def format_ratios(results):
    """Service ÷ peer at each level, and service ÷ the in-process limit."""
    service, peer, limit = results.get("service"), results.get("peer"), results.get("in_process")
    if not service or not (peer or limit):
        return []
    lines = ["| clients | service ÷ peer (requests/s) | service ÷ in-process batched (images/s) |",
             "| ---: | ---: | ---: |"]
    peer_levels = {level["clients"]: level for level in (peer or {}).get("levels", [])}
    for level in service["levels"]:
        peer_level = peer_levels.get(level["clients"])
        versus_peer = (f"{level['requests_per_second'] / peer_level['requests_per_second']:.1f}×"
                       if peer_level else "")
        versus_limit = (f"{level['requests_per_second'] / limit['batched_images_per_second']:.0%}"
                        if limit else "")
        lines.append(f"| {level['clients']} | {versus_peer} | {versus_limit} |")
    return lines


def targets(results):
    """[(target, measured, met)] for the targets of the issue that this run can check."""
    service, peer, limit = results.get("service"), results.get("peer"), results.get("in_process")
    if not service:
        return []
    levels = {level["clients"]: level for level in service["levels"]}
    checks = []
    at_32 = levels.get(32)
    if at_32 and peer:
        peer_32 = next((level for level in peer["levels"] if level["clients"] == 32), None)
        if peer_32:
            ratio = at_32["requests_per_second"] / peer_32["requests_per_second"]
            checks.append(("32 clients: ≥ 25× the peer's requests/s", f"{ratio:.1f}×", ratio >= 25))
    if at_32 and limit:
        share = at_32["requests_per_second"] / limit["batched_images_per_second"]
        checks.append(("32 clients: ≥ 50% of in-process batched images/s", f"{share:.0%}",
                       share >= 0.5))
    if at_32:
        checks.append(("32 clients: p99 ≤ 50 ms", f"{at_32['p99_ms']:.1f} ms",
                       at_32["p99_ms"] <= 50))
    if 1 in levels and limit:
        excess = levels[1]["p50_ms"] - limit["single_p50_ms"]
        checks.append(("1 client: p50 ≤ in-process single-image latency + 1 ms",
                       f"+{excess:.2f} ms ({levels[1]['p50_ms']:.2f} ms)", excess <= 1))
    for level in service.get("v2_levels", []):
        predict = levels.get(level["clients"])
        if predict:
            ratio = level["requests_per_second"] / predict["requests_per_second"]
            checks.append((f"{level['clients']} client(s): /v2 infer within 10% of /predict's "
                           "requests/s", f"{ratio:.0%}", ratio >= 0.9))
    checks.append(("ready ≤ 1.5 s after the process starts", f"{service['ready_seconds']:.2f} s",
                   service["ready_seconds"] <= 1.5))
    checks.append(("peak RSS of all service processes ≤ 400 MiB",
                   f"{service['peak_rss_bytes'] / MIB:,.0f} MiB",
                   service["peak_rss_bytes"] <= 400 * MIB))
    return checks


def format_targets(results):
    """The targets as a markdown table."""
    checks = targets(results)
    if not checks:
        return []
    lines = ["| target | measured | met |", "| --- | ---: | :---: |"]
    lines += [f"| {name} | {measured} | {'yes' if met else '**no**'} |"
              for name, measured, met in checks]
    return lines
