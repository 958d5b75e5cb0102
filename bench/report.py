"""The JSON a benchmark writes beside its figures (and prints): what was measured, the load averages at the end
(the CPU may be shared: bench/RESULTS.md reads its ratios with them), then the results."""

import json
import os


def write_report(path, results, **setup):
    """Writes {**setup, "loadavg": ..., "results": results} to `path` (indent 2), prints it and returns it."""
    report = {**setup, "loadavg": os.getloadavg(), "results": results}
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    return report
