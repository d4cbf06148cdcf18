"""Reward functions for RL: a user's Python function named ``path/to/file.py:function``, called
safely on every sample.

A reward function is called as ``fn(prompt=..., completion=..., **fields)`` where ``fields`` are the
prompt row's other fields (for example ``answer``), and returns a number. Failures are a fact of
life with user code: a call that raises or returns a non-number is counted, reported once, and its
sample is left out of the update; only a round in which every call fails stops the run.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.errors import ConfigError, LLMKitError

RewardFn = Callable[..., float]


class RewardError(LLMKitError):
    """Every reward of a rollout batch failed: the function is broken, not a few samples."""


def load_reward_function(spec: str) -> RewardFn:
    """Import ``path/to/file.py:function`` and return the function (one-line errors otherwise)."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ConfigError(f"reward function {spec!r}: write it as path/to/file.py:function_name")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"reward function file {file} does not exist; give the path to a .py file as FILE.py:FUNCTION"
        )
    module_name = f"llmkit_reward_{abs(hash(str(file.resolve())))}"
    loader = importlib.util.spec_from_file_location(module_name, file)
    if loader is None or loader.loader is None:
        raise ConfigError(f"reward function file {file} cannot be imported as Python; give a .py file")
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    try:
        loader.loader.exec_module(module)
    except Exception as e:
        raise ConfigError(f"{file}: importing it failed ({type(e).__name__}: {e}); fix the file") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        known = [n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")]
        raise ConfigError(f"{file} has no function {name!r}; functions there: {', '.join(known) or 'none'}")
    return fn


@dataclass
class RewardStats:
    """What one batch of reward calls produced: ``failures`` counted, the first error kept."""

    calls: int = 0
    failures: int = 0
    first_error: str = ""


def call_rewards(
    fn: RewardFn, prompts: Sequence[str], completions: Sequence[str], fields: Sequence[dict[str, Any]], where: str
) -> tuple[list[float], RewardStats]:
    """``fn`` on every (prompt, completion, fields); failed calls give NaN. Raises RewardError
    (naming ``where`` and the first failure) only when every call failed."""
    out: list[float] = []
    stats = RewardStats()
    for prompt, completion, extra in zip(prompts, completions, fields, strict=True):
        stats.calls += 1
        try:
            value = fn(prompt=prompt, completion=completion, **extra)
            if isinstance(value, bool):
                value = float(value)
            if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise TypeError(f"returned {value!r}, not a finite number")
            out.append(float(value))
        except Exception as e:
            stats.failures += 1
            if not stats.first_error:
                stats.first_error = f"{type(e).__name__}: {e}"
            out.append(float("nan"))
    if stats.calls and stats.failures == stats.calls:
        raise RewardError(
            f"{where}: all {stats.calls} reward calls of a batch failed (first: {stats.first_error}); fix the function"
        )
    return out, stats
