"""A strategy that trades well at one band of cutoffs only (the search tests' known best setting).

It peeks ahead on purpose: a bar whose close rises by more than ``move`` over the next ``horizon`` bars scores
``good`` (0.60, a long that wins); one whose close falls by more than ``move`` scores ``bad`` (0.45, a long that
loses); every other bar 0. With the three session cutoffs set to 0.30 (``EQUAL_CUTOFFS``: by default they differ
by segment, which would blur the band) a bar passes when its score >= 0.30 + cutoff delta, so:

* cutoff delta <= +0.15: the bad longs pass too (and take position slots): less return;
* cutoff delta in (+0.15, +0.30]: only the good longs pass: the best, the same return anywhere in the band;
* cutoff delta above +0.30: nothing passes, nothing trades.

On the synthetic market of seed 7 from 2025-03-03 (3 sessions): +1.53 % below the band, +3.22 % in it, 0 above.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.strategy import SCORE_COLUMNS, from_wide, to_wide

EQUAL_CUTOFFS = {"cutoff_open": 0.30, "cutoff_midday": 0.30, "cutoff_close": 0.30}
BEST_BAND = (0.15, 0.30)  # (exclusive, inclusive]


class OneGoodCutoff:
    name = "one_good_cutoff"
    warmup_bars = 1
    horizon = 60
    move = 0.002
    good = 0.60
    bad = 0.45

    def score_bars(self, bars: pd.DataFrame) -> pd.DataFrame:
        if bars.empty:
            return pd.DataFrame(columns=SCORE_COLUMNS)
        close = to_wide(bars, "close")
        ahead = close.shift(-self.horizon) / close - 1.0
        score = pd.DataFrame(np.where(ahead > self.move, self.good, np.where(ahead < -self.move, self.bad, 0.0)),
                             index=close.index, columns=close.columns)
        return from_wide({"score": score, "vol_spike": score * 0.0}, bars)
