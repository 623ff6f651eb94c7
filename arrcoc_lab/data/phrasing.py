"""Phrasings of the synthetic questions: recognise a question, ask it in other words.

SceneBench and DocSynth phrase every question family from three or four TEMPLATES, so a model
trained on them may learn the templates rather than the questions. This module

* `parse(question)` — recovers (dataset, family, fields) of a question: the TEMPLATES of both
  datasets, the held-out list (HELDOUT) and every output of the train generator, typos included;
* `rephrase(question, rng, "train")` — the same question (family and fields: sign colour,
  quarter) from a rich generator: several sentence frames per family x synonyms of every object
  and verb x question/command wrappers (hey, quick question, please, could you …), then, at
  random, lower-case, other end punctuation and one single-character typo (swap, drop, double,
  neighbouring key), never in a field, a sign colour or a word it could be mistaken for;
* `rephrase(question, rng, "heldout")` — one of a fixed list of at least six phrasings per family
  whose content words never occur in the train generator nor in the TEMPLATES (test time only);
* `rephrase_samples(samples, split, seed)` — the above for a list of samples, seeded per sample id.

Word lists and the frame notation are in `phrasing_templates`. See docs/DATA.md, "Phrasings".
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Iterable, Iterator

import numpy as np

from . import docsynth, scenebench
from .phrasing_templates import (ASKING_PREFIXES, COMMAND_PREFIXES, HELDOUT, IDENTIFIERS,
                                 QUESTION_PREFIXES, SLOTS, STOP_WORDS, SUFFIX, TRAIN)

__all__ = ["DETAIL_FAMILIES", "FAMILIES", "HELDOUT", "Phrase", "SPLITS", "content_words", "heldout_vocabulary", "parse",
           "rephrase", "rephrase_samples", "stable_hash", "template_vocabulary", "train_size",
           "train_vocabulary"]

DATASET_TEMPLATES = {"scenebench": scenebench.TEMPLATES, "docsynth": docsynth.TEMPLATES}
DATASET_OF = {fam: name for name, tpl in DATASET_TEMPLATES.items() for fam in tpl}  # family -> dataset
TEMPLATES = {fam: t for tpl in DATASET_TEMPLATES.values() for fam, t in tpl.items()}
FAMILIES = tuple(DATASET_OF)
DETAIL_FAMILIES = scenebench.DETAIL_FAMILIES + docsynth.DETAIL_FAMILIES  # the fine-detail questions' families
SPLITS = ("train", "heldout")
SOURCES = ("template", "heldout", "train")  # what parse matches, in this order
FIELD_PATTERNS = {"colour": "|".join(scenebench.SIGNS), "q": "[1-4]"}  # values the datasets use
TYPO_RATE, LOWER_RATE, PUNCT_RATE = 0.1, 0.2, 0.2  # train noise: one typo / no capital / other end
ENDINGS = ("", "?", ".", "??", "!", " ?")

_PIECE = re.compile(r"(<\w+>|\[[^\]]*\]|\{\w+\})")
_SEP = re.compile(r"[^a-z0-9']+")
_KEY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


@dataclass(frozen=True)
class Phrase:
    """What a question asks: its dataset, family and fields, and which list phrased it."""

    dataset: str  # "scenebench" or "docsynth"
    family: str  # e.g. "number"
    fields: dict = field(default_factory=dict)  # e.g. {"colour": "blue"}, {"q": "3"}, {}
    source: str = "template"  # "template" (the dataset's TEMPLATES), "heldout" or "train"


# ---------------------------------------------------------------- frames: trees, samples, regexes

@lru_cache(maxsize=None)
def _tree(frame: str) -> tuple:
    """A frame as nodes ("lit", text), ("field", name) and ("alt", (subtree, …))."""
    nodes = []
    for part in _PIECE.split(frame):
        if not part:
            continue
        if part[0] == "<":
            nodes.append(("alt", tuple(_tree(o) for o in SLOTS[part[1:-1]])))
        elif part[0] == "[":
            nodes.append(("alt", tuple(_tree(o) for o in part[1:-1].split("|"))))
        elif part[0] == "{":
            nodes.append(("field", part[1:-1]))
        else:
            nodes.append(("lit", part))
    return tuple(nodes)


def _sample(tree: tuple, rng: np.random.Generator) -> str:
    """One expansion; fields stay as "{name}" placeholders."""
    out = []
    for kind, value in tree:
        if kind == "alt":
            out.append(_sample(value[int(rng.integers(len(value)))], rng))
        else:
            out.append("{" + value + "}" if kind == "field" else value)
    return "".join(out)


def _size(tree: tuple) -> int:
    n = 1
    for kind, value in tree:
        if kind == "alt":
            n *= sum(_size(v) for v in value)
    return n


def _literals(tree: tuple) -> Iterator[str]:
    for kind, value in tree:
        if kind == "lit":
            yield value
        elif kind == "alt":
            for v in value:
                yield from _literals(v)


def _literal(text: str) -> str:
    """Regex for literal text as `_normal` leaves it: any run of separators is one optional space."""
    return "".join(re.escape(w) if i % 2 == 0 else " ?"
                   for i, w in enumerate(re.split(r"([^a-z0-9']+)", text.lower())) if w)


def _regex(tree: tuple) -> str:
    out = []
    for kind, value in tree:
        if kind == "alt":
            out.append("(?:" + "|".join(_regex(v) for v in value) + ")")
        elif kind == "field":
            out.append(f"(?P<{value}>{FIELD_PATTERNS[value]})")
        else:
            out.append(_literal(value))
    return "".join(out)


def _normal(text: str) -> str:
    return _SEP.sub(" ", text.lower()).strip()


def _frame(frame: str) -> tuple[bool, tuple]:
    """(is a command, tree of the frame without its marker and end punctuation)."""
    return frame.startswith("!"), _tree(frame.lstrip("!").rstrip("?."))


@lru_cache(maxsize=None)
def _matchers() -> dict[str, list[tuple[str, re.Pattern]]]:
    """source -> [(family, compiled full-match regex)]; train frames accept every wrapper."""
    prefix = "(?:" + "|".join(_literal(p) for p in QUESTION_PREFIXES + COMMAND_PREFIXES) + ")?"
    suffix = f"(?:{_literal(SUFFIX)})?"
    out: dict[str, list] = {source: [] for source in SOURCES}
    for fam in FAMILIES:
        out["template"] += [(fam, re.compile(_regex(_tree(t)))) for t in TEMPLATES[fam]]
        out["heldout"] += [(fam, re.compile(_regex(_tree(t)))) for t in HELDOUT[fam]]
        out["train"] += [(fam, re.compile(prefix + _regex(_frame(t)[1]) + suffix + " ?"))
                         for t in TRAIN[fam]]
    return out


@lru_cache(maxsize=None)
def _known() -> frozenset[str]:
    """Every word any list can produce (stop words included), the words typos are corrected to."""
    texts = [lit for frames in (*TRAIN.values(), *HELDOUT.values(), *TEMPLATES.values())
             for f in frames for lit in _literals(_frame(f)[1])]
    texts += [*QUESTION_PREFIXES, *COMMAND_PREFIXES, SUFFIX, *IDENTIFIERS, *scenebench.SIGNS]
    return frozenset(w for t in texts for w in _normal(t).split())


def _near(a: str, b: str) -> bool:
    """Damerau distance exactly 1: one substitution, insertion, deletion or adjacent swap."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        d = [i for i in range(len(a)) if a[i] != b[i]]
        return len(d) == 1 or (len(d) == 2 and d[1] == d[0] + 1 and a[d[0]] == b[d[1]] and a[d[1]] == b[d[0]])
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _corrections(word: str) -> list[str]:
    return [w for w in _known() if _near(word, w)]


def _fix_typos(text: str) -> str:
    """Replace each unknown word by the one known word at edit distance 1, where there is one."""
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) >= 4 and w.isalpha() and w not in _known():
            near = _corrections(w)
            if len(near) == 1:
                words[i] = near[0]
    return " ".join(words)


# ---------------------------------------------------------------- parse

def _match(text: str) -> Phrase | None:
    for source in SOURCES:
        hits: dict[str, dict] = {}
        for fam, pattern in _matchers()[source]:
            m = pattern.fullmatch(text)
            if m:
                hits.setdefault(fam, {k: v for k, v in m.groupdict().items() if v is not None})
        if len(hits) > 1:
            raise ValueError(f"ambiguous question {text!r}: it reads as families {sorted(hits)}")
        if hits:
            fam, fields = hits.popitem()
            return Phrase(DATASET_OF[fam], fam, fields, source)
    return None


def parse(question: str) -> Phrase:
    """(dataset, family, fields) of a SceneBench/DocSynth question: a TEMPLATES question, a
    held-out phrasing or a train phrasing (case, punctuation and single typos tolerated).

    Raises ValueError naming the question when it is none of these.
    """
    text = _normal(str(question))
    found = _match(text)
    if found is None:
        fixed = _fix_typos(text)
        found = _match(fixed) if fixed != text else None
    if found is None:
        raise ValueError(f"unknown question {question!r}: it is no template question of "
                         f"{' or '.join(DATASET_TEMPLATES)} (families {list(FAMILIES)}) nor a known rephrasing")
    return found


# ---------------------------------------------------------------- rephrase

def _typo(word: str, rng: np.random.Generator) -> str:
    """One slip: swap two neighbouring letters, drop, double or mistype (next key) one after the first."""
    i = int(rng.integers(1, len(word)))
    kind = int(rng.integers(4))
    if kind == 0:
        return word[:i - 1] + word[i] + word[i - 1] + word[i + 1:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    row = next((r for r in _KEY_ROWS if word[i] in r), word[i])
    j = row.find(word[i])
    keys = row[max(0, j - 1):j] + row[j + 1:j + 2] or word[i]
    return word[:i] + keys[int(rng.integers(len(keys)))] + word[i + 1:]


def _noisy(text: str, rng: np.random.Generator, end: str) -> tuple[str, str]:
    """Random typo (outside fields and identifiers, only where it can be undone) and ending."""
    if rng.random() < TYPO_RATE:
        spots = [m for m in re.finditer(r"(?<![{\w])[a-z]{5,}(?![}\w])", text)
                 if m.group() in _known() and m.group() not in IDENTIFIERS]
        for _ in range(4 if spots else 0):
            m = spots[int(rng.integers(len(spots)))]
            slip = _typo(m.group(), rng)
            if slip not in _known() and _corrections(slip) == [m.group()]:
                text = text[:m.start()] + slip + text[m.end():]
                break
    if rng.random() < PUNCT_RATE:
        end = ENDINGS[int(rng.integers(len(ENDINGS)))]
    return text, end


def _train_phrasing(p: Phrase, rng: np.random.Generator, noise: bool) -> str:
    frames = TRAIN[p.family]
    command, tree = _frame(frames[int(rng.integers(len(frames)))])
    prefixes = COMMAND_PREFIXES if command else QUESTION_PREFIXES
    prefix = prefixes[int(rng.integers(len(prefixes)))] if rng.random() < 0.4 else ""
    suffix = SUFFIX if rng.random() < 0.2 and "please" not in prefix else ""
    end = "." if command and prefix not in ASKING_PREFIXES else "?"
    body = re.sub(" +", " ", prefix + _sample(tree, rng) + suffix)
    clean = body[0].upper() + body[1:] + end
    if noise:
        body, end = _noisy(body, rng, end)
        upper = rng.random() >= LOWER_RATE
        body = (body[0].upper() + body[1:] if upper else body) + end
    for text in ((body, clean) if noise else (clean,)):
        out = text.format(**p.fields)
        try:
            got = parse(out)
        except ValueError:
            continue
        if got.family == p.family and got.fields == p.fields:
            return out
    raise RuntimeError(f"phrasing grammar: {clean!r} does not parse back to family {p.family!r}")


def rephrase(question: str, rng: np.random.Generator, split: str = "train", *, noise: bool = True) -> str:
    """The same question (family and fields) in another phrasing.

    split "train": from the train generator (`noise=False`: without typos, lower-casing and other
    end punctuation); "heldout": one of HELDOUT[family], never seen in training.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown phrasing split {split!r}; known: {list(SPLITS)}")
    p = parse(question)
    if split == "heldout":
        options = HELDOUT[p.family]
        return options[int(rng.integers(len(options)))].format(**p.fields)
    return _train_phrasing(p, rng, noise)


def stable_hash(text: str) -> int:
    """A 63-bit hash of `text`, the same in every process (unlike the salted `hash()`)."""
    return int.from_bytes(hashlib.sha256(str(text).encode()).digest()[:8], "little") >> 1


def rephrase_samples(samples: Iterable, split: str = "heldout", seed: int = 0) -> list:
    """Copies of `samples` with the question rephrased; answers, boxes and ids unchanged. Sample
    `s` draws from numpy seed [seed, stable_hash(s.id)], so its phrasing never depends on order."""
    return [replace(s, question=rephrase(s.question, np.random.default_rng([seed, stable_hash(s.id)]), split))
            for s in samples]


# ---------------------------------------------------------------- vocabularies and sizes

def content_words(text: str) -> set[str]:
    """Lower-case words of `text` less STOP_WORDS, IDENTIFIERS, single letters and {fields}."""
    words = re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", text.lower()))
    return {w for w in words if len(w) > 1 and w not in STOP_WORDS and w not in IDENTIFIERS}


def train_vocabulary() -> frozenset[str]:
    """Every content word the train generator can emit (typos aside)."""
    texts = [lit for frames in TRAIN.values() for f in frames for lit in _literals(_frame(f)[1])]
    texts += [*QUESTION_PREFIXES, *COMMAND_PREFIXES, SUFFIX]
    return frozenset(w for t in texts for w in content_words(t))


def heldout_vocabulary() -> frozenset[str]:
    return frozenset(w for frames in HELDOUT.values() for t in frames for w in content_words(t))


def template_vocabulary() -> frozenset[str]:
    """Content words of the datasets' own TEMPLATES."""
    return frozenset(w for frames in TEMPLATES.values() for t in frames for w in content_words(t))


def train_size(family: str) -> int:
    """Number of clean train phrasings of `family` (frame expansions x wrappers; no noise)."""
    q, c = len(QUESTION_PREFIXES) + 1, len(COMMAND_PREFIXES) + 1
    wrappers = {False: 2 * q, True: 2 * c - sum("please" in p for p in COMMAND_PREFIXES)}
    return sum(_size(tree) * wrappers[command] for command, tree in map(_frame, TRAIN[family]))
