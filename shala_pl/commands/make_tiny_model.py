"""Build a tiny causal LM and its locally trained tokenizer: ``shala-pl make-tiny-model OUT_DIR``.

The quickstart (``shala-pl fit --config quickstart``) trains ``artifacts/tiny-qwen2`` under the current folder:
``shala-pl make-tiny-model artifacts/tiny-qwen2`` builds it (seconds, offline).
"""

import argparse
from pathlib import Path

from shala_pl.models.tiny import build_tiny_model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="shala-pl make-tiny-model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--architecture", choices=["qwen2", "llama"], default="qwen2")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--texts", type=Path, help="extra text file (one text per line) to train the tokenizer on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    texts = args.texts.read_text().splitlines() if args.texts else None
    out = build_tiny_model(args.out_dir, args.architecture, args.hidden_size, args.num_layers, args.num_heads,
                           args.vocab_size, texts, args.seed)
    print(f"saved tiny {args.architecture} model and tokenizer to {out}")


if __name__ == "__main__":
    main()
