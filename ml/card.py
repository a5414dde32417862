"""The model card, rendered from ``ml/templates/model_card.md.j2`` (Jinja2): every number comes from the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from bp.alerts import AlertPolicy
from ml.alert_evaluation import unmet
from ml.episodes import DEFINITIONS, KINDS
from ml.evaluation import metrics_table
from ml.selection import RECALL_GOALS

TEMPLATES = Path(__file__).with_name("templates")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _ci(metric: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``value [low, high]`` of a bootstrapped metric."""
    if metric is None or metric.get("value") is None:
        return "n/a"
    if metric.get("low") is None:
        return _fmt(metric["value"], digits)
    return f"{metric['value']:.{digits}f} [{metric['low']:.{digits}f}, {metric['high']:.{digits}f}]"


def _seed_span(seeds: Sequence[int]) -> str:
    """Runs of consecutive seeds as spans: ``1042-1044, 2042-2044``; a lone seed as itself."""
    runs: list[list[int]] = []
    for seed in seeds:
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=False,  # markdown, not HTML  # noqa: S701
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["pct"] = _pct
    env.filters["ci"] = _ci
    env.filters["seeds"] = _seed_span
    return env


CANDIDATES_QUALIFYING = 12  # rows of the card's candidate table: up to this many qualifying candidates ...
CANDIDATES_QUIETEST = 8  # ... and this many with the fewest false alerts (all of them are in the sidecar JSON)


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def candidate_table(selection: Mapping[str, Any]) -> dict[str, Any]:
    """The card's table of candidate policies: a column for every policy parameter that varies among the candidates
    (whatever stages added them), the out-of-fold numbers the rule used; the fewest false alerts first, the
    qualifying ones and the quietest ones and the chosen one, each row once."""
    candidates: list[Mapping[str, Any]] = selection["candidates"]
    keys = list(dict.fromkeys(k for c in candidates for k in c["policy"]))
    varying = [k for k in keys if len({repr(c["policy"].get(k)) for c in candidates}) > 1]
    chosen = selection["chosen"]["policy"]
    ranked = sorted(candidates, key=lambda c: (c["false_alerts_per_patient_week"], c.get("false_alerts_summed", 0.0)))
    rows: list[list[str]] = []
    qualifying = 0
    for rank, c in enumerate(ranked):
        qualifying += bool(c["qualifies"])
        shown = (c["qualifies"] and qualifying <= CANDIDATES_QUALIFYING) or rank < CANDIDATES_QUIETEST
        if not (shown or c["policy"] == chosen):
            continue
        row = [
            *(_value(c["policy"].get(k)) for k in varying),
            "**yes**" if c["policy"] == chosen else "",
            "yes" if c["qualifies"] else "no",
            _fmt(c["false_alerts_per_patient_week"]),
            f"{c['recall_slack']:+.3f}",
            _fmt(c.get("confirmed_crisis_alerted_critical")),  # n/a: a selection from before the confirmed share
            _fmt(c.get("crisis_critical_at_first")),  # n/a: a selection from before the crisis stage
            _fmt(c["median_delay_readings"], 1),
        ]
        if row not in rows:
            rows.append(row)
    header = [
        *(f"`{k}`" for k in varying),
        "chosen",
        "qualifies",
        "OOF false alerts /patient-week (worst schedule)",
        "smallest recall slack",
        "confirmed crisis alerted critical (worst schedule)",
        "crisis critical at its first crisis-range reading (worst schedule)",
        "median delay (readings)",
    ]
    return {
        "header": header,
        "rows": rows,
        "varying": varying,
        "fixed": {k: _value(candidates[0]["policy"].get(k)) for k in keys if k not in varying} if candidates else {},
        "qualifying": CANDIDATES_QUALIFYING,
        "quietest": CANDIDATES_QUIETEST,
    }


def goal_summary(alerts: Mapping[str, Any]) -> str:
    """One paragraph: is the goal met, and which checks fail (CLI output and model card)."""
    goal = alerts["goal"]
    failed = unmet({k: v for k, v in goal.items() if isinstance(v, dict)})
    verdict = "MET" if goal["met"] else "NOT met"
    plan = alerts["plan"]
    seeds = "held-out seeds" if plan["held_out"] else f"seeds {_seed_span(plan['seeds'])}, NOT held out"
    lines = [f"Goal (issue 13, both schedules, default and shifted profile mix, {seeds}): {verdict}."]
    if not goal["met"] and goal.get("default_mix_met"):
        lines.append("On the default mix alone (the one trained on) every check is met.")
    if failed:
        lines.append("Checks not met: " + "; ".join(failed) + ".")
    return " ".join(lines)


def model_card(metadata: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """Render the card of one training run."""
    policy = AlertPolicy.from_dict(metadata["alert_policy"])
    return (
        _environment()
        .get_template("model_card.md.j2")
        .render(
            metadata=metadata,
            params=metadata["params"],
            selection=metadata["policy_selection"],
            candidates=candidate_table(metadata["policy_selection"]),
            policy=policy,
            policy_doc=AlertPolicy.__doc__ or "",
            alerts=metrics["alerts"],
            readings=metrics["readings"],
            kinds=KINDS,
            recall_goals=RECALL_GOALS,
            definitions=DEFINITIONS,
            goal_summary=goal_summary(metrics["alerts"]),
            metrics_table=metrics_table(metrics["readings"]),
        )
    )
