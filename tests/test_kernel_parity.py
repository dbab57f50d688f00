"""The compiled kernel and ``Engine.tick`` write the same tables: 6 seeds x 4 parameter sets on the synthetic
market (two sessions, so a day roll and positions held overnight are in every case), both decision-log forms.
The same on bar files with holes: ``test_kernel_parity_files.py``; as plain Python: ``test_kernel_plain.py``."""

from __future__ import annotations

import pytest

from tests.kernel_parity import SEEDS, SETS, differing_tables


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(SETS))
def test_kernel_writes_every_table_as_engine_tick(tmp_path, seed, name):
    decisions = "full" if seed % 3 == 0 else "summary"
    assert differing_tables(SETS[name], seed=seed, days=2, folder=tmp_path, decisions=decisions) == {}


@pytest.mark.parametrize("ticks", [173, 610, 1010])
def test_a_run_stopped_mid_session_has_every_table_of_engine_tick(tmp_path, ticks):
    """Stopped after ``ticks`` (the state a killed replay leaves): the positions' excursions so far, the
    stop-check and snapshot cadence, the token counts of the current minute are the engine's too."""
    assert differing_tables(SETS["default"], seed=4, days=2, folder=tmp_path, stop_after_ticks=ticks) == {}


def test_the_kernel_ran_most_ticks(tmp_path):
    """Parity must not come from handing every tick back: most ticks of a replay run compiled."""
    from datetime import date

    from core.config import load_settings
    from core.research.replay import run_replay

    res = run_replay(load_settings(auto_mode=True), days=2, seed=7, start=date(2025, 3, 4),
                     db_path=str(tmp_path / "k.db"))
    handed_back = sum(res.handbacks.values())
    res.store.close()
    assert 0 < handed_back < 0.2 * 2 * 780
