"""The odds that the best of many backtests is luck: PBO by CSCV and the deflated Sharpe ratio.

A sweep or a search tries many settings and keeps the best. The more it tries, the surer it is to find one that
looks good by chance. Two standard figures say how likely that is; both read the per-session returns of every
trial (a matrix, sessions x trials), nothing else.

**Probability of backtest overfitting** (Bailey, Borwein, López de Prado and Zhu, "The Probability of Backtest
Overfitting", Journal of Computational Finance 20(4), 2016), by combinatorially symmetric cross-validation (CSCV):

1. the T sessions are cut into S contiguous blocks of (nearly) equal length (S even; default 16);
2. for every one of the C(S, S/2) ways to choose S/2 blocks as in-sample J (the rest, J̄, out-of-sample):
   * each trial's performance R_n on J and R̄_n on J̄ (here the Sharpe ratio of its session returns, mean over
     sample standard deviation, not annualised; a trial without variance has 0);
   * n* = the in-sample best (argmax R_n; a tie goes to the first trial);
   * ω̄ = rank of R̄_{n*} among the R̄ (1 = worst, N = best; ties take their average rank) / (N + 1);
   * the logit λ = ln(ω̄ / (1 - ω̄));
3. PBO = the share of combinations with λ <= 0, i.e. where the in-sample best lands at or below the median out of
   sample (the paper's φ = ∫_{-∞}^{0} f(λ) dλ, the integral taken up to and including 0).

Pure noise gives PBO near 1/2; a trial with a real edge, PBO near 0.

**Deflated Sharpe ratio** (Bailey and López de Prado, "The Deflated Sharpe Ratio: Correcting for Selection Bias,
Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 2014):

* SR₀ = sqrt(V[SR_n]) · ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e))), the Sharpe ratio the best of N trials
  reaches by luck alone (γ = 0.5772…, the Euler-Mascheroni constant; V[SR_n] the variance of the trials' Sharpe
  ratios; SR₀ = 0 for a single trial);
* DSR = Φ( (SR - SR₀) · sqrt(T - 1) / sqrt(1 - γ₃ SR + (γ₄ - 1)/4 · SR²) ), with SR the chosen trial's Sharpe
  ratio, γ₃ the skewness and γ₄ the kurtosis (3 for normal returns) of its returns and T their number.

Every Sharpe ratio here is per session (not annualised), as the formulas take it. DSR is the probability that the
chosen setting's true Sharpe ratio is above zero after allowing for the number of trials; it is given only where
the sample reaches ``core.metrics.figures.MIN_ANNUALISED_SESSIONS`` sessions (``odds``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from statistics import NormalDist
from typing import Any

import numpy as np

from core.metrics.figures import MIN_ANNUALISED_SESSIONS

EULER_GAMMA = 0.5772156649015329
DEFAULT_BLOCKS = 16
MAX_COMBINATIONS = 20_000  # C(16, 8) = 12,870; more blocks than that would be slow and add nothing
EXPLAINED = "docs/overfitting.md"  # the short explanation the verdict links to
_N = NormalDist()


# ---------------------------------------------------------------- PBO
@dataclass(frozen=True)
class PBOResult:
    """PBO of a trial matrix: ``pbo`` in [0, 1], the logit of every combination, the blocks used and how many
    trials and sessions were read."""

    pbo: float
    logits: list[float]
    blocks: int
    trials: int
    sessions: int

    @property
    def combinations(self) -> int:
        return len(self.logits)


def _sharpe_cols(total: np.ndarray, total_sq: np.ndarray, n: Any) -> np.ndarray:
    """Per-column Sharpe (mean / sample std) from sums and sums of squares over ``n`` rows; 0 without variance."""
    mean = total / n
    var = (total_sq - n * mean * mean) / (n - 1)
    std = np.sqrt(np.clip(var, 0.0, None))
    # a variance that is rounding noise (a flat trial) has no Sharpe ratio: 0, not ±huge
    flat = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    return np.where(flat, 0.0, mean / np.where(flat, 1.0, std))


def _sharpe_rows(total: np.ndarray, total_sq: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``_sharpe_cols`` for a matrix of sums (one row per combination, ``n`` rows summed for each)."""
    return _sharpe_cols(total, total_sq, n[:, None])


def pbo_cscv(returns: Any, blocks: int = DEFAULT_BLOCKS) -> PBOResult:
    """PBO of ``returns`` (T sessions x N trials, one column per trial) by CSCV over ``blocks`` blocks (see the
    module docstring for the steps). ValueError for fewer than 2 trials, an odd or too small ``blocks``, fewer
    sessions than blocks, or a value that is not finite."""
    m = np.asarray(returns, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"the trial matrix must be 2-D (sessions x trials), not {m.ndim}-D")
    t, n = m.shape
    if n < 2:
        raise ValueError(f"PBO compares trials: it needs at least 2, not {n}")
    if blocks < 2 or blocks % 2:
        raise ValueError(f"the number of blocks must be even and at least 2, not {blocks}")
    if t < blocks:
        raise ValueError(f"{t} sessions cannot be cut into {blocks} blocks")
    if not np.isfinite(m).all():
        raise ValueError("the trial matrix has a value that is not a finite number")
    if math.comb(blocks, blocks // 2) > MAX_COMBINATIONS:
        raise ValueError(f"{blocks} blocks make {math.comb(blocks, blocks // 2):,} combinations (at most "
                         f"{MAX_COMBINATIONS:,})")
    parts = np.array_split(np.arange(t), blocks)  # contiguous: sessions keep their order within a block
    sums = np.array([m[p].sum(axis=0) for p in parts])  # blocks x trials
    sqs = np.array([(m[p] ** 2).sum(axis=0) for p in parts])
    lens = np.array([len(p) for p in parts])
    lens = lens.astype(float)
    all_sum, all_sq, all_n = sums.sum(axis=0), sqs.sum(axis=0), float(lens.sum())
    # every combination at once: a 0/1 mask of its in-sample blocks turns block sums into in-sample sums
    mask = np.zeros((math.comb(blocks, blocks // 2), blocks))
    for k, chosen in enumerate(combinations(range(blocks), blocks // 2)):
        mask[k, list(chosen)] = 1.0
    ins_n = mask @ lens
    ins_sum, ins_sq = mask @ sums, mask @ sqs  # combinations x trials
    r_in = _sharpe_rows(ins_sum, ins_sq, ins_n)
    r_out = _sharpe_rows(all_sum - ins_sum, all_sq - ins_sq, all_n - ins_n)
    best = np.argmax(r_in, axis=1)  # the first of equal bests
    v = r_out[np.arange(len(best)), best][:, None]
    # its rank out of sample, 1 = worst, ties sharing their average rank
    rank = (r_out < v).sum(axis=1) + ((r_out == v).sum(axis=1) + 1) / 2.0
    w = rank / (n + 1)
    logits = [float(x) for x in np.log(w / (1.0 - w))]
    pbo = sum(1 for lam in logits if lam <= 0.0) / len(logits)
    return PBOResult(pbo=pbo, logits=logits, blocks=blocks, trials=n, sessions=t)


def blocks_for(sessions: int, wanted: int = DEFAULT_BLOCKS) -> int | None:
    """The blocks CSCV can cut ``sessions`` into: ``wanted``, or fewer (the largest even number not above the
    sessions) for a short range; None below 4 sessions (two blocks of one session each say nothing)."""
    b = min(wanted, sessions - sessions % 2)
    return b if b >= 4 else None


# ---------------------------------------------------------------- deflated Sharpe
def sharpe_ratio(returns: Any) -> float:
    """Per-session Sharpe ratio (mean / sample standard deviation, not annualised); 0 without variance."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 2:
        return 0.0
    return float(_sharpe_cols(np.array([r.sum()]), np.array([(r * r).sum()]), len(r))[0])


def moments(returns: Any) -> tuple[float, float]:
    """(skewness, kurtosis) of returns, the population moments the paper uses (kurtosis 3 for a normal sample);
    (0, 3) without variance."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 2:
        return 0.0, 3.0
    d = r - r.mean()
    m2 = float((d ** 2).mean())
    if m2 <= 0:
        return 0.0, 3.0
    return float((d ** 3).mean() / m2 ** 1.5), float((d ** 4).mean() / m2 ** 2)


def expected_max_sharpe(n_trials: int, var_sharpe: float) -> float:
    """SR₀: the Sharpe ratio the best of ``n_trials`` independent trials with Sharpe variance ``var_sharpe``
    reaches by luck (Bailey and López de Prado 2014, eq. for E[max SR_n]); 0 for one trial."""
    if n_trials < 1:
        raise ValueError(f"the number of trials must be at least 1, not {n_trials}")
    if var_sharpe < 0:
        raise ValueError(f"a variance cannot be negative ({var_sharpe})")
    if n_trials == 1:
        return 0.0
    z1 = _N.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _N.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(var_sharpe) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe(sharpe: float, *, n_trials: int, var_sharpe: float, skew: float, kurtosis: float,
                    sessions: int) -> float:
    """DSR: the probability that the chosen trial's true Sharpe ratio is above zero, given it is the best of
    ``n_trials`` whose per-session Sharpe ratios have variance ``var_sharpe``; ``sharpe`` is its per-session Sharpe
    ratio over ``sessions`` returns with ``skew`` and ``kurtosis`` (not excess). The formula is in the module
    docstring. ValueError below 2 sessions."""
    if sessions < 2:
        raise ValueError(f"a deflated Sharpe ratio needs at least 2 returns, not {sessions}")
    sr0 = expected_max_sharpe(n_trials, var_sharpe)
    denom = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if denom <= 0:  # only for absurd moments; the probability is then undefined, not 0 or 1
        raise ValueError(f"the moments (skew {skew:g}, kurtosis {kurtosis:g}) leave no variance for SR {sharpe:g}")
    return _N.cdf((sharpe - sr0) * math.sqrt(sessions - 1) / math.sqrt(denom))


# ---------------------------------------------------------------- the odds of a sweep or a search
@dataclass
class Odds:
    """What a trader reads beside the chosen setting: PBO (None when the range is too short or there are fewer
    than 2 trials), the deflated Sharpe (None below the minimum sample) and the verdict in words."""

    pbo: float | None
    logits: list[float] = field(default_factory=list)
    blocks: int | None = None
    dsr: float | None = None
    sharpe: float | None = None  # the chosen trial's per-session Sharpe ratio
    expected_max_sharpe: float | None = None
    trials: int = 0
    sessions: int = 0
    why_no_pbo: str | None = None
    why_no_dsr: str | None = None
    verdict: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def odds(returns: Any, chosen: int, *, n_trials: int | None = None, blocks: int = DEFAULT_BLOCKS) -> Odds:
    """PBO and DSR of a set of trials (``returns``: sessions x trials) whose chosen one is column ``chosen``.
    ``n_trials``: the trials tried, when more than the columns (pruned trials were tried too, but have no full
    returns); by default the columns. A short range gets fewer blocks (``blocks_for``); PBO has no value below
    4 sessions or 2 trials, DSR none below ``MIN_ANNUALISED_SESSIONS`` sessions; each says why."""
    m = np.asarray(returns, dtype=float)
    if m.ndim != 2 or m.shape[1] == 0:
        return Odds(pbo=None, why_no_pbo="no trial has returns", why_no_dsr="no trial has returns",
                    verdict="No trial finished: nothing to judge.")
    t, n = m.shape
    tried = max(n, n_trials or n)
    out = Odds(pbo=None, trials=tried, sessions=t)
    b = blocks_for(t, blocks)
    if n < 2:
        out.why_no_pbo = "PBO compares trials: it needs at least 2 finished trials"
    elif b is None:
        out.why_no_pbo = f"PBO needs at least 4 sessions to cut into blocks; this range has {t}"
    else:
        r = pbo_cscv(m, b)
        out.pbo, out.logits, out.blocks = r.pbo, r.logits, b
    col = m[:, chosen]
    out.sharpe = sharpe_ratio(col)
    if t < MIN_ANNUALISED_SESSIONS:
        out.why_no_dsr = (f"the deflated Sharpe ratio needs ≥ {MIN_ANNUALISED_SESSIONS} sessions of returns; this "
                          f"range has {t}")
    else:
        srs = [sharpe_ratio(m[:, j]) for j in range(n)]
        var = float(np.var(srs, ddof=1)) if n > 1 else 0.0
        skew, kurt = moments(col)
        out.expected_max_sharpe = expected_max_sharpe(tried, var)
        out.dsr = deflated_sharpe(out.sharpe, n_trials=tried, var_sharpe=var, skew=skew, kurtosis=kurt,
                                  sessions=t)
    out.verdict = verdict(out.pbo, out.dsr)
    return out


def verdict(pbo: float | None, dsr: float | None = None) -> str:
    """The plain sentence beside the chosen setting, e.g. "PBO 0.62: the best setting is more likely luck than
    skill"."""
    if pbo is None:
        text = "PBO n/a: too few sessions or trials to judge whether the best setting is luck"
    elif pbo > 0.5:
        text = f"PBO {pbo:.2f}: the best setting is more likely luck than skill"
    elif pbo >= 0.2:
        text = f"PBO {pbo:.2f}: the best setting may well be luck; check it out of sample before trusting it"
    else:
        text = f"PBO {pbo:.2f}: the best setting held up out of sample in most splits, so luck is unlikely"
    if dsr is not None:
        text += (f"; deflated Sharpe {dsr:.2f}" + (" (its Sharpe ratio is probably real after the number of trials)"
                                                  if dsr >= 0.95 else " (below 0.95: not convincing after the "
                                                                      "number of trials)"))
    return text
