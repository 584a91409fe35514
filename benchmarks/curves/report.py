"""``RESULTS.md`` rendered from ``results/*.json`` alone (a pure function of them: re-rendering changes nothing)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.curves import replay

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
#: anchors the issue names that cannot run here, with the reason (PROTOCOL.md: listed, never dropped silently)
NOT_RUN = {
    "syne-asha-promotion": "Syne Tune 0.16's ASHA only stops: `baselines.ASHA` takes no promotion type (checked "
    "on the installed 0.16.0); ASHA in promotion mode is run by hpo's own code only (`hpo-asha2`, `hpo-asha3`, "
    "tuning phase)",
}


def _ci(d: dict[str, Any], unit: str = " pp", digits: int = 2) -> str:
    if not math.isfinite(d["low"]):
        return f"{d['mean']:+.{digits}f}{unit} (n={d['n']})"
    return f"{d['mean']:+.{digits}f}{unit} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}] (n={d['n']})"


def _tasks_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "| task | configs | runs | val images | best config's test | mean config's test "
        "| surrogate error (nearest, LOO) | seed-to-seed spread | surrogate < spread |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in doc["tasks"].items():
        s = t["surrogate"]
        ok = "yes" if s["nearest_mae_pp"] < s["seed_spread_pp"] else "**no**"
        lines.append(
            f"| {name} | {t['configs']} | {t['runs']} | {t['n_val']} | {t['oracle_test']:.3f} "
            f"| {t['random_test']:.3f} | {s['nearest_mae_pp']:.2f} pp "
            f"| {s['seed_spread_pp']:.2f} pp ({s['seeded']} configs) | {ok} |"
        )
    return lines


def _choice_table(title: str, choice: dict[str, Any], what: str) -> list[str]:
    lines = [f"**{title}** ({what}; lower is better): chosen **{choice['chosen']}**", ""]
    lines += ["| candidate | mean | difference vs the current default, 95% CI |", "|---|---|---|"]
    for name, mean in sorted(choice["mean"].items(), key=lambda kv: kv[1]):
        diff = {k: 100 * v if k != "n" else v for k, v in choice["vs_current"][name].items()}
        lines.append(f"| {name} | {100 * mean:.2f} pp | {_ci(diff)} |")
    return [*lines, ""]


def tuning_section(doc: dict[str, Any]) -> list[str]:
    summary = replay.tuning_summary(doc)
    lines = [
        "## Tuning phase (tuning tasks only: they chose hpo's defaults)",
        "",
        f"From `results/tuning.json`, commit `{doc['commit']}`; tasks {', '.join(doc['tasks'])}; replay seeds "
        f"{doc['seeds'][0]}-{doc['seeds'][-1]}; {doc['workers']} workers; n_trials {doc['n_trials']}.",
        "",
        *_tasks_table(doc),
        "",
        *_choice_table("Sampler", summary["sampler"], "final test regret at n_trials, no pruner"),
        *_choice_table("Pruner", summary["pruner"], "mean test regret at 25/50/100% of B"),
    ]
    return lines


def claim_section(doc: dict[str, Any], title: str) -> list[str]:
    anchors = [a for a in doc["arms"] if not a.startswith("hpo-")]
    summary = replay.claim_summary(doc, anchors)
    lines = [
        f"## {title}",
        "",
        f"From `results/{doc['phase']}.json`, commit `{doc['commit']}`; tasks {', '.join(doc['tasks'])}; replay seeds "
        f"{doc['seeds'][0]}-{doc['seeds'][-1]} ({len(doc['seeds'])}); {doc['workers']} workers; "
        f"n_trials {doc['n_trials']}.",
        f"hpo-default: {doc['arms'].get('hpo-default')}.",
        "",
        *_tasks_table(doc),
        "",
        "**G1**: hpo-default (n_trials 20) vs the same sampler without pruning: final test accuracy within 0.3 pp "
        "(interval's lower bound >= -0.3 pp) with <= 0.5x the compute.",
        "",
        "| scope | test accuracy difference, 95% CI | compute ratio, 95% CI | verdict |",
        "|---|---|---|---|",
    ]
    scopes = [("pooled", summary["pooled"]), *summary["per_task"].items()]
    for scope, entry in scopes:
        g1 = entry["G1"]
        lines.append(
            f"| {scope} | {_ci(g1['test_gap_pp'])} | {_ci(g1['compute_ratio'], 'x', 3)} | "
            f"{'PASS' if g1['passed'] else '**FAIL**'} |"
        )
    lines += [
        "",
        "**G2**: at 25%, 50% and 100% of B, the anchor's test regret minus hpo-default's (pp; above zero: hpo "
        "better). win / tie / loss by the whole 95% interval. Pooled over the tasks:",
        "",
        "| anchor | 25% of B | 50% of B | 100% of B |",
        "|---|---|---|---|",
    ]
    for anchor, rows in summary["pooled"]["G2"].items():
        cells = [f"{r['verdict']}: {_ci(r)}" for r in rows]
        lines.append(f"| {anchor} | {' | '.join(cells)} |")
    passed = summary["pooled"]["G2_passed"]
    lines += ["", f"G2 verdict (a win against every anchor at every point): {'PASS' if passed else '**FAIL**'}", ""]
    lines += ["Anchors' settings:", ""]
    lines += [f"- `{a}`: {doc['arms'][a]}" for a in anchors]
    lines += [f"- `{a}`: **not run**: {why}" for a, why in NOT_RUN.items() if a not in doc["arms"]]
    return [*lines, ""]


def live_section(doc: dict[str, Any]) -> list[str]:
    """The live check (LIVE-PROTOCOL.md): real sweeps of hpo's defaults and Ray Tune's ASHA, against the replay
    of the same two arms at the same setting."""
    lines = [
        "## Live check: real sweeps, hpo's defaults vs Ray Tune's ASHA",
        "",
        f"From `results/live.json`, commit `{doc['commit']}` (runs in `{doc['runs']}`, made on "
        f"{', '.join(f'`{c[:10]}`' for c in doc['run_commits']) or 'no commit yet'}). Protocol: "
        f"`benchmarks/curves/LIVE-PROTOCOL.md`. {doc['n_trials']} trials per run, {doc['parallel']} at a time; "
        f"live seeds {doc['seeds'][0]}-{doc['seeds'][-1]}; replay seeds {doc['replay_seeds'][0]}-"
        f"{doc['replay_seeds'][-1]} at the same setting. d = hpo-default's final test accuracy - "
        "ray-tune-asha's (pp; above zero: hpo better).",
        "",
        "| scope | live seeds | live d, 95% CI | replay d, 95% CI | live epochs hpo / Tune | live wall hpo / Tune |",
        "|---|---|---|---|---|---|",
    ]
    for task, t in doc["per_task"].items():
        live = _ci(t["live"]) if t["live"] else "not run"
        ep, wall = t["live_epochs"], t["live_wall_s"]
        lines.append(
            f"| {task} | {len(t['live_seeds'])} | {live} | {_ci(t['replay'])} | "
            f"{ep['hpo-default']} / {ep['ray-tune-asha']} | "
            f"{wall['hpo-default']:.0f} s / {wall['ray-tune-asha']:.0f} s |"
        )
    p = doc["pooled"]
    live = f"{p['live_call']}: {_ci(p['live'])}" if p["live"] else "not run"
    lines.append(f"| pooled | {len(p['seeds'])} | {live} | {p['replay_call']}: {_ci(p['replay'])} | | |")
    verdict = doc["verdict"] if doc["verdict"] == "PASS" else f"**{doc['verdict']}**"
    lines += [
        "",
        f"Signs agree: {'yes' if doc['signs_agree'] else 'no'}; every seed run: {'yes' if doc['complete'] else 'no'}."
        f" Verdict: {verdict}.",
        "",
        "Arms:",
        "",
        *(f"- `{a}`: {s}" for a, s in doc["arms"].items()),
    ]
    return [*lines, ""]


def render() -> str:
    lines = [
        "# Learning-curve benchmark: results",
        "",
        "Generated by `python -m benchmarks.curves report` from `benchmarks/curves/results/*.json`; do not edit. "
        "Protocol: `benchmarks/curves/PROTOCOL.md` (v1). Regret = the best recorded config's test accuracy minus "
        "the incumbent's (selected on val); intervals are paired 95% t-intervals over replay seeds.",
        "",
    ]
    results = replay.RESULTS
    if (results / "tuning.json").is_file():
        lines += tuning_section(json.loads((results / "tuning.json").read_text()))
    if (results / "claim.json").is_file():
        lines += claim_section(json.loads((results / "claim.json").read_text()), "Claim phase (claim tasks)")
    if (results / "apart.json").is_file():
        lines += claim_section(json.loads((results / "apart.json").read_text()), "lfw (reported apart)")
    if (results / "live.json").is_file():
        lines += live_section(json.loads((results / "live.json").read_text()))
    return "\n".join(lines).rstrip() + "\n"


def write() -> Path:
    RESULTS_MD.write_text(render())
    return RESULTS_MD
