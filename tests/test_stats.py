"Statistics helpers (cai_repro.stats) that the figures lean on: Student t intervals and Elo's pairwise probabilities."
import math

import numpy as np
import pytest

from cai_repro.stats import pairwise_from_scores, t_interval, t_quantile


@pytest.mark.parametrize("q,df,want", [(0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 4, 2.7764), (0.975, 10, 2.2281),
                                       (0.95, 7, 1.8946), (0.995, 3, 5.8409), (0.975, 120, 1.9799)])
def test_t_quantile_matches_tables(q, df, want):
    assert t_quantile(q, df) == pytest.approx(want, abs=2e-4)
    assert t_quantile(1 - q, df) == pytest.approx(-want, abs=2e-4)


def test_t_interval_covers_at_its_level_where_the_normal_one_does_not():
    "With 4 values a t interval covers the true mean ~95% of the time; ±1.96 SE covers far less (about 88%)."
    rng = np.random.default_rng(0)
    t_hits = z_hits = 0
    for _ in range(4000):
        x = rng.normal(1.0, 2.0, 4)
        m, lo, hi = t_interval(x)
        t_hits += lo <= 1.0 <= hi
        se = x.std(ddof=1) / 2
        z_hits += m - 1.96 * se <= 1.0 <= m + 1.96 * se
    assert 0.93 < t_hits / 4000 < 0.97
    assert z_hits / 4000 < 0.91


def test_t_interval_edge_cases():
    assert math.isnan(t_interval([2.0])[1]) and t_interval([2.0])[0] == 2.0
    assert all(math.isnan(v) for v in t_interval([]))
    assert t_interval([1.0, None, float("nan"), 3.0])[0] == 2.0  # missing values left out
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_pairwise_votes_need_no_temperature():
    scores = np.array([[1.0, 0.0, 1.0], [0.2, 0.3, 0.1]])
    votes = pairwise_from_scores(scores, tau=0)
    assert votes[0] == [(0, 1, 1.0), (0, 2, 0.5), (1, 2, 0.0)] and [p for *_, p in votes[1]] == [0.0, 1.0, 1.0]
    # a large τ (a judge with no signal) makes every comparison nearly a coin flip
    assert all(abs(p - 0.5) < 1e-3 for *_, p in pairwise_from_scores(scores, tau=1000)[0])
