"""Which metric to trust: the held-out evidence of the ranking-quality benchmark, as the product reads it.

``benchmarks/ranking_quality.py`` writes :data:`EVIDENCE` (``facezoo/evidence.json``, shipped with the package) from
its held-out tasks: per group (``all``, ``image``, ``text``), the metrics sorted by mean weighted τ, each with its
bootstrap interval over tasks and the paired interval of its difference from the best. ``facezoo rank`` and
``validate`` name the best metric of the dataset's group as their recommendation, with that evidence in one sentence,
whatever the metric is (FaCe or a baseline). Without the file, or without a held-out group for the dataset's task,
they say so and fall back to FaCe, the product's namesake.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facezoo.errors import FaceZooError

__all__ = ["EVIDENCE", "FALLBACK", "Recommendation", "recommendation"]

EVIDENCE = Path(__file__).with_name("evidence.json")
FALLBACK = "face"
_MIN_TASKS = 3  # fewer held-out tasks of a modality than this: the pooled group speaks for it


@dataclass(frozen=True)
class Recommendation:
    metric: str
    statement: str  # the evidence, one sentence a user can act on
    group: str | None = None  # the held-out group it comes from (None: no evidence)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "statement": self.statement, "group": self.group}


def _interval(values: list[float]) -> str:
    estimate, low, high = values
    return f"{estimate:+.2f} [{low:+.2f}, {high:+.2f}]"


def _significant(row: dict[str, Any]) -> bool:
    """Whether the row's paired difference from the best is significant, as the writer judged it (files written
    before it recorded that: the interval excluding 0)."""
    if "vs_best_significant" in row:
        return bool(row["vs_best_significant"])
    return bool(row.get("vs_best")) and not row["vs_best"][1] <= 0 <= row["vs_best"][2]


def recommendation(modality: str | None = None, available: set[str] | None = None,
                   path: Path | None = None) -> Recommendation:
    """The metric with the best held-out evidence for ``modality`` (``image``, ``text``; else the pooled group),
    among ``available`` metrics (default: all in the evidence), read from ``path`` (default :data:`EVIDENCE`)."""
    path = path or EVIDENCE
    fallback = FALLBACK if available is None or FALLBACK in available else min(available or {FALLBACK})
    if modality not in (None, "image", "text"):  # segmentation: the benchmark's held-out half is classification
        return Recommendation(fallback, f"no held-out evidence for {modality} tasks: {fallback} by default")
    if not path.is_file():
        return Recommendation(fallback, f"no held-out evidence is installed ({path.name}, written by "
                                        f"benchmarks/ranking_quality.py): {fallback} by default, not backed by it")
    try:
        evidence = json.loads(path.read_text())
        groups = evidence["groups"]
    except (ValueError, KeyError, TypeError) as error:
        raise FaceZooError(f"{path}: not a ranking-quality evidence file ({error})") from None
    name = modality if len(groups.get(modality, {}).get("tasks", [])) >= _MIN_TASKS else "all"
    group = groups.get(name)
    metrics = (group or {}).get("metrics", [])
    # only metrics with a τ on every task of the group compete (LEEP's mean over the tasks with source logits is no
    # evidence about the others), as the writer chose the group's best
    covered = [r for r in metrics if r.get("n_tasks", 0) == max(m.get("n_tasks", 0) for m in metrics)]
    rows = [r for r in covered if available is None or r["metric"] in available]
    if not rows:
        return Recommendation(fallback, f"no held-out evidence for {modality or 'these'} tasks: {fallback} by default")
    best, n = rows[0], len(group["tasks"])
    where = f"{n} held-out {'' if name == 'all' else name + ' '}tasks"
    top = group.get("best", covered[0]["metric"])
    if best["metric"] != top:  # the differences were measured against the group's best, not this one
        lead = f"the best of the metrics scored here ({top}, not scored, ranked higher)"
    else:  # a metric without a significant paired difference (or too few shared tasks) is not shown to be worse
        ties = [r["metric"] for r in rows[1:] if not _significant(r)]
        lead = ("ahead of every other metric, significantly (paired 95 % intervals exclude 0)" if not ties else
                f"not significantly ahead of {', '.join(ties[:4])}{' and others' if len(ties) > 4 else ''}")
    return Recommendation(
        best["metric"],
        f"{best['metric']}: mean weighted τ {_interval(best['weighted_tau'])} over {where} (budget "
        f"{evidence.get('budget', '?')}, noise ceiling {group.get('noise_ceiling', float('nan')):+.2f}); {lead}",
        name,
    )
