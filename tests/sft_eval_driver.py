"""Held-out accuracy of a fine-tuned checkpoint through the SFT evaluator, in one process or under
torchrun (each rank generates its share). Usage: python sft_eval_driver.py CHECKPOINT OUT.json"""

import json
import sys

import torch

from llmkit.checkpoint import load_model
from llmkit.tasks import get_task
from llmkit.tokenizer import Tokenizer
from llmkit.train import distributed
from llmkit.train.finetune import make_evaluator

if __name__ == "__main__":
    torch.set_num_threads(1)
    ckpt, out = sys.argv[1], sys.argv[2]
    info = distributed.setup("cpu")
    examples = get_task("count_char").make("test", 13, 0) + get_task("compare2").make("test", 10, 0)
    sink: dict = {}
    with torch.no_grad():
        metrics = make_evaluator(Tokenizer.load(ckpt), examples, sink)(load_model(ckpt).eval(), info)
    if info.is_main:
        result = {"world_size": info.world_size, "n": len(examples), "metrics": metrics, **sink["eval"]}
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f)
    distributed.teardown(info)
