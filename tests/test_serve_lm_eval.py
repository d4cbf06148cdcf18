"""``lm-eval``'s ``local-completions`` against the server: a multiple-choice task written as YAML
over a local JSONL file gets the accuracy (and the very log-likelihoods) that scoring the same
model in-process gives."""

import json

import pytest
import torch

import llmkit
from llmkit.infer.scoring import score
from serving import API_KEY, one_thread

pytestmark = pytest.mark.xdist_group("serve")

ITEMS = [
    ("The capital of France is", ["Paris", "the moon", "a fox", "你好"], 0),
    ("床前明月光，", ["疑是地上霜。", "the lazy dog", "hello", "42"], 0),
    ("The quick brown fox jumps over the", ["lazy dog", "server", "世界", "moon"], 0),
    ("Hello", ["world", "fox", "明月", "test"], 1),
    ("举头望明月，", ["低头思故乡。", "quick", "brown", "dog"], 2),
    ("This is a test of the", ["server", "engine", "moon", "月"], 0),
    ("你好，", ["世界", "fox", "dog", "test"], 3),
    ("The lazy", ["dog", "fox", "cat", "sun"], 0),
]

TASK = """task: llmkit_serve_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def test_lm_eval_local_completions_matches_in_process_scoring(server, serve_models, tmp_path, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    data = tmp_path / "items.jsonl"
    data.write_text(
        "".join(json.dumps({"question": q, "choices": c, "answer": a}, ensure_ascii=False) + "\n" for q, c, a in ITEMS),
        encoding="utf-8",
    )
    (tmp_path / "task.yaml").write_text(TASK.format(data=data), encoding="utf-8")
    out = simple_evaluate(
        model="local-completions",
        model_args={
            "base_url": server.url + "/v1/completions",
            "model": "talker",
            "auth_token": API_KEY,
            "max_length": 1024,
            "batch_size": 4,
        },
        tasks=["llmkit_serve_mc"],
        task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
        log_samples=True,
    )
    served_acc = out["results"]["llmkit_serve_mc"]["acc,none"]
    samples = sorted(out["samples"]["llmkit_serve_mc"], key=lambda s: s["doc_id"])

    # the same requests scored in this process, tokenized as lm-eval does (context, then the rest)
    lm = llmkit.load(serve_models["talker"], device="cpu", dtype="float32", inference_only=True)
    tok = lm.tokenizer
    correct = 0
    for (question, choices, answer), sample in zip(ITEMS, samples, strict=True):
        requests = []
        for choice in choices:
            whole, context = tok.encode(question + " " + choice), tok.encode(question)
            requests.append((context, whole[len(context) :]))
        with one_thread():
            lls = [s.logprob for s in score(lm.model, requests)]
        served = [r[0] for r in sample["filtered_resps"]]
        torch.testing.assert_close(torch.tensor(served), torch.tensor(lls), atol=1e-4, rtol=0)
        correct += max(range(len(lls)), key=lls.__getitem__) == answer
    assert served_acc == pytest.approx(correct / len(ITEMS))
