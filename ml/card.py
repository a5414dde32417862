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
    """``1042-1044`` for consecutive seeds, else the list."""
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


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


def goal_summary(alerts: Mapping[str, Any]) -> str:
    """One paragraph: is the goal met, and which checks fail (CLI output and model card)."""
    failed = unmet({k: v for k, v in alerts["goal"].items() if k != "met"})
    verdict = "MET" if alerts["goal"]["met"] else "NOT met"
    plan = alerts["plan"]
    seeds = "held-out seeds" if plan["held_out"] else f"seeds {_seed_span(plan['seeds'])}, NOT held out"
    lines = [f"Goal (issue 13, default profile mix, both schedules, {seeds}): {verdict}."]
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
