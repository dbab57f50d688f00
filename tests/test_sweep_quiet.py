"""A sweep's worker processes start without re-running the app (issue 17, part 6): a clean terminal.

Spawned children first run the parent's ``__main__``; under Streamlit (and AppTest) that is the app script, so
every worker used to run the whole app in bare mode and print ~60 "missing ScriptRunContext" lines and a
"to view a Streamlit app" warning. ``core.research.workers`` now starts them without it, unless the work itself
is defined in ``__main__``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

from core.research.workers import run_cells

ROOT = Path(__file__).resolve().parents[1]
MARK = "=== sweep starts ==="


def fake_main(tmp_path: Path, body: str = "") -> tuple[types.ModuleType, Path]:
    """A ``__main__`` module as Streamlit installs one: no spec, ``__file__`` the script, which leaves a line in
    a file each time it runs."""
    marker = tmp_path / "main_ran.txt"
    script = tmp_path / "page_script.py"
    script.write_text(f"with open({str(marker)!r}, 'a') as f:\n    f.write('ran\\n')\n" + body)
    module = types.ModuleType("__main__")
    module.__file__ = str(script)
    return module, marker


def runs_of(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_workers_do_not_run_the_parent_s_main_script(tmp_path):
    module, marker = fake_main(tmp_path)
    real = sys.modules["__main__"]
    sys.modules["__main__"] = module
    try:
        assert run_cells(int, ["1", "2", "3"], workers=2) == ({0: 1, 1: 2, 2: 3}, False)
        assert sys.modules["__main__"] is module  # put back as it was
    finally:
        sys.modules["__main__"] = real
    assert runs_of(marker) == 0


def test_work_defined_in_main_still_finds_it_in_the_workers(tmp_path):
    module, marker = fake_main(tmp_path, "def double(x):\n    return 2 * x\n")
    exec(compile(Path(module.__file__).read_text(), module.__file__, "exec"), module.__dict__)  # the parent ran it
    real = sys.modules["__main__"]
    sys.modules["__main__"] = module
    try:
        assert run_cells(module.double, [1, 2, 3], workers=2) == ({0: 2, 1: 4, 2: 6}, False)
    finally:
        sys.modules["__main__"] = real
    assert runs_of(marker) == 1 + 2  # the parent, then once in each worker


SCRIPT = """
    import json, sys
    from datetime import date
    from pathlib import Path
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import script_runner
    from streamlit.testing.v1 import AppTest
    from core.runtime import stop_all

    def run_app_py(main_script_path):  # every run through app.py, as tests/conftest.py does for the suite
        PagesManager.uses_pages_directory = False
        code = compile(Path(main_script_path).read_text(), main_script_path, "exec")
        exec(code, {"__name__": "__main__", "__file__": main_script_path})

    script_runner._mpa_v1 = run_app_py
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/research.py").run()
    at.date_input(key="r_start").set_value(date(2025, 3, 3))
    at.date_input(key="r_end").set_value(date(2025, 3, 3))
    at.run()
    at.slider(key="s_delta").set_value((-0.02, 0.0))
    at.selectbox(key="s_step").set_value(0.02)
    at.multiselect(key="s_cooldowns").set_value([60])
    at.selectbox(key="s_workers").set_value(2)
    print("MARK", file=sys.stderr, flush=True)
    next(b for b in at.get("form_submit_button") if b.proto.label == "Run sweep").click().run()
    rows = [len(d.value) for d in at.dataframe if "mixer_cooldown_s" in d.value.columns]
    print(json.dumps({"exception": [str(e.value) for e in at.exception], "errors": [e.value for e in at.error],
                      "rows": rows}))
    stop_all()
"""


def test_a_sweep_from_the_research_page_leaves_the_terminal_clean(tmp_path):
    env = {**os.environ, "DB_PATH": str(tmp_path / "r.db"), "ENGINE_JOBS": "0", "PYTHONPATH": str(ROOT)}
    script = tmp_path / "sweep_page.py"
    script.write_text(textwrap.dedent(SCRIPT).replace("MARK", MARK).replace("APP", repr(str(ROOT / "app.py"))))
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"exception": [], "errors": [], "rows": [2]}  # two cells, run by two worker processes
    # AppTest itself warns once when it loads the app, before the sweep; from the sweep on, nothing
    assert MARK in done.stderr
    after = done.stderr.split(MARK, 1)[1]
    for noise in ("ScriptRunContext", "streamlit run", "Session state does not function", "to view a Streamlit app"):
        assert noise not in after, after[:2000]
