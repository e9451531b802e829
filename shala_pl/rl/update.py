"""One optimizer step of a manually optimised LightningModule: micro-batches, clipping, skipping.

``GRPOModule`` computes what to minimise; :class:`Update` turns a micro-batch loss into an optimizer step the way
every strategy needs it: backward per micro-batch (all-reduced only after the last, under DDP), each loss scaled
by its share of the batch, the gradients clipped with the global norm, the optimizer and LR scheduler stepped, and
a non-finite update skipped and counted (training stops after ``max_consecutive_nonfinite`` in a row).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Optional

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch import Tensor

from shala_pl import checks
from shala_pl.rl.losses import LossOutput
from shala_pl.rl.ranks import global_sum


class NonFiniteTrainingError(RuntimeError):
    pass


# the loss of the prompts in a slice of the optimizer batch, given the global normaliser (or None)
MicroBatchLoss = Callable[[slice, Optional[Tensor]], LossOutput]


class Update:
    """Optimizer steps in ``micro_batches`` backward passes, clipped to ``gradient_clip_val`` (None: measured
    only), with the non-finite skip policy. Holds the skip counters (saved in checkpoints by the module)."""

    def __init__(self, micro_batches: int, gradient_clip_val: Optional[float], max_consecutive_nonfinite: int):
        checks.positive_int("micro_batches", micro_batches)
        if gradient_clip_val is not None:
            checks.positive("gradient_clip_val", gradient_clip_val)
        checks.positive_int("max_consecutive_nonfinite", max_consecutive_nonfinite)
        self.micro_batches, self.gradient_clip_val = micro_batches, gradient_clip_val
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.consecutive_nonfinite = 0
        self.nonfinite_skipped = 0
        self._unscaled_grad_norm: Optional[Tensor] = None  # fp16: measured in before_fp16_step

    def step(self, module: LightningModule, loss_of: MicroBatchLoss, num_prompts: int,
             units: Optional[Tensor] = None) -> tuple[LossOutput, Tensor]:
        """One optimizer step over ``num_prompts`` prompts: the batch's loss terms and the global gradient norm.

        ``units``: for a loss normalised over the whole optimizer batch (``dapo``), this process's count of what
        it averages over; summed over ranks (one all-reduce) and handed to ``loss_of``, and the micro-batches'
        losses then add up. Without it (None) they are averaged by prompt count.
        """
        optimizer = module.optimizers()
        strategy = module.trainer.strategy
        global_units = global_sum(strategy, units) if units is not None else None
        bounds = torch.linspace(0, num_prompts, min(self.micro_batches, num_prompts) + 1).round().long().tolist()
        outputs, shares = [], []
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            last = i == len(bounds) - 2
            with nullcontext() if last else _no_backward_sync(strategy):
                out = loss_of(slice(lo, hi), global_units)
                shares.append(_loss_share(hi - lo, num_prompts, units is not None, module.trainer.world_size))
                module.manual_backward(out.loss * shares[-1])
            outputs.append(out)
        loss_out = _combine_loss_outputs(outputs, shares)
        scaler = grad_scaler(module)
        if scaler is None:
            grad_norm = self.clip_and_measure(module)
            stepped = bool(torch.isfinite(grad_norm))
            if stepped:
                optimizer.step()
        else:
            # fp16: Lightning unscales the gradients, calls on_before_optimizer_step (which clips them, see
            # before_fp16_step), then the scaler steps unless they overflowed and updates its scale either way
            optimizer.step()
            grad_norm = self._unscaled_grad_norm
            stepped = bool(torch.isfinite(grad_norm))
        if stepped:
            scheduler = module.lr_schedulers()
            if scheduler is not None:
                scheduler.step()
            self.consecutive_nonfinite = 0
        else:
            # under fp16 a finite loss with overflowing gradients only means the scaler lowered its scale
            overflow = scaler is not None and bool(torch.isfinite(loss_out.loss))
            self.skip_nonfinite(module, overflow=overflow)
        optimizer.zero_grad(set_to_none=True)
        return loss_out, grad_norm

    def before_fp16_step(self, module: LightningModule, optimizer) -> None:
        """The module's ``on_before_optimizer_step``: under fp16 the gradients were just unscaled, clip the true
        ones (nothing to do otherwise: ``step`` clips before stepping)."""
        scaler = grad_scaler(module)
        if scaler is not None:
            if getattr(optimizer, "_step_supports_amp_scaling", False):
                # a fused optimizer unscales inside its step, so Lightning left the gradients scaled: unscale them
                # here (the scaler then tells the step that they are)
                scaler.unscale_(optimizer)
            self._unscaled_grad_norm = self.clip_and_measure(module)

    def clip_and_measure(self, module: LightningModule) -> Tensor:
        """Clip to ``gradient_clip_val`` (None: measure only) and return the global gradient norm.

        Lightning refuses norm clipping under FSDP and manual optimization, so this does it: under FSDP(1)
        ``torch.nn.utils.clip_grad_norm_`` would only see this rank's shards, so the root FSDP module's own
        ``clip_grad_norm_`` (which all-reduces the norm) is used; DTensor parameters (FSDP2) are handled by
        ``torch.nn.utils.clip_grad_norm_`` itself. Under DeepSpeed the gradients live in the engine, which clips
        in ``step()`` by its config's ``gradient_clipping``: nothing is done here and the engine's norm of the
        previous step is returned (for logging; never non-finite, so the engine decides about skipping).
        """
        max_norm = self.gradient_clip_val if self.gradient_clip_val is not None else float("inf")
        wrapped = module.trainer.model
        if isinstance(module.trainer.strategy, DeepSpeedStrategy):
            norm = getattr(wrapped, "get_global_grad_norm", lambda: None)()
            norm = torch.as_tensor(0.0 if norm is None else float(norm), device=module.device)
            return torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))
        if _is_fsdp_root(wrapped):
            return wrapped.clip_grad_norm_(max_norm)
        parameters = [p for p in module.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm, error_if_nonfinite=False)
        # FSDP2 (ModelParallelStrategy): a DTensor whose value is the norm over all shards; the same on every rank
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def skip_nonfinite(self, module: LightningModule, overflow: bool = False) -> None:
        """Count a skipped update; stop after ``max_consecutive_nonfinite`` in a row. An fp16 gradient overflow
        (``overflow``) is counted but never stops training: the scaler has lowered its scale for the next step."""
        self.nonfinite_skipped += 1
        if overflow:
            module.print(f"fp16 gradient overflow at step {module.global_step}: update skipped, loss scale lowered")
            return
        self.consecutive_nonfinite += 1
        module.print(f"non-finite loss or gradient at step {module.global_step}: update skipped "
                     f"({self.consecutive_nonfinite} in a row)")
        if self.consecutive_nonfinite >= self.max_consecutive_nonfinite:
            raise NonFiniteTrainingError(
                f"{self.consecutive_nonfinite} consecutive non-finite updates (max_consecutive_nonfinite="
                f"{self.max_consecutive_nonfinite}); stopping. The last checkpoint holds the last good weights."
            )


def grad_scaler(module: LightningModule) -> Optional[torch.amp.GradScaler]:
    """The fp16 loss scaler of the precision plugin (``16-mixed``); None for 32-bit and bf16."""
    return getattr(module.trainer.precision_plugin, "scaler", None)


def _loss_share(prompts: int, num_prompts: int, globally_normalised: bool, world_size: int) -> float:
    """A micro-batch's factor in the optimizer batch's loss. Globally normalised (``dapo``) losses add up, times
    the world size to undo the gradient averaging of DDP, FSDP and DeepSpeed; the others are averaged by prompt
    count."""
    if globally_normalised:
        return float(world_size)
    return prompts / num_prompts


def _no_backward_sync(strategy):
    """Context for a non-final micro-batch's backward: no gradient all-reduce under DDP (``DDP.no_sync`` via
    Lightning's ``block_backward_sync``). FSDP and DeepSpeed get a no-op: FSDP reduce-scatters each micro-batch
    (its ``no_sync`` would keep full unsharded gradients, defeating the sharding) and ZeRO-2/3 partition
    gradients during backward and refuse ``no_sync``."""
    block = getattr(strategy, "block_backward_sync", None)
    return block() if block is not None else nullcontext()


def _is_fsdp_root(module) -> bool:
    if module is None:
        return False
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch without distributed support
        return False
    return isinstance(module, FullyShardedDataParallel)


def _combine_loss_outputs(outputs: list[LossOutput], shares: list[float]) -> LossOutput:
    """The optimizer batch's loss terms (each micro-batch's times its share, summed); mean clipping ratios."""
    total = lambda name: sum(share * getattr(o, name).detach() for o, share in zip(outputs, shares))  # noqa: E731
    mean = lambda name: torch.stack([getattr(o, name).detach() for o in outputs]).mean()  # noqa: E731
    return LossOutput(loss=total("loss"), kl=total("kl"), clip_ratio=mean("clip_ratio"),
                      clip_ratio_low=mean("clip_ratio_low"), clip_ratio_high=mean("clip_ratio_high"))
