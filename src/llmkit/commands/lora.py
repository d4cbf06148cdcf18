"""``llmkit lora merge ADAPTER --out DIR``: fold a LoRA adapter into its base model's weights."""

from __future__ import annotations

from pathlib import Path

ORDER = 54  # place in `llmkit --help`: pipeline order


def register(sub) -> None:
    p = sub.add_parser("lora", help="LoRA adapters: merge one into its base model")
    verbs = p.add_subparsers(dest="lora_verb", metavar="<merge>")
    verbs.required = True
    m = verbs.add_parser(
        "merge",
        help="write base + adapter as one ordinary checkpoint",
        description="Merge a PEFT-format LoRA adapter into its base model and write a full checkpoint "
        "(loads in transformers without peft). The base is the adapter's base_model_name_or_path unless --base.",
    )
    m.add_argument("adapter", type=Path, help="adapter directory (adapter_config.json + adapter_model.safetensors)")
    m.add_argument("--base", type=Path, default=None, help="base checkpoint (default: the one the adapter names)")
    m.add_argument("--out", type=Path, required=True, help="output checkpoint directory")
    m.set_defaults(func=run_merge)


def run_merge(args) -> int:
    from llmkit.checkpoint import load_model, save_checkpoint
    from llmkit.console import say
    from llmkit.errors import CheckpointError
    from llmkit.model.lora import adapter_base, load_adapter, merge_lora
    from llmkit.tokenizer import Tokenizer

    base = args.base or adapter_base(args.adapter)
    if not base or not Path(base).is_dir():
        raise CheckpointError(
            f"{args.adapter}: its base model {base!r} is not a local directory; pass --base CHECKPOINT"
        )
    model = load_model(Path(base))
    load_adapter(model, args.adapter)
    merge_lora(model)
    tok = Tokenizer.load(base) if (Path(base) / "tokenizer.json").is_file() else None
    save_checkpoint(args.out, model, tok, extra_config={"llmkit_stage": "sft"})  # a fine-tuned (chat) model
    say(f"lora: merged {args.adapter} into {base} -> {args.out}")
    return 0
