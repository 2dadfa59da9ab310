"""The static import-graph check: the real tree holds the layers, and the check can fail."""

from pathlib import Path
from textwrap import dedent

import pytest

from evpay.testbed import import_graph
from evpay.testbed.import_graph import check, layer_of

REPO = Path(__file__).resolve().parents[1]


def test_real_tree_has_no_layer_violations():
    report = check(REPO)
    assert report.modules > 50, "the check found too few modules: wrong root?"
    if not report.ok:
        pytest.fail("upward imports:\n" + report.format(quiet=True), pytrace=False)
    assert report.layer_cycle is None


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return root


PACKAGES = {
    "evpay/__init__.py": "",
    "terminals/__init__.py": "",
    "terminals/models.py": "T = 1\n",
    "terminals/opi/__init__.py": "",
    "terminals/migrations/__init__.py": "",
    "sessions/__init__.py": "",
    "sessions/models.py": "A = 1\n",
    "sessions/tasks.py": "from sessions import services\n",
    "sessions/services.py": "from .tasks import nothing\n",
}

UPWARD = {
    "terminals/x.py": "from sessions.models import A\n",
    "evpay/money.py": '"""Money."""\nimport sessions\n',
    "terminals/y.py": """\
        import os


        def f():
            from sessions import tasks

            return tasks, os
        """,
    "terminals/opi/z.py": "from ..models import T\n",
    "terminals/opi/w.py": "import django\nfrom django.db import models\n",
}

DOWNWARD = {
    "sessions/journal.py": "from terminals.models import T\nfrom terminals.opi import z\n",
    "sessions/views.py": "from . import models\nfrom evpay import money\n",
    "evpay/views.py": "import sessions\nfrom sessions import models\nfrom terminals.opi import w\n",
    "terminals/admin.py": "from .opi import w\nimport django\n",  # django is fine in the fleet
    # Migrations are not checked (they name apps freely).
    "terminals/migrations/0001_initial.py": "from sessions.models import A\n",
}


@pytest.fixture
def bad_tree(tmp_path):
    return _write(tmp_path, {**PACKAGES, **UPWARD, **DOWNWARD})


def _found(report):
    return {(v.path, v.line, v.imported) for v in report.violations}


def test_each_upward_import_is_reported(bad_tree):
    report = check(bad_tree)
    assert not report.ok
    found = _found(report)
    expected = {
        ("terminals/x.py", 1, "sessions.models"),  # fleet -> charging
        ("evpay/money.py", 2, "sessions"),  # base -> charging
        ("terminals/y.py", 5, "sessions.tasks"),  # function-level, Y is a submodule
        ("terminals/opi/z.py", 1, "terminals.models"),  # relative, protocol -> fleet
        ("terminals/opi/w.py", 1, "django"),  # no django in the protocol library
        ("terminals/opi/w.py", 2, "django.db"),
    }
    assert found == expected, report.format()
    reasons = {(v.path, v.line): v.reason for v in report.violations}
    assert reasons["terminals/y.py", 5] == "function-level upward: fleet -> charging"
    assert reasons["terminals/opi/z.py", 1] == "upward: protocol -> fleet"
    assert reasons["evpay/money.py", 2] == "upward: base -> charging"
    assert "django in the protocol layer" in reasons["terminals/opi/w.py", 1]


def test_downward_imports_and_migrations_are_not_reported(bad_tree):
    report = check(bad_tree)
    paths = {v.path for v in report.violations}
    assert not paths & set(DOWNWARD), report.format()
    pairs = {(s, d): n for s, d, n in report.pair_counts()}
    assert pairs["charging", "fleet"] == 1
    assert pairs["charging", "protocol"] == 1
    assert pairs["charging", "base"] == 1
    assert pairs["pages and tools", "charging"] == 2
    assert pairs["pages and tools", "protocol"] == 1


def test_clean_tree_passes(tmp_path):
    report = check(_write(tmp_path, {**PACKAGES, **DOWNWARD}))
    assert report.ok, report.format()
    assert report.layer_cycle is None
    assert "no cycle between layers" in report.format()


def test_layer_cycle_and_module_cycles(bad_tree):
    report = check(bad_tree)
    assert report.layer_cycle is not None
    assert report.layer_cycle[0] == report.layer_cycle[-1]
    assert {"protocol", "fleet", "charging", "base"} <= set(report.layers_on_cycles)
    # A cycle between modules of one package is information, not a violation.
    assert ["sessions.services", "sessions.tasks"] in report.module_cycles
    assert "sessions.services <-> sessions.tasks" in report.format()
    assert report.function_level()["terminals"] == 1


def test_main_exit_status_and_quiet(bad_tree, tmp_path_factory, capsys):
    assert import_graph.main([str(bad_tree), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "terminals/opi/z.py:1:" in out
    assert "edges between layers" not in out
    assert out.strip().splitlines()[-1].startswith("import graph FAIL: 6 violation(s)")

    clean = _write(tmp_path_factory.mktemp("clean"), {**PACKAGES, **DOWNWARD})
    assert import_graph.main([str(clean)]) == 0
    out = capsys.readouterr().out
    assert "charging -> fleet: 1" in out
    assert "VIOLATIONS: none" in out


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("evpay", "base"),
        ("evpay.money", "base"),
        ("evpay.templatetags.evpay_tags", "base"),
        ("evpay.views", "pages and tools"),
        ("evpay.testbed.import_graph", "pages and tools"),
        ("evpay.moneybox", "pages and tools"),
        ("terminals", "fleet"),
        ("terminals.gateway", "fleet"),
        ("terminals.opi", "protocol"),
        ("terminals.opi.client", "protocol"),
        ("terminals.emulator.harness", "emulator"),
        ("sessions.services.journey", "charging"),
    ],
)
def test_layer_of(module, layer):
    assert layer_of(module) == layer
