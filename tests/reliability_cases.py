"""The table of bad inputs tried on every command line, and what each now does; ``docs/reliability.md`` is made
from it (``python tests/reliability_cases.py``), and ``tests/test_reliability.py`` runs every row. The document's last
section lists the fault tests (:func:`fault_tests`: every other test of ``test_faults.py`` and ``test_reliability.py``,
by its docstring), so a new fault test appears there once the document is regenerated, which the tests demand.

A row: ``(cli, folder, argv, words, what)``. ``cli`` is the package (``simulations``, ``empirical``, ``theory``,
``figures``); ``folder`` is what ``--out`` (written ``OUT``) holds before the call: ``none`` (does not exist),
``sweep`` (a finished tiny sweep), ``run`` (a finished ``simulations run``), ``pretrain`` (a finished smoke
pretrain on fixture data, with ``PRE`` its path), ``unlearn`` (an unlearning run of ``PRE``), ``locked`` (a tiny
sweep whose lock is held by a live process), ``locked-empty`` (a folder holding only a live process's lock).
``DATA`` is the fixture data folder. Every row must exit with status 2, print exactly one ``error:`` line
containing every word of ``words`` (and no traceback), and leave ``OUT`` byte for byte as it was (or absent, when
it was absent).
"""

from __future__ import annotations

from pathlib import Path

T = ["--set", "n=10", "--set", "d=30", "--set", "m=3", "--set", "steps=5", "--set", "unlearn_steps=3",
     "--set", "n_test=100"]  # a tiny simulation
SW = ["sweep", *T, "--no-preset-grid", "--grid", "seed=0,1"]  # the grid of the ``sweep`` folder
E = ["--preset", "smoke", "--data-root", "DATA", "--set", "device=cpu"]  # the empirical smoke recipe on fixture data

CASES: list[tuple[str, str, list[str], tuple[str, ...], str]] = [
    # ---------------------------------------------------------------- simulations: numbers
    ("simulations", "none", ["run", *T, "--set", "n=1e400"], ("n=1e400", "finite"), "n overflowing to inf"),
    ("simulations", "none", ["run", *T, "--set", "n=inf"], ("n=inf", "finite"), "n = inf"),
    ("simulations", "none", ["run", *T, "--set", "n=nan"], ("n",), "n = NaN"),
    ("simulations", "none", ["run", *T, "--set", "lr=nan"], ("lr=nan", "finite"), "lr = NaN"),
    ("simulations", "none", ["run", *T, "--set", "rho=-inf"], ("rho",), "rho = -inf"),
    ("simulations", "none", ["run", *T, "--set", "signal_strength=1e999"], ("signal_strength",), "overflow"),
    ("simulations", "none", ["run", *T, "--set", "sigma_0=0"], ("sigma_0=0", "cannot train"), "sigma_0 = 0"),
    ("simulations", "none", ["run", *T, "--set", "n=0"], ("n=0",), "n = 0"),
    ("simulations", "none", ["run", *T, "--set", "P=1"], ("P=1",), "no noise patch"),
    ("simulations", "none", ["run", *T, "--set", "label_flip=0.5"], ("label_flip",), "label_flip = 0.5"),
    ("simulations", "none", ["run", *T, "--set", "steps=-1"], ("steps",), "negative steps"),
    ("simulations", "none", ["run", *T, "--max-memory-gb", "-1"], ("--max-memory-gb", "positive"),
     "negative memory budget"),
    ("simulations", "none", ["run", *T, "--max-memory-gb", "nan"], ("--max-memory-gb",), "NaN memory budget"),
    ("simulations", "none", ["run", *T, "--max-memory-gb", "0.000001"], ("--max-memory-gb",),
     "memory refusal of run names an option run has"),
    ("simulations", "none", [*SW, "--grid", "signal_strength=0:nan:1"], ("finite",), "NaN stop of a range"),
    ("simulations", "none", [*SW, "--grid", "signal_strength=0:inf:1"], ("finite",), "inf stop of a range"),
    ("simulations", "none", [*SW, "--grid", "signal_strength=0:1:nan"], ("finite",), "NaN step of a range"),
    ("simulations", "none", [*SW, "--grid", "lr=0.1,inf"], ("lr=inf",), "inf value on a grid"),
    ("simulations", "none", [*SW, "--chunk-runs", "0"], ("--chunk-runs", "positive"), "no runs per chunk"),
    ("simulations", "none", [*SW, "--workers", "0"], ("--workers",), "no workers"),
    ("simulations", "none", [*SW, "--timeout-min", "-5"], ("--timeout-min",), "negative timeout"),
    ("simulations", "none", [*SW, "--max-memory-gb", "inf"], ("--max-memory-gb",), "inf memory budget"),
    # ---------------------------------------------------------------- simulations: grids
    ("simulations", "none", ["sweep", *T, "--grid", "d=100,200"], ("d", "both --set and --grid"),
     "--set d and --grid d"),
    ("simulations", "none", ["sweep", "--grid", "d=100", "--grid", "d=200,300"],
     ("d", "two axes"), "a repeated --grid axis"),
    ("simulations", "none", ["sweep", "--grid", "optimizer=gd,sam"], ("optimizer", "linked", "unlearn_optimizer"),
     "part of a linked preset axis on --grid"),
    ("simulations", "none", ["sweep", "--set", "optimizer=sam"], ("optimizer", "linked", "unlearn_optimizer"),
     "part of a linked preset axis on --set"),
    ("simulations", "none", ["sweep", "--grid", "optimizer+unlearn_optimizer=gd+gd",
                             "--grid", "optimizer=sam"], ("optimizer", "two axes"), "a field on two axes"),
    ("simulations", "none", [*SW, "--grid", "d=100:10:1"], ("d",), "an empty range"),
    ("simulations", "none", [*SW, "--grid", "foo=1,2"], ("foo",), "unknown grid key"),
    ("simulations", "none", ["run", "--preset", "nope"], ("nope",), "unknown preset"),
    # ---------------------------------------------------------------- simulations: folders
    ("simulations", "sweep", ["sweep", *T, "--no-preset-grid", "--grid", "seed=0,1,2"], ("another run", "--force"),
     "sweep into a folder of another grid"),
    ("simulations", "sweep", ["run", *T], ("sweep run", "not a run run"), "run into a sweep folder"),
    ("simulations", "run", [*SW], ("run run", "not a sweep run"), "sweep into a run folder"),
    ("simulations", "run", ["run", *T, "--set", "seed=3"], ("another run", "--force"),
     "run into a folder of another configuration"),
    ("simulations", "locked", [*SW], ("in use by pid",), "a second writer of one folder"),
    ("simulations", "sweep", [*SW, "--set", "rho=-0.1"], ("rho",), "bad value into a finished folder"),
    # ---------------------------------------------------------------- empirical: numbers
    ("empirical", "none", ["pretrain", *E, "--set", "lr=nan"], ("lr=nan", "finite"), "pretrain lr = NaN"),
    ("empirical", "none", ["pretrain", *E, "--set", "lr=inf"], ("lr",), "pretrain lr = inf"),
    ("empirical", "none", ["pretrain", *E, "--set", "rho=-1"], ("rho",), "negative rho"),
    ("empirical", "none", ["pretrain", *E, "--set", "epochs=0"], ("epochs",), "no epochs"),
    ("empirical", "none", ["pretrain", *E, "--set", "batch_size=1e400"], ("batch_size",), "overflow"),
    ("empirical", "none", ["pretrain", *E, "--set", "forget_size=-3"], ("forget_size",), "negative |F|"),
    ("empirical", "none", ["pretrain", *E, "--set", "val_fraction=nan"], ("val_fraction",), "NaN val fraction"),
    ("empirical", "none", ["pretrain", *E, "--set", "batch_size=100000"], ("batch_size",), "batch above the data"),
    ("empirical", "none", ["retrain", *E, "--set", "weight_decay=-inf"], ("weight_decay",), "retrain wd = -inf"),
    ("empirical", "none", ["memorization", *E, "--models", "0"], ("--models",), "no models"),
    ("empirical", "none", ["memorization", *E, "--fraction", "1.5"], ("--fraction",), "fraction above 1"),
    ("empirical", "none", ["memorization", *E, "--fraction", "nan"], ("--fraction",), "NaN fraction"),
    ("empirical", "none", ["memorization", *E, "--seed", "-1"], ("--seed",), "negative design seed"),
    ("empirical", "none", ["protocol", *E, "--methods", "nope"], ("nope",), "unknown method"),
    ("empirical", "none", ["protocol", *E, "--unlearn-set", "alpha=nan"], ("alpha",), "NaN alpha"),
    ("empirical", "none", ["protocol", *E, "--set", "lr=-1"], ("lr",), "negative lr"),
    ("empirical", "none", ["unlearn", "--from", "PRE", "--set", "lr=nan"], ("lr=nan", "finite"), "unlearn lr = NaN"),
    ("empirical", "none", ["unlearn", "--from", "PRE", "--set", "alpha=inf"], ("alpha",), "unlearn alpha = inf"),
    ("empirical", "none", ["unlearn", "--from", "PRE", "--method", "fisher"], ("fisher",), "unknown method"),
    ("empirical", "none", ["unlearn", "--from", "PRE", "--set", "batch_size=0"], ("batch_size",), "no batch"),
    ("empirical", "none", ["unlearn", "--from", "PRE", "--set", "mask_fraction=0"], ("mask_fraction",),
     "empty mask"),
    # ---------------------------------------------------------------- empirical: folders and files
    ("empirical", "pretrain", ["pretrain", *E, "--set", "forget_seed=7"], ("another run", "--force"),
     "pretrain into a finished pretrain of other settings (split.npz kept)"),
    ("empirical", "pretrain", ["pretrain", *E, "--set", "batch_size=100000"], ("another run",),
     "a refused pretrain into a finished one (split.npz kept)"),
    ("empirical", "pretrain", ["retrain", *E], ("pretrain run", "not a retrain run"), "retrain into a pretrain"),
    ("empirical", "pretrain", ["unlearn", "--from", "OUT", "--method", "ga"], ("source folder",),
     "unlearn --from R --out R"),
    ("empirical", "unlearn", ["unlearn", "--from", "PRE", "--method", "ft"], ("another run", "--force"),
     "unlearn ft over a neggrad run"),
    ("empirical", "pretrain", ["unlearn", "--from", "PRE", "--method", "ga"], ("pretrain run", "not a unlearn"),
     "unlearn into a pretrain folder"),
    ("empirical", "none", ["unlearn", "--from", "MISSING", "--method", "ga"], ("missing",), "a missing source"),
    ("empirical", "none", ["pretrain", *E, "--set", "split_file=MISSING/split.npz"], ("split",),
     "a missing split file"),
    ("empirical", "none", ["retrain", *E, "--set", "dataset=cifar100", "--set", "split_file=PRE/split.npz"],
     ("cifar10",), "a CIFAR-10 split used with CIFAR-100"),
    ("empirical", "unlearn", ["evaluate", "--run", "OUT", "--retrain", "PRE", "--out", "OUT"], ("is a folder",),
     "evaluate --out naming a folder"),
    ("empirical", "unlearn", ["evaluate", "--run", "OUT", "--retrain", "PRE", "--out", "OUT/record.json"],
     ("record.json",), "evaluate --out naming a run's own record"),
    ("empirical", "unlearn", ["evaluate", "--run", "OUT", "--retrain", "PRE", "--landscape-grid", "4"],
     ("--landscape-grid",), "an even landscape grid"),
    ("empirical", "unlearn", ["evaluate", "--run", "OUT", "--retrain", "PRE", "--wp-points", "0"],
     ("--wp-points",), "no E_Wp points"),
    # ---------------------------------------------------------------- theory and figures
    ("theory", "none", ["validate", "--preset", "tiny", "--workers", "0"], ("--workers",), "no workers"),
    ("theory", "none", ["validate", "--preset", "huge"], ("--preset",), "unknown preset"),
    ("theory", "sweep", ["validate", "--preset", "tiny"], ("sweep run", "not a validation run"),
     "validate into a sweep folder"),
    ("theory", "locked-empty", ["validate", "--preset", "tiny"], ("in use by pid",),
     "a second writer of one folder"),
    ("figures", "none", ["--only", "nope"], ("nope",), "unknown figure"),
    ("figures", "locked", ["--only", "heatmap_signal_d"], ("in use by pid",), "a second writer of the figures"),
]


def markdown() -> str:
    lines = ["# Reliability: bad inputs tried on every command line", "",
             "Generated by `python tests/reliability_cases.py` from the table that `tests/test_reliability.py` runs "
             "and from the fault tests (never edited by hand). Every row exits with status 2, prints one `error:` line "
             "(no traceback) containing the words listed, and leaves the `--out` folder byte for byte as it was "
             "(absent when it was absent).", "",
             "`OUT` holds, before the call: *none* (no folder), *sweep* / *run* (a finished tiny simulation), "
             "*pretrain* (a finished smoke pretrain, also `PRE`), *unlearn* (an unlearning run of `PRE`), *locked* "
             "(a finished sweep whose lock a live process holds), *locked-empty* (only such a lock).", "",
             f"{len(CASES)} cases.", "",
             "| # | command | OUT holds | case | arguments | the one-line error contains |",
             "|---|---|---|---|---|---|"]
    for i, (cli, folder, argv, words, what) in enumerate(CASES, 1):
        args = " ".join(argv).replace("|", "\\|")
        lines.append(f"| {i} | `python -m {cli}` | {folder} | {what} | `{args}` | "
                     + ", ".join(f"`{w}`" for w in words) + " |")
    faults = fault_tests()
    lines += ["", "## Faults", "",
              f"{len(faults)} fault tests, listed from the tests themselves (their docstring, else their name): the "
              "kill tests run `python -m simulations sweep --preset smoke` as a subprocess and kill it once its first "
              "cache chunk exists.", "",
              "| test | what it shows |", "|---|---|"]
    for where, name, what in faults:
        lines.append(f"| `{where}::{name}` | {what.replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"


FAULT_FILES = ("test_faults.py", "test_reliability.py")
NOT_FAULTS = ("test_bad_input_is_one_line_and_changes_nothing",
              "test_the_table_is_large_and_docs_are_generated_from_it")


def fault_tests() -> list[tuple[str, str, str]]:
    """``(file, test name, what it shows)`` of every fault test, read from the test files (no import): the
    docstring, else the test's name as words."""
    import ast

    found = []
    for name in FAULT_FILES:
        tree = ast.parse((Path(__file__).resolve().parent / name).read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and node.name not in NOT_FAULTS:
                doc = ast.get_docstring(node)
                what = " ".join(doc.split()) if doc else node.name[len("test_"):].replace("_", " ")
                found.append((f"tests/{name}", node.name, what))
    return found


if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
    target.write_text(markdown())
    print(f"wrote {target} ({len(CASES)} cases)")
