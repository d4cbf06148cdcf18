"""Tasks made from the pretraining corpora: who speaks a Shakespeare line, which poem (author and
title) a line of a Tang/Song poem comes from, and the next line of a poem or speech.

Each item quotes a passage of a document and asks about it, so the question can be answered from
the page, the way the pretrained model saw such text (a speaker's name above a speech; a poem's
title and ``作者：`` line above its verses). Items of the test split come only from documents that
pretraining held out, chosen by the very function and arguments pretraining used
(:func:`llmkit.data.sources.split_documents` with ``data.val_fraction`` and ``train.seed``), and
training items only from the others: a test passage was never seen in pretraining or SFT.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache

from llmkit.tasks.base import Example, Problem, Task, check_split, final_line


@dataclass(frozen=True)
class CorpusSplit:
    """How pretraining split the documents (the run's ``data.val_fraction``, ``train.seed`` and
    ``data.max_documents``); the defaults are the presets' defaults."""

    val_fraction: float = 0.05
    seed: int = 1337
    max_documents: int = 0


@cache
def split_corpus(source: str, split: CorpusSplit) -> dict[str, tuple[str, ...]]:
    """{"train": docs, "test": docs} of a corpus, split exactly as the data stage splits it."""
    from llmkit.config import DataConfig
    from llmkit.data.sources import iter_documents, split_documents

    cfg = DataConfig(sources=[source], max_documents=split.max_documents)
    train, held_out = split_documents(iter_documents(source, cfg), split.val_fraction, seed=split.seed)
    return {"train": tuple(train), "test": tuple(held_out)}


@cache
def training_lines(source: str, split: CorpusSplit) -> frozenset[str]:
    """Every line and every clause of the training documents: a test item quoting one of them is
    dropped, since the quoted text itself was seen in training (common lines recur across plays)."""
    out = set()
    for doc in split_corpus(source, split)["train"]:
        for line in doc.split("\n"):
            line = line.strip()
            out.add(line)
            out.update(c.strip() for c in _CLAUSE_END.split(line))
    return frozenset(out)


# ------------------------------------------------------------------------------- parsing
_SPEAKER = re.compile(r"^([A-Z][A-Z'&,\- ]*[A-Z])\.$")
_POEM = re.compile(r"^《(?P<title>[^》\n]+)》\n作者：(?P<author>[^\n]+)\n(?P<body>.+)$", re.S)
_CLAUSE_END = re.compile(r"[，。？！；]")


def speeches(play: str) -> list[tuple[str, list[str]]]:
    """(speaker, lines) for every speech of a play: a block that starts with ``NAME.`` on its own
    line; stage directions in brackets are dropped."""
    out = []
    for block in play.split("\n\n"):
        lines = [ln.strip() for ln in block.strip("\n").split("\n")]
        if len(lines) < 2:
            continue
        m = _SPEAKER.match(lines[0])
        if not m:
            continue
        text = [ln for ln in lines[1:] if ln and not ln.startswith("[") and not ln.endswith("]")]
        if text:
            out.append((m.group(1), text))
    return out


@dataclass(frozen=True)
class Poem:
    title: str
    author: str
    body: str

    def record(self) -> str:
        """The poem as the corpus writes it."""
        return f"《{self.title}》\n作者：{self.author}\n{self.body}"

    def clauses(self) -> list[str]:
        return [c.strip() for c in _CLAUSE_END.split(self.body.replace("\n", "")) if c.strip()]


def poems(doc: str) -> Poem | None:
    m = _POEM.match(doc.strip())
    if not m:
        return None
    return Poem(m.group("title").strip(), m.group("author").strip(), m.group("body").strip())


# ------------------------------------------------------------------------------- tasks
class CorpusTask(Task):
    """A task whose items are passages of one corpus's documents of the asked split."""

    family = "corpus"
    source = ""
    split_config = CorpusSplit()

    def with_split(self, split: CorpusSplit) -> CorpusTask:
        """The same task over documents split as ``split`` says (a run's own data settings)."""
        task = type(self)()
        task.split_config = split
        return task

    def documents(self, split: str) -> tuple[str, ...]:
        return split_corpus(self.source, self.split_config)[split]

    def split_of(self, key: str) -> str:  # the split is the document's, see make()
        raise NotImplementedError

    def units(self, split: str) -> list:
        """What items are drawn from (speeches windows, poems ...) for ``split``; built once."""
        raise NotImplementedError

    def draw_from(self, rng: random.Random, units: list) -> Problem | None:
        raise NotImplementedError

    def make(self, split: str, n: int, seed: int = 0, languages: tuple[str, ...] | None = None) -> list[Example]:
        check_split(split)
        langs = self._languages(languages)
        units = _units(self, split)
        if not units:
            return []
        seen_in_training = training_lines(self.source, self.split_config) if split == "test" else frozenset()
        rng = random.Random(f"{self.name}\0{split}\0{seed}")
        seen: set[str] = set()
        out: list[Example] = []
        misses = 0
        while len(out) < n and misses < 2000 + 50 * n:
            problem = self.draw_from(rng, units)
            if problem is None or problem.key in seen or _quotes(problem) & seen_in_training:
                misses += 1
                continue
            seen.add(problem.key)
            out.append(self.example(problem, langs[len(out) % len(langs)]))
        return out


def _quotes(problem: Problem) -> set[str]:
    """The corpus text an item quotes and answers with (its key's last part, and the answer)."""
    return set(problem.key.split("\0")[1:])


@cache
def _units_cached(cls: type, source: str, split_cfg: CorpusSplit, split: str) -> list:
    task = cls()
    task.split_config = split_cfg
    return task.units(split)


def _units(task: CorpusTask, split: str) -> list:
    return _units_cached(type(task), task.source, task.split_config, split)


def _short(line: str, limit: int = 70) -> bool:
    return 12 <= len(line) <= limit


class ShakespeareSpeaker(CorpusTask):
    name = "shakespeare_speaker"
    source = "shakespeare"
    description = "a short passage of a play: who says the quoted line?"
    max_new_tokens = 16

    def units(self, split: str) -> list:
        out = []
        for play in self.documents(split):
            sp = [(who, [ln for ln in lines if len(ln) <= 70][:2]) for who, lines in speeches(play)]
            out.extend(sp[i : i + 3] for i in range(len(sp) - 2))
        return [w for w in out if all(lines for _, lines in w) and len({who for who, _ in w}) >= 2]

    def draw_from(self, rng: random.Random, units: list) -> Problem | None:
        window = rng.choice(units)
        who, lines = rng.choice(window)
        line = rng.choice(lines)
        all_lines = [ln for _, ls in window for ln in ls]
        if not _short(line) or all_lines.count(line) > 1:
            return None
        passage = "\n\n".join(f"{w}.\n" + "\n".join(ls) for w, ls in window)

        def render(lang: str):
            if lang == "zh":
                prompt = f"{passage}\n\n在这段剧本里，“{line}”这句话是谁说的？"
            else:
                prompt = f'{passage}\n\nIn this passage, who says "{line}"?'
            return prompt, who, final_line(who, lang), {"source": self.source}

        return Problem(f"{passage}\0{line}", render)


class PoemAuthor(CorpusTask):
    name = "poem_author"
    source = "fortunes-zh"
    description = "two Tang/Song poems: which poem has the quoted line? its author and title"
    max_new_tokens = 40
    verifier = "contains_all"

    def units(self, split: str) -> list:
        found = [p for p in map(poems, self.documents(split)) if p is not None and len(p.body) <= 80]
        return sorted(set(found), key=lambda p: (p.title, p.author))

    def draw_from(self, rng: random.Random, units: list) -> Problem | None:
        if len(units) < 2:
            return None
        target, other = rng.sample(units, 2)
        if target.author == other.author and target.title == other.title:
            return None
        clauses = [c for c in target.clauses() if len(c) >= 4 and c not in other.body]
        if not clauses:
            return None
        line = rng.choice(clauses)
        pair = [target, other] if rng.random() < 0.5 else [other, target]
        records = "\n\n".join(p.record() for p in pair)
        answer = f"{target.author}《{target.title}》"

        def render(lang: str):
            if lang == "zh":
                prompt = f"{records}\n\n上面哪首诗里有“{line}”这一句？写出它的作者和题目。"
                solution = f"“{line}”出自《{target.title}》，作者是{target.author}。\n{final_line(answer, lang)}"
            else:
                prompt = f'{records}\n\nWhich poem above has the line "{line}"? Give its author and title.'
                solution = f'"{line}" is from 《{target.title}》 by {target.author}.\n{final_line(answer, lang)}'
            return prompt, answer, solution, {"parts": [target.author, target.title], "source": self.source}

        return Problem(f"{records}\0{line}", render)


class NextLine(CorpusTask):
    name = "next_line_poem"
    source = "fortunes-zh"
    description = "a Tang/Song poem: which line comes after the quoted one?"
    max_new_tokens = 32

    def units(self, split: str) -> list:
        out = []
        for doc in self.documents(split):
            if self.source == "fortunes-zh":
                poem = poems(doc)
                if poem is not None and len(poem.body) <= 100 and len(poem.clauses()) >= 3:
                    out.append((poem.body, poem.clauses()))
            else:
                for _, lines in speeches(doc):
                    lines = [ln for ln in lines if len(ln) <= 70][:5]
                    if len(lines) >= 3:
                        out.append(("\n".join(lines), lines))
        return out

    def draw_from(self, rng: random.Random, units: list) -> Problem | None:
        passage, lines = rng.choice(units)
        i = rng.randrange(len(lines) - 1)
        line, nxt = lines[i], lines[i + 1]
        if lines.count(line) > 1 or len(line) < 4:
            return None

        def render(lang: str):
            if lang == "zh":
                prompt = f"{passage}\n\n上文中“{line}”的下一句是什么？"
            else:
                prompt = f'{passage}\n\nIn the text above, which line comes right after "{line}"?'
            return prompt, nxt, final_line(nxt, lang), {"source": self.source}

        return Problem(f"{passage}\0{line}\0{nxt}", render)


class NextLinePlay(NextLine):
    name = "next_line_play"
    source = "shakespeare"
    description = "a speech of a play: which line comes after the quoted one?"


TASKS = [ShakespeareSpeaker(), PoemAuthor(), NextLine(), NextLinePlay()]
