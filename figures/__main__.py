"""``python -m figures``: run what is missing of the embedded default sweeps, then render every figure.

    python -m figures [--results results/figures] [--out figures/out] [--only NAME ...] [--no-run]
                      [--protocol results/protocol]

The empirical figures (:mod:`figures.empirical`) are drawn from ``--protocol DIR``, else ``results/protocol`` when it
exists, else the committed CPU-scale results ``docs/results/cpu``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from simulations.arguments import OneLineParser, VersionAction
from simulations.errors import ConfigError
from simulations.provenance import recorded_command
from simulations.runfolder import RunFolder
from simulations.sweep import run_sweep

from . import dynamics, heatmaps, theory_figures  # noqa: F401 - registers the figures
from .defaults import SWEEPS
from .registry import FIGURES, SweepResults

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m figures", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "figures", help="sweep folders")
    parser.add_argument("--out", type=Path, default=ROOT / "figures" / "out", help="figure folder")
    parser.add_argument("--only", nargs="*", default=None,
                        help=f"some of: {', '.join(FIGURES)}, empirical (the protocol figures)")
    parser.add_argument("--no-run", action="store_true", help="never simulate; fail if results are missing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--protocol", type=Path, default=None,
                        help="an empirical protocol (or report) folder (default: results/protocol when it exists, "
                             "else docs/results/cpu)")
    args = parser.parse_args(argv)
    names = args.only if args.only is not None else list(FIGURES)
    if args.only and "empirical" in args.only:
        names = [n for n in args.only if n != "empirical"]
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        print(f"error: unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}", file=sys.stderr)
        return 2
    try:
        with RunFolder(args.out, "figures", marker=False) as folder:  # one writer of the figure folder at a time
            folder.begin()
            with recorded_command("figures", argv):  # the sweeps it runs record this command
                return _draw(args, names)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _draw(args, names: list[str]) -> int:
    """Run what is missing of the sweeps the figures need, then render them into ``args.out``."""
    for sweep in dict.fromkeys(s for n in names for s in FIGURES[n].sweeps):
        folder = args.results / sweep
        spec = SWEEPS[sweep]
        if args.no_run:
            if not (folder / "results.csv").exists():
                print(f"error: no results for sweep {sweep!r} in {folder}; run without --no-run",
                      file=sys.stderr)
                return 2
            continue
        start = time.perf_counter()
        summary = run_sweep(spec["base"], spec["grid"], folder, device=args.device,
                            save_coefficients=spec.get("save_coefficients", False))
        print(f"sweep {sweep}: {summary['runs']} runs ({summary['computed']} computed, "
              f"{summary['skipped']} cached) in {time.perf_counter() - start:.1f} s")
    for name in names:
        fig = FIGURES[name]
        results = {s: SweepResults(args.results / s) for s in fig.sweeps}
        paths = fig.render(results[fig.sweep] if isinstance(fig.sweep, str) else results, args.out)
        print(f"{name}: " + ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
                                      for p in paths))
    if args.only is None or "empirical" in args.only:
        from .empirical import render_protocol

        protocol = args.protocol or next((p for p in (ROOT / "results" / "protocol", ROOT / "docs" / "results" / "cpu")
                                          if (p / "summary.json").is_file()), ROOT / "results" / "protocol")
        if (protocol / "summary.json").is_file() or args.protocol is not None:
            paths = render_protocol(protocol, args.out)
            print("empirical: " + ", ".join(str(p) for p in paths))
        else:
            print(f"empirical: skipped (no {protocol / 'summary.json'}; run python -m empirical protocol on a "
                  "GPU, then python -m figures --protocol DIR)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
