"""PBO by CSCV and the deflated Sharpe ratio (core.research.overfitting) on cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.research import overfitting as of

LN3 = math.log(3.0)


def test_pbo_small_case_by_hand() -> None:
    """S = 4 blocks of one session each, 3 trials A, B, C (columns); sessions 1..4 (rows):

        A = 1, 3, 2, 6     B = 2, 1, 5, 3     C = 5, 2, 1, 0.5

    Over two sessions a, b the Sharpe ratio is mean / sample std = (a + b) / (sqrt(2) |a - b|), so trials order as
    f = (a + b) / |a - b|:

        sessions  A     B      C
        {1,2}     2     3      2.333
        {3,4}     2     4      3
        {1,3}     3     2.333  1.5
        {2,4}     3     2      1.667
        {1,4}     1.4   5      1.222
        {2,3}     5     1.5    3

    The 6 in-sample halves in itertools order, the in-sample best, its rank out of sample (1 worst .. 3 best),
    w = rank / 4 and the logit ln(w / (1 - w)):

        in {1,2} best B (3);   out {3,4}: B is 3rd of 3 -> w 3/4 -> +ln 3
        in {1,3} best A (3);   out {2,4}: A rank 3      -> +ln 3
        in {1,4} best B (5);   out {2,3}: B rank 1      -> -ln 3
        in {2,3} best A (5);   out {1,4}: A rank 2      -> w 1/2 -> 0 (the median: counts as overfit)
        in {2,4} best A (3);   out {1,3}: A rank 3      -> +ln 3
        in {3,4} best B (4);   out {1,2}: B rank 3      -> +ln 3

    PBO = share of logits <= 0 = 2/6."""
    m = np.array([[1, 2, 5], [3, 1, 2], [2, 5, 1], [6, 3, 0.5]], dtype=float)
    r = of.pbo_cscv(m, blocks=4)
    assert r.combinations == 6 and r.trials == 3 and r.sessions == 4
    assert r.pbo == pytest.approx(2 / 6, abs=1e-12)
    assert r.logits == pytest.approx([LN3, LN3, -LN3, 0.0, LN3, LN3], abs=1e-12)


def test_pbo_of_pure_noise_is_near_one_half() -> None:
    # one noise matrix's PBO scatters widely (about ±0.17 here): the mean of 24 matrices on one seed is the figure
    # that must sit near 1/2; a selection that read anything real would pull it towards 0
    rng = np.random.default_rng(29)
    values = [of.pbo_cscv(rng.normal(0.0, 0.01, (320, 40))).pbo for _ in range(24)]
    assert abs(float(np.mean(values)) - 0.5) < 0.1


def test_pbo_with_one_real_edge_is_near_zero() -> None:
    rng = np.random.default_rng(7)
    m = rng.normal(0.0, 0.01, (320, 40))
    m[:, 13] += 0.004  # a Sharpe ratio of 0.4 a session where the others have none
    r = of.pbo_cscv(m)
    assert r.pbo < 0.02
    assert r.blocks == 16 and r.combinations == math.comb(16, 8)


def test_pbo_refuses_what_it_cannot_judge() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        of.pbo_cscv(np.zeros((16, 1)))
    with pytest.raises(ValueError, match="even"):
        of.pbo_cscv(np.zeros((16, 3)), blocks=5)
    with pytest.raises(ValueError, match="cannot be cut into 16 blocks"):
        of.pbo_cscv(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="finite"):
        of.pbo_cscv(np.array([[0.0, np.nan]] * 4), blocks=4)


def test_flat_trials_rank_together() -> None:
    # trials that never traded (all zero returns) have no Sharpe ratio: 0, tied, never a division by zero
    m = np.zeros((8, 3))
    r = of.pbo_cscv(m, blocks=4)
    assert r.pbo == 1.0 and all(x == 0.0 for x in r.logits)  # the first of three equal trials: the median


def test_deflated_sharpe_worked_example() -> None:
    """Bailey and López de Prado (2014), section 4's example, worked by hand with a table of the normal law.

    N = 100 trials whose annualised Sharpe ratios have variance 1/2; the best has annualised SR 2.5 over T = 1250
    daily returns (250 a year) with skew -3 and kurtosis 10.

    * per day: SR = 2.5 / sqrt(250) = 0.158114; V[SR_n] = 0.5 / 250 = 0.002, sqrt = 0.044721
    * Φ⁻¹(1 - 1/100) = 2.326348; Φ⁻¹(1 - 1/(100 e)) = Φ⁻¹(0.996321) = 2.680210
    * SR₀ = 0.044721 · (0.422784 · 2.326348 + 0.577216 · 2.680210) = 0.044721 · 2.530620 = 0.113172
      (1.789 annualised)
    * denominator: 1 - (-3)(0.158114) + (10 - 1)/4 · 0.158114² = 1 + 0.474342 + 0.056250 = 1.530592
    * z = (0.158114 - 0.113172) · sqrt(1249) / sqrt(1.530592) = 0.044942 · 35.341194 / 1.237171 = 1.283816
    * DSR = Φ(1.283816) = 0.9004 (the paper's 0.9004)."""
    assert of.expected_max_sharpe(100, 0.002) == pytest.approx(0.113172, abs=1e-6)
    dsr = of.deflated_sharpe(2.5 / math.sqrt(250), n_trials=100, var_sharpe=0.5 / 250, skew=-3.0, kurtosis=10.0,
                             sessions=1250)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_deflated_sharpe_falls_as_trials_grow() -> None:
    kw = dict(var_sharpe=0.002, skew=0.0, kurtosis=3.0, sessions=250)
    values = [of.deflated_sharpe(0.12, n_trials=n, **kw) for n in (1, 2, 5, 10, 50, 100, 1000, 10_000)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    # one trial: nothing to deflate, the probabilistic Sharpe ratio Φ(SR sqrt(T-1) / sqrt(1 + SR²/2))
    assert values[0] == pytest.approx(of._N.cdf(0.12 * math.sqrt(249) / math.sqrt(1 + 0.12 ** 2 / 2)), abs=1e-12)


def test_moments_of_a_known_sample() -> None:
    skew, kurt = of.moments([1.0, 2.0, 3.0, 4.0])
    assert skew == pytest.approx(0.0, abs=1e-12)
    assert kurt == pytest.approx(1.64, abs=1e-12)  # m4 / m2² = 2.5625 / 1.5625


def test_odds_gives_dsr_only_with_the_minimum_sample() -> None:
    rng = np.random.default_rng(3)
    short = of.odds(rng.normal(0, 0.01, (12, 6)), 0)
    assert short.dsr is None and "20 sessions" in (short.why_no_dsr or "")
    assert short.pbo is not None and short.blocks == 12
    long = of.odds(rng.normal(0, 0.01, (40, 6)), 2, n_trials=10)
    assert long.dsr is not None and long.trials == 10 and long.blocks == 16
    assert long.verdict.startswith(f"PBO {long.pbo:.2f}")


def test_verdict_words() -> None:
    assert of.verdict(0.62) == "PBO 0.62: the best setting is more likely luck than skill"
    assert "may well be luck" in of.verdict(0.3)
    assert "unlikely" in of.verdict(0.05)
    assert "n/a" in of.verdict(None)
    assert "deflated Sharpe 0.97" in of.verdict(0.1, 0.97)
