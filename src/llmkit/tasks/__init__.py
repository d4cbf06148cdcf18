"""The task suite: generated, bilingual, verifiable tasks and tasks made from the corpora.

A task makes examples from a seed (``task.make("test", 500, seed=0)``) with train and test
disjoint by construction, in English and Chinese, and checks replies with a verifier that reads
the final answer (``task.verify(example, reply)``). :func:`score` is the one scorer of answers;
:func:`~llmkit.tasks.runner.evaluate_tasks` generates replies through the inference engine and
scores them. One module per family: ``arithmetic``, ``strings``, ``word_problems``, ``formats``,
``corpus``; users add JSONL files (``user``). See docs/tasks.md.
"""

from llmkit.tasks.base import Example, Task, few_shot_prompt, pick_shots, to_messages
from llmkit.tasks.corpus import CorpusSplit
from llmkit.tasks.registry import corpus_tasks, get_task, list_tasks
from llmkit.tasks.scoring import TaskScore, score, verdicts
from llmkit.tasks.verifiers import VERIFIERS, extract_answer

__all__ = [
    "VERIFIERS",
    "CorpusSplit",
    "Example",
    "Task",
    "TaskScore",
    "corpus_tasks",
    "extract_answer",
    "few_shot_prompt",
    "get_task",
    "list_tasks",
    "pick_shots",
    "score",
    "to_messages",
    "verdicts",
]
