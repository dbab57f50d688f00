"""The compiled kernel and ``Engine.tick`` write the same tables on bar files with holes (rows dropped, a stock
missing for an hour): no-data decisions, stale prices, bracket legs across missing bars."""

from __future__ import annotations

import pytest

from tests.kernel_parity import SEEDS, SETS, bar_file, differing_tables


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(SETS))
def test_kernel_on_a_bar_file_writes_every_table_as_engine_tick(tmp_path, seed, name):
    bars = bar_file(tmp_path, seed)
    assert differing_tables(SETS[name], seed=seed, days=2, folder=tmp_path, bars=bars) == {}
