"""Time the parts of a GRPO step, each next to what it replaced: the record behind docs/performance.md.

    python tools/bench_rollout_parts.py [--repeats N] [--threads N] [--json OUT]

Same model and shapes as ``tools/bench_throughput.py`` (qwen2, hidden 256, 4 layers; B=8 prompts from the synthetic
task, G=8 answers, T=32 tokens, fp32, 1 torch thread). Rows:

- generation: ``transformers`` ``generate(num_return_sequences=G)`` (copies each prompt G times, so each prompt is
  prefilled G times and every step reads G copies of its keys/values) against ``sample_completions`` (prompt
  prefilled once, its cache shared by the G answers, answer cache preallocated).
- policy forward + backward of the answers' log-probs: the prompt repeated G times (``completion_log_probs``)
  against ``shared_prompt_completion_log_probs`` (each prompt once).
- a no-grad scoring pass: what the reference model costs when beta > 0, and the old-policy pass when mu > 1;
  ``GRPOModule`` runs neither when beta = 0 and mu = 1.

Each figure is the median over ``--repeats`` timings after one warm-up. Wall time on a shared machine is noisy;
compare rows of the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_bounds import median_time  # noqa: E402  (tools/ is the script's own folder)




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=8, help="B")
    parser.add_argument("--num-generations", type=int, default=8, help="G")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="T")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from shala_pl.data.datamodule import VoteDataModule
    from shala_pl.models.loading import load_causal_lm, load_tokenizer
    from shala_pl.models.scoring import completion_log_probs, shared_prompt_completion_log_probs
    from shala_pl.models.tiny import build_tiny_model
    from shala_pl.rl.rollout import sample_completions

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, g, t = args.prompts, args.num_generations, args.max_new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model", "qwen2", 256, 4, 4, 1024, seed=0)
        model = load_causal_lm(str(model_dir), lora=None)
        tokenizer = load_tokenizer(str(model_dir))
        data = VoteDataModule(source="synthetic", source_options={"n_examples": 64}, tokenizer_path=str(model_dir),
                              batch_size=b)
        data.setup("fit")
        batch = next(iter(data.train_dataloader()))
    prompt_ids, prompt_mask = batch.prompt_ids, batch.prompt_mask
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.eval()

    def hf_generate():
        with torch.no_grad():
            out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, top_k=0,
                                 temperature=1.0, max_new_tokens=t, min_new_tokens=t, num_return_sequences=g,
                                 pad_token_id=pad, eos_token_id=eos)
        return out[:, prompt_ids.shape[1]:]

    def ours_generate():
        return sample_completions(model, prompt_ids, prompt_mask, g, t, eos_token_id=eos, pad_token_id=pad,
                                  min_new_tokens=t)

    completions = ours_generate()
    completion_mask = torch.ones_like(completions)
    repeated_ids, repeated_mask = prompt_ids.repeat_interleave(g, 0), prompt_mask.repeat_interleave(g, 0)

    def repeated_backward():
        model.zero_grad(set_to_none=True)
        completion_log_probs(model, repeated_ids, repeated_mask, completions, completion_mask).sum().backward()

    def shared_backward():
        model.zero_grad(set_to_none=True)
        shared_prompt_completion_log_probs(model, prompt_ids, prompt_mask, completions, completion_mask).sum().backward()

    def shared_no_grad():
        with torch.no_grad():
            shared_prompt_completion_log_probs(model, prompt_ids, prompt_mask, completions, completion_mask)

    rows = {
        "generate: transformers generate(num_return_sequences=G)": median_time(hf_generate, args.repeats),
        "generate: sample_completions (shared prompt cache)": median_time(ours_generate, args.repeats),
        "policy fwd+bwd: prompt repeated G times": median_time(repeated_backward, args.repeats),
        "policy fwd+bwd: shared prompt": median_time(shared_backward, args.repeats),
        "no-grad scoring pass (reference at beta>0, old policy at mu>1)": median_time(shared_no_grad, args.repeats),
    }
    print(f"B={b} x G={g} x T={t}, prompt length {prompt_ids.shape[1]}, {args.threads} thread(s), "
          f"median of {args.repeats}")
    width = max(map(len, rows))
    for name, seconds in rows.items():
        print(f"{name:<{width}}  {seconds * 1000:8.1f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json),
                                                                    "prompt_length": prompt_ids.shape[1]},
                                         "seconds": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
