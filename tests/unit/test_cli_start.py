"""What a command's start costs: the CLI imports only what its parser needs."""

import os
import subprocess
import sys

from infra import cli_reports
from projections.runner import DEFAULT_PAGE_SIZE, PROJECTIONS


def test_the_cli_imports_no_projection_until_a_command_reads_one() -> None:
    # `consume` and `run` never read a view: importing the projections cost them 75 ms.
    found = subprocess.run(
        [sys.executable, "-c", "import sys, infra.cli; print(sorted(m for m in sys.modules"
         " if m.split('.')[0] in ('projections', 'kafka', 'psycopg')))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert found == "[]"


def test_the_projection_options_offer_every_projection() -> None:
    assert tuple(PROJECTIONS) == cli_reports.PROJECTION_NAMES


def test_the_page_size_option_states_the_runners_default() -> None:
    assert cli_reports.PAGE_SIZE == DEFAULT_PAGE_SIZE
    for command in ("project", "replay"):
        helped = subprocess.run(
            [sys.executable, "-m", "infra.cli", command, "--help"], capture_output=True,
            text=True, check=True, env={**os.environ, "COLUMNS": "200"}).stdout
        assert "--page-size PAGE_SIZE events per transaction (default 5000)" in " ".join(
            helped.split())
