"""``llmkit quantize CKPT --scheme int8|int4 --out DIR``: weight-only post-training quantization."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 80  # place in `llmkit --help`: pipeline order


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="quantize a checkpoint's weights to int8 or int4",
        description="Write a quantized copy of a checkpoint: int8 (one scale per output channel) or int4 "
        "(one scale per group of inputs), by round-to-nearest or GPTQ on calibration text. generate, chat, "
        "sample and the Python API run the result directly.",
    )
    p.add_argument("checkpoint", type=Path, help="full-precision checkpoint directory")
    p.add_argument("--scheme", required=True, help="int8 or int4")
    p.add_argument("--group-size", type=int, default=32, help="int4: inputs per scale, 32, 64 or 128 (default: 32)")
    p.add_argument(
        "--method",
        default="rtn",
        choices=["rtn", "gptq"],
        help="rtn: round to nearest; gptq: calibrated, minimises each layer's output error (default: rtn)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        metavar="SOURCE",
        help="gptq: calibration text, a corpus name or file (default: the training split of the checkpoint's run)",
    )
    p.add_argument(
        "--calibration-tokens", type=int, default=16384, help="gptq: tokens to calibrate on (default: 16384)"
    )
    p.add_argument("--out", type=Path, required=True, help="output checkpoint directory")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    from llmkit.quant.model import quantize_checkpoint

    sizes = quantize_checkpoint(
        args.checkpoint,
        args.out,
        args.scheme,
        args.group_size,
        args.method,
        args.calibration,
        args.calibration_tokens,
        args.force,
    )
    before, after = sizes["bytes_before"], sizes["bytes_after"]
    print(f"{args.out}: {after / 1e6:.2f} MB of weights ({after / before:.0%} of {before / 1e6:.2f} MB)")
    return 0
