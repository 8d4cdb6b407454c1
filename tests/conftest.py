"""Suite-wide rules.

Strict skips: the README's setup installs every package the tests import, so a test skipped
because a package "could not be imported" means the setup is broken, not that the test does not
apply. With ``GDPO_STRICT_SKIPS=1`` (set by ``scripts/test.sh``) such skips fail the run, listed
by name. Skips for things setup cannot provide (a GPU, vLLM, ``../shared/data``) still skip.
"""

from __future__ import annotations

import os

import pytest

MISSING_PACKAGE = ("could not import", "no module named")
_missing: list[str] = []


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _record(report) -> None:
    if report.skipped and any(m in _reason(report).lower() for m in MISSING_PACKAGE):
        _missing.append(f"{report.nodeid}: {_reason(report)}")


def pytest_runtest_logreport(report):
    _record(report)


def pytest_collectreport(report):
    _record(report)


def pytest_sessionfinish(session, exitstatus):
    if _missing and os.environ.get("GDPO_STRICT_SKIPS") == "1":
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["", "strict skips: these tests skipped for a package that scripts/setup.sh installs "
                     "(fix the setup, or install the package):", *(f"  {m}" for m in _missing)]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
