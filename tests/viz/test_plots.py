"""Plots from run folders whose episodes end at different steps (successes end early)."""

import numpy as np

from arrcoc_steer.viz.plots import Run, speed_over_time


class RaggedRun(Run):
    """A run whose random control has the shortest episodes (it succeeded fastest)."""

    def __init__(self, lengths: dict[str, list[int]], kinds: dict[str, str]):
        conditions = [{"name": n, "kind": kinds[n]} for n in lengths]
        super().__init__(path=None, results={"manifest": {"conditions": conditions, "baseline": "unsteered"},
                                             "summary": {n: {} for n in lengths}}, episodes=[])  # fmt: skip
        self._lengths = lengths

    def speeds(self, condition):
        return [np.full(n, 0.05) for n in self._lengths[condition]]


def test_speed_over_time_cuts_every_condition_to_the_shortest_episode():
    run = RaggedRun({"unsteered": [40, 60], "concept_fast": [50, 70], "random_s0": [12, 90], "random_s1": [30, 35]},
                    {"unsteered": "unsteered", "concept_fast": "concept", "random_s0": "random_control",
                     "random_s1": "random_control"})  # fmt: skip
    fig = speed_over_time(run)
    lines = fig.axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [12, 12]
