"""What a command's start costs: the CLI imports only what its parser needs."""

import subprocess
import sys

from infra import cli_reports
from projections.runner import PROJECTIONS


def test_the_cli_imports_no_projection_until_a_command_reads_one() -> None:
    # `consume` and `run` never read a view: importing the projections cost them 75 ms.
    found = subprocess.run(
        [sys.executable, "-c", "import sys, infra.cli; print(sorted(m for m in sys.modules"
         " if m.split('.')[0] in ('projections', 'kafka', 'psycopg')))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert found == "[]"


def test_the_projection_options_offer_every_projection() -> None:
    assert tuple(PROJECTIONS) == cli_reports.PROJECTION_NAMES
