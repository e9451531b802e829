"""Zero-shot figures of a model on a data split: distance to the votes, majority F1, prediction spread, parse rate.

    python tools/zero_shot.py --model artifacts/smollm2-135m-instruct --source chaosnli_mnli \\
        --data ../shared/data/chaosNLI_mnli_m.jsonl [--split val] [--limit 300] [--readouts label_probs sampling]

Uses the project's DataModule (prompts and label words as a config would set them: ``--verbalizers``,
``--system-prompt``, ``--reasoning``), the model's readouts and the evaluation metrics. Prints one JSON object:
for each readout the metrics, how often each label is predicted (the spread) and, for ``sampling``, the share of
answers that parse into a label, with a few example answers.

``--answer-prefix TEXT [TEXT ...]`` sets what opens the model's turn (``data.prompt.answer_prefix``; ``""`` for
none); with several, the same examples are evaluated once per prefix and the JSON holds one result per prefix
under ``by_answer_prefix`` and the sampled answers' ``parse_rate`` of each, side by side. The parse rates quoted in
``shala_pl/data/prompts.py`` and the README come from

    python tools/zero_shot.py --model artifacts/smollm2-135m-instruct --source chaosnli_mnli \\
        --data ../shared/data/chaosNLI_mnli_m.jsonl --split val --limit 100 --readouts sampling \\
        --num-samples 8 --max-new-tokens 6 --answer-prefix "Answer:" ""

The split is the DataModule's, with its defaults (random, ``split_seed`` 0, 10% validation, 10% test): the same
split as ``configs/smollm2/chaosnli_mnli.yaml`` trains and validates on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", choices=["train", "val", "test"], default="val")
    parser.add_argument("--limit", type=int, default=None, help="first N examples of the split")
    parser.add_argument("--readouts", nargs="+", choices=["label_probs", "sampling"], default=["label_probs"])
    parser.add_argument("--verbalizers", type=json.loads, default=None, help='JSON: {"entailment": "yes", ...}')
    parser.add_argument("--system-prompt", default=None)
    parser.add_argument("--reasoning", action="store_true")
    parser.add_argument("--answer-prefix", nargs="+", default=None, metavar="TEXT",
                        help='what opens the model\'s turn ("" for none; default: the task\'s); several: one result '
                             "per prefix on the same examples, with their parse rates side by side")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.answer_prefix is None or len(args.answer_prefix) == 1:
        prefix = args.answer_prefix[0] if args.answer_prefix else None
        result = evaluate(args, prefix)
    else:
        runs = {prefix: evaluate(args, prefix) for prefix in args.answer_prefix}
        first = next(iter(runs.values()))
        result = {k: first[k] for k in ("model", "source", "split", "examples")}
        if "sampling" in args.readouts:
            result["parse_rate"] = {prefix: run["sampling"].get("parse_rate") for prefix, run in runs.items()}
        result["by_answer_prefix"] = runs
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


def evaluate(args, answer_prefix) -> dict:
    """The figures of ``args.readouts`` on the first ``args.limit`` examples of the split; ``answer_prefix`` None:
    the task's."""
    from shala_pl.data.datamodule import VoteDataModule
    from shala_pl.data.prompts import PromptSettings
    from shala_pl.metrics import build_eval_metrics, compute_flat
    from shala_pl.modules.base import SamplingReadout, VoteModule

    prompt = PromptSettings(reasoning=args.reasoning, verbalizers=args.verbalizers or {},
                            system_prompt=args.system_prompt, answer_prefix=answer_prefix)
    data = VoteDataModule(source=args.source, path=args.data, tokenizer_path=args.model, prompt=prompt,
                          eval_batch_size=args.batch_size)
    if args.limit is not None:
        data.splits = {**{s: data.examples(s) for s in ("train", "val", "test")}}
        data.splits[args.split] = data.splits[args.split][: args.limit]
    module = VoteModule(name_or_path=args.model, label_names=data.label_names, verbalizers=data.verbalizers,
                        readouts=args.readouts,
                        sampling=SamplingReadout(num_samples=args.num_samples, max_new_tokens=args.max_new_tokens))
    module.configure_model()
    module.policy.eval()
    metrics = {r: build_eval_metrics(len(data.label_names)) for r in args.readouts}
    predicted = {r: Counter() for r in args.readouts}
    parsed = answers = 0
    examples = []
    start = time.perf_counter()
    loader = {"train": data.train_dataloader, "val": data.val_dataloader, "test": data.test_dataloader}[args.split]
    data.setup(None)
    for batch in loader():
        with torch.no_grad():
            for readout, result in module.readout_probs(batch).items():
                metrics[readout].update(result.probs.float(), batch.human, batch.majority)
                predicted[readout].update(data.label_names[i] for i in result.probs.argmax(-1).tolist())
                if result.choices is not None:
                    parsed += int((result.choices >= 0).sum())
                    answers += result.choices.numel()
                    examples += result.texts[:2] if len(examples) < 6 else []
    seconds = time.perf_counter() - start
    result = {"model": args.model, "source": args.source, "split": args.split,
              "examples": sum(predicted[args.readouts[0]].values()), "verbalizers": data.verbalizers,
              "seconds": round(seconds, 1)}
    if answer_prefix is not None:
        result["answer_prefix"] = answer_prefix
    for readout in args.readouts:
        figures = {k: round(float(v), 4) for k, v in compute_flat(metrics[readout]).items() if "bin" not in k}
        figures["predicted"] = dict(predicted[readout])
        result[readout] = figures
    if answers:
        result["sampling"]["parse_rate"] = round(parsed / answers, 4)
        result["sampling"]["example_answers"] = examples
    return result


if __name__ == "__main__":
    main()
