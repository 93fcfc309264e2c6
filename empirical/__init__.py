"""The GPU pipeline for the CIFAR / ResNet unlearning protocol (docs/protocol.md). Not built yet: see the project's
open issue "Empirical core on the GPU"."""


def load(folder) -> list[dict]:
    """The results of an empirical folder as a list of rows (plain dicts; no pandas needed).

    * a protocol folder (``python -m empirical protocol``) or a report folder (``python -m empirical report``): the
      rows of its ``summary.json``, one per unlearning run — ``pretrain``, ``forget``, ``method``, ``optimizer``
      (the unlearning optimizer), accuracies ``retain``/``forget_acc``/``test`` in percent, ``mia`` (fraction),
      ``tow``/``tow_mia`` (fractions; x100 on screen), ``avg_gap`` (percentage points), ``e_var``, ``e_wp``, ...
      (the file's ``units`` names each unit);
    * a run folder (``pretrain``, ``retrain`` or ``unlearn``): one row, its ``record.json`` (``config``, accuracies,
      per-epoch losses and times, ``provenance`` with the command line) with its ``metrics.json`` under ``metrics``
      (None before ``python -m empirical evaluate``).

    >>> rows = load("results/protocol")
    >>> [r["tow"] for r in rows if r["pretrain"] == "sam" and r["method"] == "neggrad"]
    """
    import json
    from pathlib import Path

    from simulations.errors import ConfigError

    folder = Path(folder)
    if (folder / "summary.json").is_file():
        return list(json.loads((folder / "summary.json").read_text())["rows"])
    if (folder / "record.json").is_file():
        record = json.loads((folder / "record.json").read_text())
        metrics = folder / "metrics.json"
        return [{**record, "metrics": json.loads(metrics.read_text()) if metrics.is_file() else None}]
    raise ConfigError(f"{folder} holds no summary.json (a protocol or report folder) or record.json (a run)")
