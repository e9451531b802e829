"""Figures and tables to whatever Lightning loggers a run has, each through that logger's own API.

TensorBoard: ``add_figure`` / ``add_text`` (a markdown table). CSV: PNG and CSV files beside ``metrics.csv``
(``<tag>-step<N>.png``, ``/`` in a tag written as ``_``). MLflow: the client's ``log_figure`` / ``log_table``
(run artifacts ``<tag>/step_<N>.png`` / ``.json``). W&B: ``log_image`` / ``log_table``. Any other logger: the CSV
logger's files in the run folder, with a one-time warning naming the logger, so nothing is dropped silently.
Called on global rank zero only (none of this is a collective).
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.utilities.rank_zero import rank_zero_warn

_warned: set[str] = set()


def run_folder_of(trainer) -> Path:
    """The run's folder without a collective: the TensorBoard/CSV logger's ``version_N``, else the folder holding
    ``checkpoints/`` (``shala_pl.cli.settle_run_paths`` places it there for loggers with no folder of their own)."""
    logger = trainer.logger
    if type(logger).__name__ in ("TensorBoardLogger", "CSVLogger"):
        return Path(logger.log_dir)
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath and Path(checkpoint.dirpath).name == "checkpoints":
        return Path(checkpoint.dirpath).parent
    return Path(trainer.default_root_dir)


def log_figure(trainer, tag: str, figure, step: int) -> None:
    """``figure`` (matplotlib) to every logger of ``trainer``, then closed."""
    import matplotlib.pyplot as plt

    try:
        for logger in trainer.loggers:
            kind = type(logger).__name__
            if kind == "TensorBoardLogger":
                logger.experiment.add_figure(tag, figure, step, close=False)
            elif kind == "MLFlowLogger":
                logger.experiment.log_figure(logger.run_id, figure, f"{tag}/step_{step:06d}.png")
            elif kind == "WandbLogger":
                logger.log_image(key=tag, images=[figure], step=step)
            else:
                figure.savefig(_file_beside_logs(trainer, logger, tag, step, ".png"), dpi=100)
    finally:
        plt.close(figure)


def log_table(trainer, tag: str, columns: list[str], rows: list[list], step: int) -> None:
    """A table (``rows`` of values in ``columns`` order) to every logger of ``trainer``."""
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "TensorBoardLogger":
            logger.experiment.add_text(tag, markdown_table(columns, rows), step)
        elif kind == "MLFlowLogger":
            data = {column: [row[i] for row in rows] for i, column in enumerate(columns)}
            logger.experiment.log_table(logger.run_id, data, f"{tag}/step_{step:06d}.json")
        elif kind == "WandbLogger":
            logger.log_table(key=tag, columns=list(columns), data=[list(row) for row in rows], step=step)
        else:
            with open(_file_beside_logs(trainer, logger, tag, step, ".csv"), "w", newline="") as out:
                writer = csv.writer(out)
                writer.writerow(columns)
                writer.writerows(rows)


def markdown_table(columns: list[str], rows: list[list]) -> str:
    cell = lambda value: str(value).replace("|", "/").replace("\n", " ").strip()  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _file_beside_logs(trainer, logger, tag: str, step: int, suffix: str) -> Path:
    kind = type(logger).__name__
    if kind != "CSVLogger" and kind not in _warned:
        _warned.add(kind)
        rank_zero_warn(f"{kind} has no figure/table API known to shala_pl: figures and tables are written as files "
                       f"in {run_folder_of(trainer)}")
    folder = Path(logger.log_dir) if kind == "CSVLogger" else run_folder_of(trainer)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{tag.replace('/', '_')}-step{step:06d}{suffix}"
