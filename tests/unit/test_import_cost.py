"""The code location loads without pandas.

Every run worker and the code server import the code location at start, and that import is
part of every window's latency (a run is a fresh process). pandas alone costs ~0.3-0.7 s
to import here and is needed only on rare paths (malformed ISO times, the ODB encoder), so
it is imported there, lazily. `make bench` measures the latency this protects.
"""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import ionbeam_dagster.definitions
heavy = sorted(m for m in ("pandas", "geopandas", "xarray", "netCDF4", "pyproj") if m in sys.modules)
print(",".join(heavy))
"""


def test_loading_the_code_location_imports_no_pandas() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=120)
    heavy = [m for m in out.stdout.strip().split(",") if m]
    assert "pandas" not in heavy, (
        "importing ionbeam_dagster.definitions now imports pandas; import it inside the function "
        f"that needs it (heavy modules loaded: {heavy})"
    )
