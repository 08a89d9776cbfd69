"""Is the best of a sweep at the edge of its search space? (The Tuning Playbook's first question.)

For each numeric hyperparameter, take the top ``top`` trials by score that have it; a value is at an
edge when it lies within ``margin`` (a fraction of the searched range, measured in log space for
log-scale parameters) of the lower or upper bound. A warning is raised when the best trial, or at
least two of the top trials, sit at the same edge: the optimum may lie outside the range, so widen
it before trusting the study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sweeps.experiment import Experiment
from sweeps.space import Param

__all__ = ["EdgeWarning", "edge_warnings", "position"]


@dataclass(frozen=True)
class EdgeWarning:
    param: str
    edge: str  # "lower" | "upper"
    bound: float
    count: int  # how many of the top trials sit there
    top: int  # how many top trials were looked at
    includes_best: bool
    log: bool

    def message(self) -> str:
        who = f"{self.count} of the top {self.top} trials" + (" (including the best)" if self.includes_best else "")
        scale = " in log space" if self.log else ""
        return (
            f"{self.param}: {who} lie within 5% of the {self.edge} bound {self.bound:g}{scale}; the optimum may be "
            f"outside the searched range - widen it before trusting this study"
        )


def position(param: Param, value: float) -> float:
    """Where ``value`` lies in the range: 0.0 at ``low``, 1.0 at ``high`` (log space for log params)."""
    assert param.low is not None and param.high is not None  # a numeric parameter's range
    lo, hi, v = float(param.low), float(param.high), float(value)
    if param.log:
        if v <= 0 or lo <= 0:
            return 0.0
        lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
    return (v - lo) / (hi - lo) if hi > lo else 0.5


def edge_warnings(exp: Experiment, *, top: int = 3, margin: float = 0.05) -> list[EdgeWarning]:
    if exp.space_inferred:  # the "range" is the sampled values themselves: every extreme is at an edge
        return []
    out = []
    for p in exp.params:
        if not p.numeric or p.low is None or p.high is None:
            continue
        ranked = [t for t in exp.scored if isinstance(exp.value(t, p.name), (int, float))][:top]
        if not ranked:
            continue
        pos = [position(p, exp.value(t, p.name)) for t in ranked]
        for edge, near, bound in (
            ("lower", [x <= margin for x in pos], p.low),
            ("upper", [x >= 1 - margin for x in pos], p.high),
        ):
            count = sum(near)
            if near[0] or count >= 2:
                out.append(EdgeWarning(p.name, edge, float(bound), count, len(ranked), near[0], p.log))
    return out
