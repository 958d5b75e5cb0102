"""How long `deeplab --help` and each `deeplab COMMAND --help` take, and whether they print anything but argparse's
own text (bench/RESULTS.md row 42). Baseline in the same run: a bare interpreter importing TensorFlow, what every
--help cost while building a parser imported it (~3 s and TensorFlow's start-up lines).

    .venv/bin/python bench/cli_help.py [--repeats 3]

Each figure is the median wall time (and CPU time, steady under load) of `python runner.py [COMMAND] --help` in a
fresh process. Prints one JSON
object: per command seconds, foreign lines (output lines that are not the parser's format_help()), and the ratio
to the TensorFlow import.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv, repeats):
    """(median wall seconds, median CPU seconds of the child, last result): CPU time holds still on a shared
    machine where wall time grows with the load."""
    seconds, cpu, result = [], [], None
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), _cpu()
        result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        cpu.append(_cpu() - cpu_start)
    return statistics.median(seconds), statistics.median(cpu), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import runner

    baseline, baseline_cpu, _ = _timed([sys.executable, "-c", "import tensorflow"], args.repeats)
    rows = {}
    for command in [None] + list(runner.COMMANDS):
        argv = [command] if command else []
        seconds, cpu, result = _timed([sys.executable, os.path.join(REPO, "runner.py"), *argv, "--help"], args.repeats)
        own = runner.build_parser(command)
        if command:
            own = own._subparsers._group_actions[0].choices[command]
        expected = set(own.format_help().replace("runner.py", "deeplab").splitlines())
        printed = (result.stdout + result.stderr).replace("runner.py", "deeplab").splitlines()
        rows[command or "(none)"] = {
            "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 3),
            "foreign_lines": sum(1 for line in printed if line not in expected),
            "exit": result.returncode,
        }
    slowest = max(r["seconds"] for r in rows.values())
    slowest_cpu = max(r["cpu_seconds"] for r in rows.values())
    print(
        json.dumps(
            {
                "commands": rows,
                "slowest_help_s": slowest,
                "baseline_import_tensorflow_s": round(baseline, 3),
                "slowest_over_baseline": round(slowest / baseline, 3),
                "slowest_help_cpu_s": slowest_cpu,
                "baseline_import_tensorflow_cpu_s": round(baseline_cpu, 3),
                "slowest_cpu_over_baseline_cpu": round(slowest_cpu / baseline_cpu, 3),
                "foreign_lines_total": sum(r["foreign_lines"] for r in rows.values()),
                "all_under_1s": slowest < 1.0,
                "load_avg": os.getloadavg()[0],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
