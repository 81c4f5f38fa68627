"""Draws results.png: throughput by concurrency, decode, TTFT, the decode step's parts, memory, targets."""
import matplotlib

matplotlib.use("Agg")  # no display: write the PNG only
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.targets import judge  # noqa: E402

COLORS = {"float32": "tab:blue", "bfloat16": "tab:orange"}


def throughput(ax, sections) -> None:
    for dtype, s in sections.items():
        lv = s["concurrency"]["levels"]
        x = [l["clients"] for l in lv]
        ax.plot(x, [l["split_tps"] for l in lv], "o-", color=COLORS.get(dtype), label=f"split {dtype}")
        ax.plot(x, [l["baseline_tps"] for l in lv], "s--", color=COLORS.get(dtype), alpha=0.6,
                label=f"generate() batch {dtype}")
    ax.set_xscale("log", base=2)
    ax.set(title="Aggregate throughput", xlabel="concurrent clients / batch size", ylabel="tokens/s")
    ax.legend(fontsize=7)


def paired_bars(ax, sections, pick, title: str, ylabel: str, labels=("generate()", "split")) -> None:
    """Baseline and split bars side by side, one group per (dtype, item)."""
    groups = [(f"{dtype}\n{name}", base, split) for dtype, s in sections.items() for name, base, split in pick(s)]
    xs = range(len(groups))
    ax.bar([x - 0.2 for x in xs], [g[1] for g in groups], 0.4, label=labels[0], color="tab:gray")
    ax.bar([x + 0.2 for x in xs], [g[2] for g in groups], 0.4, label=labels[1], color="tab:green")
    ax.set_xticks(list(xs), [g[0] for g in groups], fontsize=7)
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize=7)


def step_parts(ax, sections) -> None:
    names = list(sections)
    parts = [("node1 layers", "node1_ms"), ("cross-node", "cross_ms"), ("node2 step", "node2_ms")]
    bottom = [0.0] * len(names)
    for label, key in parts:
        vals = [sections[n]["decode"]["step"][key] for n in names]
        ax.bar(names, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set(title="One single-stream decode step", ylabel="ms")
    ax.legend(fontsize=7)


def targets(ax, sections) -> None:
    """Each target's measured value over its limit, oriented so that >= 1 means met."""
    labels, vals, colors = [], [], []
    for dtype, s in sections.items():
        for t in judge(s):
            score = t.value / t.limit if t.at_least else (t.limit / t.value if t.value else float("inf"))
            labels.append(f"{dtype}: {t.short}")
            vals.append(min(score, 5.0))
            colors.append("tab:green" if t.met else "tab:red")
    ax.barh(labels, vals, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set(title="Targets (>= 1 is met; capped at 5)", xlabel="measured / limit, oriented")
    ax.tick_params(axis="y", labelsize=7)


def plot(results: dict, path) -> None:
    sections = results["sections"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    throughput(axes[0][0], sections)
    paired_bars(axes[0][1], sections, lambda s: [("decode", s["decode"]["baseline_tps"], s["decode"]["split_tps"])],
                "Single-stream decode", "tokens/s")
    paired_bars(axes[0][2], sections, lambda s: [(n, t["baseline_ms"], t["split_ms"]) for n, t in s["ttft"].items()],
                "Time to first token", "ms")
    step_parts(axes[1][0], sections)
    paired_bars(axes[1][1], sections, lambda s: [(r, s["memory"]["whole_bytes"] / 2**20,
                                                   s["memory"][r]["weight_bytes"] / 2**20) for r in ("node1", "node2")],
                "Weights loaded", "MiB", labels=("whole model", "node"))
    targets(axes[1][2], sections)
    fig.suptitle(f"TwinTEE split vs unsplit generate() on {results['machine']['cores']} cores "
                 f"({results['machine']['cpu']})" + (" - QUICK" if results["quick"] else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
