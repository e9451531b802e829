"""Callbacks the CLI always installs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from lightning.pytorch.callbacks import BasePredictionWriter


class JsonlPredictionWriter(BasePredictionWriter):
    """``predict`` writes one JSON object per example: uid, probs (source label order), predicted_label, human
    distribution and, when sampling, the sampled answers. One file per rank under DDP (``.rank1`` ...)."""

    def __init__(self, path: Optional[str] = None):
        super().__init__(write_interval="batch")
        self.path = path
        self._file = None

    def _output_path(self, trainer) -> Path:
        path = Path(self.path) if self.path else Path(trainer.log_dir or ".") / "predictions.jsonl"
        if trainer.world_size > 1 and trainer.global_rank > 0:
            path = path.with_suffix(f".rank{trainer.global_rank}.jsonl")
        return path

    def on_predict_start(self, trainer, pl_module) -> None:
        path = self._output_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for row in prediction:
            self._file.write(json.dumps(row) + "\n")

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._file is not None:
            self._file.close()
            pl_module.print(f"predictions written to {self._output_path(trainer)}")
            self._file = None
