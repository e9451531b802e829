"""Callbacks the CLI always installs.

- :class:`JsonlPredictionWriter`: ``predict`` output as JSON lines.
- :class:`ReproducibleRNG`: per-rank seeding at the start of training and the global RNG states (torch, CUDA,
  numpy, python) in every checkpoint, restored on resume: Lightning restores neither.
- :class:`GracefulInterrupt`: SIGTERM, or a first Ctrl-C, stops training after the current step and writes a
  resumable ``last.ckpt``.
- :class:`StepProgressBar`: the console's training bar, in optimizer steps, with the reward and validation JSD.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import threading
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

log = logging.getLogger(__name__)


class JsonlPredictionWriter(BasePredictionWriter):
    """``predict`` writes one JSON object per example: uid, probs (source label order), predicted_label, human
    distribution and, when sampling, the sampled answers. One file per rank under DDP (``.rank1`` ...)."""

    def __init__(self, path: Optional[str] = None):
        super().__init__(write_interval="batch")
        self.path = path
        self._file = None

    def _output_path(self, trainer) -> Path:
        path = Path(self.path) if self.path else Path(trainer.log_dir or ".") / "predictions.jsonl"  # the CLI sets it
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


# -- RNG state ----------------------------------------------------------------------------------------------------------
def capture_rng_state() -> dict[str, torch.Tensor]:
    """This process's global RNG states as plain tensors (checkpoint-safe under ``torch.load(weights_only=True)``)."""
    _, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    _, python_state, python_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": torch.tensor([int(pos), int(has_gauss)], dtype=torch.int64),
        "numpy_gauss": torch.tensor([float(cached_gauss)], dtype=torch.float64),
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": torch.tensor([math.nan if python_gauss is None else float(python_gauss)], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, torch.Tensor]) -> None:
    # clone(): a rank's row of the gathered states is a view at a storage offset, and torch (2.13, CPU) segfaults
    # in set_rng_state on such a view (torch.set_rng_state(torch.stack([s, s])[1]))
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8).clone())
    pos, has_gauss = (int(x) for x in state["numpy_pos"].tolist())
    np.random.set_state(("MT19937", state["numpy_keys"].cpu().numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_gauss"])))
    python_gauss = float(state["python_gauss"])
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()),
                     None if math.isnan(python_gauss) else python_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu().to(torch.uint8).clone())


def seed_process(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python without touching ``PL_GLOBAL_SEED``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ReproducibleRNG(Callback):
    """Rollouts seeded differently on every rank, reproducibly, and resumed exactly.

    ``seed_everything`` (the CLI's ``seed_everything``) gives every rank the same seed, and Lightning's DDP set-up
    re-seeds each rank with it: every rank would draw the same random numbers for its rollouts. At the start of
    training this re-seeds rank r with ``seed + r`` (when a seed was set), after the model is built and
    wrapped, so parameter initialisation is unaffected (DDP broadcasts rank 0's anyway).

    Checkpoints carry every rank's torch/CUDA/numpy/python RNG state (gathered; tensors only); a resumed run
    restores its rank's state at the start of training, after Lightning's own set-up has consumed randomness, so
    the continued run draws the same numbers as an uninterrupted one. A resume with a different world size re-seeds
    instead (with a warning).
    """

    def __init__(self, seed_by_rank: bool = True):
        self.seed_by_rank = seed_by_rank
        self._loaded: Optional[dict] = None
        self._trainer = None

    def state_dict(self) -> dict:
        state = capture_rng_state()
        world_size = self._world_size()
        if world_size > 1:  # every rank calls save_checkpoint; only rank 0 writes the file
            strategy = self._trainer.strategy
            device = strategy.root_device
            state = {k: strategy.all_gather(v.to(device)).cpu() for k, v in state.items()}
        else:
            state = {k: v.unsqueeze(0) for k, v in state.items()}
        return {"world_size": world_size, "rng": state}

    def load_state_dict(self, state_dict: dict) -> None:
        self._loaded = state_dict

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def _world_size(self) -> int:
        trainer = self._trainer
        if trainer is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return 1
        return trainer.world_size

    def on_train_start(self, trainer, pl_module) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is not None and int(loaded.get("world_size", 1)) == trainer.world_size:
            restore_rng_state({k: v[trainer.global_rank] for k, v in loaded["rng"].items()})
            return
        if loaded is not None:
            rank_zero_warn(f"the checkpoint's RNG states are for {loaded.get('world_size')} processes, this run has "
                           f"{trainer.world_size}: re-seeding instead of restoring (rollouts will differ)")
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is not None and self.seed_by_rank:
            seed_process(int(seed) + trainer.global_rank)


# -- graceful interruption ------------------------------------------------------------------------------------------
class GracefulInterrupt(Callback):
    """SIGTERM (schedulers, ``kill``) or a first Ctrl-C: finish the current step, write ``last.ckpt``, stop.

    Lightning 2.6 handles SIGTERM by setting ``trainer.received_sigterm``; the loops raise ``SIGTERMException``
    after the current training batch (under DDP rank 0's signal is broadcast, so all ranks stop at the same
    batch) and call every callback's ``on_exception``, but nothing is saved by default. This callback saves there,
    into the ``checkpoint`` callback's ``last.ckpt`` (resume with ``--ckpt_path last`` or that path). It saves
    nothing for other exceptions: after ``NonFiniteTrainingError`` the last good checkpoint stays as it is.

    A first Ctrl-C is turned into the same graceful stop; a second one aborts at once (Lightning's
    KeyboardInterrupt path) without saving, because it can land half-way through an update.
    """

    def __init__(self, catch_sigint: bool = True):
        self.catch_sigint = catch_sigint
        self._previous_sigint = None
        self.saved_path: Optional[str] = None
        self.signum: Optional[int] = None  # the signal that stopped training (SIGINT or SIGTERM), if any
        self.aborted = False  # a second Ctrl-C: stopped at once, nothing saved

    @property
    def exit_code(self) -> Optional[int]:
        """The shell's convention for a process ended by a signal (130 for SIGINT, 143 for SIGTERM), when one
        stopped training."""
        return 128 + int(self.signum) if self.signum is not None else None

    def on_train_start(self, trainer, pl_module) -> None:
        self.signum, self.aborted = None, False
        # After Lightning has installed its SIGTERM handler (just before the loops run); it restores every handler
        # it found, SIGINT's included, when the run ends, normally or not.
        if self.catch_sigint and threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._on_sigint)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore_sigint()

    def _on_sigint(self, signum, frame) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C raises KeyboardInterrupt
        sigterm_handler = signal.getsignal(signal.SIGTERM)
        if not callable(sigterm_handler):  # Lightning's handler is not installed (yet): behave like Ctrl-C
            raise KeyboardInterrupt
        rank_zero_info("\nCtrl-C: stopping after the current step and writing a resumable checkpoint "
                       "(press Ctrl-C again to abort without saving)")
        self.signum = signal.SIGINT
        sigterm_handler(signal.SIGTERM, frame)

    @staticmethod
    def last_checkpoint_path(trainer) -> Path:
        callback = trainer.checkpoint_callback
        if callback is not None and callback.dirpath:
            name = (callback.CHECKPOINT_NAME_LAST or "last") + callback.FILE_EXTENSION
            return Path(callback.dirpath) / name
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore_sigint()
        if isinstance(exception, KeyboardInterrupt):
            self.signum, self.aborted = signal.SIGINT, True
            return
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        if self.signum is None:
            self.signum = signal.SIGTERM
        if trainer.sanity_checking:
            return
        path = self.last_checkpoint_path(trainer)
        if trainer.is_global_zero and path.is_symlink():  # save_last="link": never write through the link
            path.unlink()
        trainer.save_checkpoint(path, weights_only=False)  # the full resumable state (and no notice about it)
        self.saved_path = str(path)
        by = "Ctrl-C" if self.signum == signal.SIGINT else "SIGTERM"
        rank_zero_info(f"interrupted by {by} at step {trainer.global_step}: resumable checkpoint {path}; continue "
                       f"with the same command and --ckpt_path last (exit status {self.exit_code})")


class _DropSigtermNotice(logging.Filter):
    """Lightning logs "Received SIGTERM: 15" also for a Ctrl-C (turned into its SIGTERM path above):
    GracefulInterrupt states what happened instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Received SIGTERM" not in record.getMessage()


logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").addFilter(_DropSigtermNotice())


# -- console ----------------------------------------------------------------------------------------------------------
class StepProgressBar(TQDMProgressBar):
    """One training bar for the whole run, counted in optimizer steps against ``max_steps`` (``60/150``, also
    right after a resume), showing the latest mean reward (the loss for supervised methods) and the last validation
    JSD. Lightning's default counts batches per epoch (``Epoch 1/-2``, ``60/28`` on resume) and shows ``v_num``."""

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None)
        bar.set_description("step")
        bar.initial = trainer.global_step  # a resumed run: its rate counts only the steps it takes
        _update_n(bar, trainer.global_step)
        bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_start(self, trainer, *_) -> None:
        """The bar spans epochs: nothing to reset."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            _update_n(bar, trainer.global_step)
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer, pl_module) -> dict[str, str]:
        metrics = trainer.callback_metrics
        shown = {}
        for name, keys in (("reward", ("train/reward_mean",)), ("loss", ("train/loss",)),
                           ("val_jsd", ("val/jsd", "val/sampling/jsd"))):
            key = next((k for k in keys if k in metrics), None)
            if key is not None and not (name == "loss" and "reward" in shown):
                shown[name] = f"{float(metrics[key]):.4f}"
        return shown
