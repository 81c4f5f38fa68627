"""Explains each missed target from measured components and the lean-path profile, never from guesses."""
from benchmarks.targets import against_generate, level


def profile_lines(p: dict) -> list[str]:
    """The in-process lean-path figures every explanation below draws on."""
    dec = {(d["batch"], d["threads"]): d for d in p["decode"]}
    lines = ["Lean path (`shared.model.run_layers` + head) in the benchmark process, no HTTP or sealing:", ""]
    for (b, t), d in sorted(dec.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lines.append(f"- decode step, batch {b}, {t} thread(s): node1 {d['node1_ms']:.1f} ms + node2 {d['node2_ms']:.1f} ms"
                     f" (of which the head {d['head_ms']:.1f} ms) = {d['total_ms']:.1f} ms "
                     f"({b * 1000 / d['total_ms']:.0f} tokens/s if the nodes ran one after the other)")
    for d in p["prefill"]:
        lines.append(f"- prefill of the long prompt, {d['threads']} thread(s): node1 {d['node1_ms']:.0f} ms + "
                     f"node2 {d['node2_ms']:.0f} ms = {d['total_ms']:.0f} ms")
    floor = p["step_weight_bytes"] / (p["bandwidth_gbs"] * 1e9) * 1e3
    lines.append(f"- memory read bandwidth with the nodes' thread count: {p['bandwidth_gbs']:.1f} GB/s; reading the "
                 f"{p['step_weight_bytes'] / 1e6:.0f} MB of weights a decode step touches (all but the embedding table) "
                 f"takes {floor:.1f} ms, the floor of a step at any batch size")
    if "batch_drift" in p:
        lines.append(f"- one sequence's logits alone vs in a batch of 8, one decode step: max |difference| "
                     f"{p['batch_drift']:.3g}" + (" (batching cannot change a stream's tokens)" if p["batch_drift"] == 0
                                                   else " (a greedy pick flips wherever the top two logits are closer)"))
    for f in p["frames"]:
        lines.append(f"- one step's frames without the network, batch {f['batch']}: serialize + seal + open + parse, "
                     f"both ways, {f['ms']:.2f} ms for {f['wire_bytes']:,} bytes")
    for o in p["ops"]:
        top = ", ".join(f"{t['op']} {t['share']:.0%}" for t in o["top"][:5])
        lines.append(f"- torch.profiler, {o['role']}'s whole step, one decode step at {o['threads']} thread(s): "
                     f"{o['step_ms']:.1f} ms of op time, matmuls {o['matmul_share']:.0%}; top ops: {top}")
    return lines


def bandwidth_line(s: dict) -> str:
    """The memory-bandwidth bound of a single stream on this machine, next to what each side reached."""
    d, p = s["decode"], s["profile"]
    gbs = p.get("bandwidth_all_gbs", p["bandwidth_gbs"])
    bound, single = gbs * 1e9 / p["step_weight_bytes"], against_generate(s["dtype"])[0]
    return (f"Memory-bandwidth bound: a token reads the {p['step_weight_bytes'] / 1e6:.0f} MB of weights a step touches "
            f"once; at the measured {gbs:.1f} GB/s (all cores) that is at most {bound:.1f} tokens/s. `generate()` "
            f"reached {d['baseline_tps']:.1f} ({d['baseline_tps'] / bound:.0%} of the bound), the split "
            f"{d['split_tps']:.1f} ({d['split_tps'] / bound:.0%}); {single:g}x `generate()` would be "
            f"{single * d['baseline_tps'] / bound:.0%} of the bound.")


def decode_bound(s: dict) -> str:
    d, st, p = s["decode"], s["decode"]["step"], s["profile"]
    single = against_generate(s["dtype"])[0]
    need = 1000 / (single * d["baseline_tps"])
    alone = next((x for x in p["decode"] if x["batch"] == 1 and x["threads"] > 1), None) or p["decode"][0]
    text = (f"**Single-stream decode** ({d['ratio']:.2f}x; {single:g}x needs a step of at most {need:.1f} ms, it takes "
            f"{st['step_ms']:.1f} ms). One stream cannot overlap the nodes: each token goes through node1's layers "
            f"({st['node1_ms']:.1f} ms), the link ({st['cross_ms']:.2f} ms) and node2's step ({st['node2_ms']:.1f} ms) "
            f"in turn, each node on every core while the other waits (a step alone in flight). The same code "
            f"in-process takes {alone['total_ms']:.1f} ms at {alone['threads']} threads (node2's head alone "
            f"{alone['head_ms']:.1f} ms). ")
    gbs = p.get("bandwidth_all_gbs", p["bandwidth_gbs"])
    need_share = single * d["baseline_tps"] * p["step_weight_bytes"] / (gbs * 1e9)
    if need_share > 0.9:
        why = (f" {single:g}x `generate()` would need the weights streamed at over 90% of the machine's bandwidth: "
               f"unreachable with the same {s['dtype']} weights" + (
                   "." if s["dtype"] == "q4_1" else "; the lever left is fewer bytes per token (bfloat16 halves "
                   "them; the model's own 4-bit blocks, TWINTEE_DTYPE=q4_1, cut them to a fifth)."))
    else:
        why = (f" Neither side is bandwidth-bound here. The stack's step is {st['step_ms'] - alone['total_ms']:.1f} ms "
               f"longer than the same compute in one process: the link, the two workers' Python and the hand-over "
               f"between two processes taking turns.")
        if s["dtype"] == "float32":
            why += (" And `generate()` multiplies a single row with MKL's GEMV, faster on this CPU than oneDNN's "
                    "packed kernels at batch 1 but summing a row differently by batch size; the split keeps oneDNN "
                    "so a stream's tokens are identical alone or batched (shared/linear.py measures both). A kernel "
                    "of our own that streams the weights once for any batch in a fixed order is the lever (issue "
                    "17's 4-bit kernel is that kernel, with a fifth of the bytes).")
    return text + bandwidth_line(s) + why


def matmul_share(p: dict) -> float:
    ops = p["ops"]
    return sum(o["matmul_share"] * o["step_ms"] for o in ops) / sum(o["step_ms"] for o in ops)


def batch_bound(s: dict) -> str:
    l8, p, eight = level(s, 8), s["profile"], against_generate(s["dtype"])[1]
    busy = l8["busy"]
    lean = next((x for x in p["decode"] if x["batch"] == 8), None)
    text = (f"**8 clients** ({l8['ratio']:.2f}x of `generate()` batch 8, needs {eight:g}x; {l8['identical']}/{l8['streams']} "
            f"streams identical). The stack ran {l8['mean_batch']:.1f} sequences per step in each slot at "
            f"{l8['step_ms']:.1f} ms a step on node1 (node2's share {l8['node2_ms']:.1f} ms); node1 kept "
            f"{busy['node1']:.2f} and node2 {busy['node2']:.2f} CPU cores busy.")
    if lean:
        text += (f" In-process a batch-8 step costs node1 {lean['node1_ms']:.1f} ms and node2 {lean['node2_ms']:.1f} ms "
                 f"(the head alone {lean['head_ms']:.1f} ms) at {lean['threads']} thread(s): with the nodes "
                 f"overlapped, the slower stage sets the pace, at most {8000 / max(lean['node1_ms'], lean['node2_ms']):.0f}"
                 f" tokens/s.")
    slow = max(busy, key=busy.get)
    if busy[slow] > 0.9:
        text += f" {slow} is saturated: it is the pipeline's bottleneck stage; the other node waits for it."
    if l8["identical"] < l8["streams"]:
        text += (f" Streams differ from their single-stream output because batching changes rounding: one "
                 f"sequence's logits alone vs in a batch of 8 differ by up to {p.get('batch_drift', float('nan')):.3g}"
                 f" (profile below).")
    return text


def ttft_bound(s: dict) -> str:
    t, pre = s["ttft"]["long"], s["profile"]["prefill"]
    by_threads = {d["threads"]: d["total_ms"] for d in pre}
    text = (f"**Long-prompt TTFT** ({t['ratio']:.2f}x of `generate()`'s {t['baseline_ms']:.0f} ms prefill, limit "
            f"1.2x). In the stack the prefill step took {t['node1_step_ms']:.0f} ms on node1 including the link, of "
            f"which node2's step {t['node2_step_ms']:.0f} ms. Prefill is compute-bound: the lean path needs "
            + ", ".join(f"{ms:.0f} ms at {th} thread(s)" for th, ms in sorted(by_threads.items()))
            + ". With one thread per node the two halves run one after the other, each on one core, so a single "
              "prefill never uses both cores while `generate()` does.")
    return text


def cross_bound(s: dict) -> str:
    st, frame = s["decode"]["step"], s["profile"]["frames"][0]
    rest = st["cross_ms"] - frame["ms"]
    return (f"**Cross-node cost** ({st['cross_ms']:.2f} ms of a {st['step_ms']:.1f} ms step = "
            f"{st['cross_ms'] / st['step_ms']:.1%}, limit 5%): link round trip {st['link_ms']:.2f} ms minus node2's "
            f"step {st['node2_ms']:.2f} ms, for {st['wire_bytes_per_token']:,.0f} bytes on the wire per token. "
            f"Serializing, sealing, opening and parsing both frames in-process takes {frame['ms']:.2f} ms, so "
            f"{rest:.2f} ms ({rest / st['cross_ms']:.0%}) is the round trip on node2's step socket (one "
            f"persistent TCP connection a pipeline slot, node2/step_socket.py) and node2's step outside its "
            f"engine. Measured by hand: a bare TCP round trip of 3 kB between two processes that compute in "
            f"turn costs ~0.3 ms (0.07 ms back to back: the rest is waking the idle side, whose code and data "
            f"a step that streamed the weights through the caches has pushed out).")


def bounds(s: dict, targets) -> list[str]:
    missed = {t.name.split(" ")[0] for t in targets if not t.met}
    out = []
    if "single-stream" in missed:
        out.append(decode_bound(s))
    if "8" in missed:
        out.append(batch_bound(s))
    if "TTFT" in missed:
        out.append(ttft_bound(s))
    if "cross-node" in missed:
        out.append(cross_bound(s))
    return out
