"""The task suite as alignment data: RL prompts with verifier rewards, and preference pairs.

``tasks:add2,word_problems`` names tasks wherever the post-training stages take data. For GRPO and
PPO each training example is a chat prompt whose reward is its task's verifier (1 for a correct
final answer, 0 otherwise); the test split is the held-out set. For the reward model and DPO a
training example becomes preference pairs, the reference solution being chosen and:

* ``wrong_answer``: the same solution with another example's (different) answer in its place;
* ``on_policy``: a reply the model itself sampled that the verifier rejects (the mistakes the
  model actually makes, the most informative pairs for DPO);
* ``language``: the solution with its final-answer line in the other language (questions asked in
  Chinese are answered in Chinese, and English in English).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from llmkit.data.preference import PreferencePair
from llmkit.errors import ConfigError
from llmkit.tasks import Example, get_task, to_messages
from llmkit.tasks.base import final_line
from llmkit.train.rollout import RLPrompt

PAIR_KINDS = ("wrong_answer", "on_policy", "language")
PREFIX = "tasks:"


def task_names(spec: str) -> list[str] | None:
    """``tasks:a,b`` -> ["a", "b"] (each checked); None for anything else (a file or dataset)."""
    if not spec.startswith(PREFIX):
        return None
    names = [n.strip() for n in spec[len(PREFIX) :].split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{spec!r}: name the tasks, e.g. tasks:add2,sub2 (`llmkit tasks list`)")
    for n in names:
        get_task(n)
    return names


def examples(names: Sequence[str], split: str, n: int, seed: int) -> list[Example]:
    """``n`` examples of ``split`` per task, tasks interleaved (so any prefix mixes them)."""
    per_task = [get_task(name).make(split, n, seed) for name in names]
    out = []
    for i in range(max(map(len, per_task), default=0)):
        out += [exs[i] for exs in per_task if i < len(exs)]
    return out


def task_prompts(tokenizer, exs: Sequence[Example]) -> list[RLPrompt]:
    """Chat prompts (the user's question, ready for the assistant's reply) carrying their example."""
    from llmkit.infer.engine import chat_prompt_ids

    return [
        RLPrompt(chat_prompt_ids(tokenizer, to_messages(e, with_answer=False)), e.prompt, {"example": e}, chat=True)
        for e in exs
    ]


def verifier_reward(prompt: str, completion: str, example: Example, **_) -> float:
    """1.0 when the task's verifier accepts the completion's final answer, else 0.0."""
    return float(get_task(example.task).verify(example, completion))


def _pair(e: Example, rejected: str, kind: str) -> PreferencePair:
    return PreferencePair(e.solution, rejected, messages=to_messages(e, with_answer=False), source=f"{e.id} ({kind})")


def wrong_answer_pairs(exs: Sequence[Example], seed: int) -> list[PreferencePair]:
    """The reference solution over the same solution ending in another example's answer."""
    rng = random.Random(seed)
    by_task: dict[str, list[Example]] = {}
    for e in exs:
        by_task.setdefault(e.task, []).append(e)
    out = []
    for e in exs:
        others = [o.answer for o in by_task[e.task] if o.answer != e.answer]
        line = final_line(e.answer, e.lang)
        if not others or not e.solution.endswith(line):
            continue
        wrong = rng.choice(others)
        out.append(_pair(e, e.solution[: -len(line)] + final_line(wrong, e.lang), "wrong_answer"))
    return out


def language_pairs(exs: Sequence[Example]) -> list[PreferencePair]:
    """The reference solution over one whose final-answer line is in the other language."""
    out = []
    for e in exs:
        line = final_line(e.answer, e.lang)
        other = final_line(e.answer, "en" if e.lang == "zh" else "zh")
        if e.solution.endswith(line) and other != line:
            out.append(_pair(e, e.solution[: -len(line)] + other, "language"))
    return out


def on_policy_pairs(
    model, tokenizer, exs: Sequence[Example], samples: int, seed: int, max_batch: int = 64
) -> list[PreferencePair]:
    """The reference solution over the model's own wrong replies: ``samples`` replies per example at
    temperature 1 through the engine, each verified; one pair per example that got a wrong one."""
    from llmkit.infer.engine import Engine, chat_stop_ids
    from llmkit.infer.sampling import SamplingParams

    engine = Engine(model, tokenizer, max_batch=max_batch)
    prompts = task_prompts(tokenizer, exs)
    out = []
    stops = chat_stop_ids(tokenizer)
    for i in range(0, len(exs), max_batch):
        part = exs[i : i + max_batch]
        budget = max(get_task(e.task).max_new_tokens for e in part)
        params = SamplingParams(max_new_tokens=budget, temperature=1.0, stop_token_ids=stops, n=samples, seed=seed + i)
        results = engine.generate([p.ids for p in prompts[i : i + max_batch]], params)
        for e, replies in zip(part, results, strict=True):
            wrong = [r.text for r in replies if r.text.strip() and not get_task(e.task).verify(e, r.text)]
            if wrong:
                out.append(_pair(e, wrong[0], "on_policy"))
    model.train()
    return out


def task_pairs(
    names: Sequence[str], kinds: Sequence[str], split: str, n: int, seed: int, model=None, tokenizer=None, samples=4
) -> list[PreferencePair]:
    """Preference pairs of the named kinds from ``n`` examples per task of ``split``."""
    bad = [k for k in kinds if k not in PAIR_KINDS]
    if bad or not kinds:
        raise ConfigError(f"pair kind {bad[0] if bad else '(none)'!r}: use {', '.join(PAIR_KINDS)}")
    exs = examples(names, split, n, seed)
    out: list[PreferencePair] = []
    if "wrong_answer" in kinds:
        out += wrong_answer_pairs(exs, seed)
    if "language" in kinds:
        out += language_pairs(exs)
    if "on_policy" in kinds:
        out += on_policy_pairs(model, tokenizer, exs, samples, seed)
    return out


def rl_prompts(spec: str, tokenizer, task_examples: int, n_eval: int, seed: int):
    """Training and held-out prompts from ``tasks:...`` or a JSONL file; True when they come from
    the task suite (the verifier is then the default reward)."""
    from llmkit.train.rollout import prompts_from_file

    names = task_names(spec)
    if names is None:
        return (*prompts_from_file(spec, tokenizer, n_eval, seed), False)
    per_task = max(1, -(-n_eval // len(names)))
    train = task_prompts(tokenizer, examples(names, "train", task_examples, seed))
    held = task_prompts(tokenizer, examples(names, "test", per_task, seed)) if n_eval > 0 else []
    return train, held, True


def rl_scorer(reward: str, from_tasks: bool):
    """The scorer named by ``reward``: ``verifier`` (the default for task prompts) or FILE.py:FN."""
    from llmkit.train.rewards import load_reward_function
    from llmkit.train.rollout import function_scorer

    if reward == "verifier" or (not reward and from_tasks):
        if not from_tasks:
            raise ConfigError("reward 'verifier' checks task-suite answers: give prompts as tasks:NAME,NAME")
        return function_scorer(verifier_reward, where="verifier")
    return function_scorer(load_reward_function(reward), where=reward)


def preference_data(spec: str, cfg, tokenizer, model, seed: int):
    """Training and held-out :class:`PreferencePair` s for ``tasks:...`` (test split held out), or
    None when ``spec`` is a file or dataset. ``cfg`` is the reward or dpo section."""
    names = task_names(spec)
    if names is None:
        return None
    per_task_eval = max(1, cfg.task_examples // 4)
    args = dict(model=model, tokenizer=tokenizer, samples=cfg.samples)
    train = task_pairs(names, cfg.pairs, "train", cfg.task_examples, seed, **args)
    held = task_pairs(names, cfg.pairs, "test", per_task_eval, seed, **args)
    return train, held
