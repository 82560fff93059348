"""A seeded fictional world: a passage corpus and questions that only search can answer.

The people, towns, countries and organisations are invented from syllables, so no pretrained model knows
the answers: a policy scores only by searching. Questions are single-hop ("Where was X born?") and two-hop
("In which country was X born?"), the second needing two searches, as in multi-hop QA benchmarks.

Example:
    >>> from zerosearch_trl.demo import make_demo_task
    >>> task = make_demo_task(n_questions=8, seed=0)
    >>> len(task.dataset), task.corpus.column_names
    (8, ['id', 'title', 'text'])
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import datasets

from zerosearch_trl.prompts import PromptStyle, build_policy_prompt

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "tr", "gr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m"]
_TOWN_SUFFIXES = ["ford", "holm", "vik", "stad", "mouth", "burg", "ton", "dale"]
_ORG_KINDS = ["Institute", "Company", "Foundation", "Orchestra", "Observatory", "Guild", "Press", "Academy"]
_PROFESSIONS = ["botanist", "engineer", "composer", "cartographer", "chemist", "architect", "novelist", "astronomer"]


@dataclass
class DemoTask:
    """A generated QA task: ``dataset`` in :func:`~zerosearch_trl.data.load_qa_dataset`'s format and its
    ``corpus`` (columns ``id``, ``title``, ``text``).

    Example:
        >>> import tempfile
        >>> task = make_demo_task(n_questions=4, seed=1)
        >>> task.dataset.column_names
        ['prompt', 'question', 'golden_answers', 'data_source', 'id']
        >>> sorted(path.name for path in task.save(tempfile.mkdtemp()).iterdir())
        ['corpus.jsonl', 'questions.jsonl']
    """

    dataset: datasets.Dataset
    corpus: datasets.Dataset

    def save(self, folder: str | Path) -> Path:
        """Write ``questions.jsonl`` (FlashRAG layout) and ``corpus.jsonl`` into ``folder``; return it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "questions.jsonl", "w", encoding="utf-8") as f:
            for row in self.dataset.remove_columns("prompt"):
                f.write(json.dumps(row) + "\n")
        with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
            for row in self.corpus:
                f.write(json.dumps(row) + "\n")
        return folder


class _NameMaker:
    """Unique pronounceable invented names."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def word(self, syllables: int) -> str:
        while True:
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
            word = ("".join(parts) + self.rng.choice(_CODAS)).capitalize()
            if word not in self.used:
                self.used.add(word)
                return word


def make_demo_task(
    n_questions: int = 256,
    seed: int = 0,
    *,
    two_hop_fraction: float = 0.3,
    prompt_style: PromptStyle = "one_shot",
) -> DemoTask:
    """Generate a fictional world and ``n_questions`` questions about it.

    Args:
        n_questions: number of questions (each about a different person where the world allows).
        seed: the world and the questions are a pure function of the seed.
        two_hop_fraction: share of questions that need two facts (two searches).
        prompt_style: policy instruction style; ``"one_shot"`` suits the embedded 135M model.

    Returns:
        A :class:`DemoTask` whose dataset has ``prompt``, ``question``, ``golden_answers``, ``data_source``
        (``"demo"``) and ``id``; the corpus has one passage per person, town and organisation.

    Example:
        >>> task = make_demo_task(n_questions=2, seed=7)
        >>> task.dataset[0]["id"], task.dataset[0]["data_source"]
        ('demo-7-0', 'demo')
        >>> task.dataset["question"] == make_demo_task(n_questions=2, seed=7).dataset["question"]  # same seed, same task
        True
    """
    if n_questions < 1:
        raise ValueError(f"n_questions must be >= 1, got {n_questions}.")
    if not 0.0 <= two_hop_fraction <= 1.0:
        raise ValueError(f"two_hop_fraction must be in [0, 1], got {two_hop_fraction}.")
    rng = random.Random(seed)
    people, towns, orgs = _make_world(rng, n_people=max(8, n_questions))
    corpus = _world_corpus(people, towns, orgs)
    town_country = {t["name"]: t["country"] for t in towns}
    rows = [
        {"id": f"demo-{seed}-{i}", **_ask(rng, people[i % len(people)], town_country, two_hop_fraction)}
        for i in range(n_questions)
    ]
    dataset = datasets.Dataset.from_list(
        [
            {
                "prompt": build_policy_prompt(r["question"], prompt_style),
                "question": r["question"],
                "golden_answers": r["golden_answers"],
                "data_source": "demo",
                "id": r["id"],
            }
            for r in rows
        ]
    )
    return DemoTask(dataset=dataset, corpus=corpus)


def _make_world(rng: random.Random, n_people: int) -> tuple[list[dict], list[dict], list[dict]]:
    """``(people, towns, organisations)``, each a dict of invented facts."""
    names = _NameMaker(rng)
    countries = [names.word(2) + "ia" for _ in range(max(3, n_people // 24))]
    towns = [
        {"name": names.word(2) + rng.choice(_TOWN_SUFFIXES), "country": rng.choice(countries), "river": names.word(2)}
        for _ in range(max(6, n_people // 6))
    ]
    orgs = [
        {
            "name": f"{names.word(2)} {rng.choice(_ORG_KINDS)}",
            "town": rng.choice(towns)["name"],
            "year": rng.randint(1820, 1990),
        }
        for _ in range(max(6, n_people // 3))
    ]
    people = [
        {
            "name": f"{names.word(2)} {names.word(2)}",
            "town": rng.choice(towns)["name"],
            "org": rng.choice(orgs),
            "profession": rng.choice(_PROFESSIONS),
            "born": rng.randint(1850, 1995),
        }
        for _ in range(n_people)
    ]
    return people, towns, orgs


def _world_corpus(people: list[dict], towns: list[dict], orgs: list[dict]) -> datasets.Dataset:
    """One passage per town, organisation and person."""
    passages = (
        [
            (
                t["name"],
                f"{t['name']} is a town in {t['country']}, on the banks of the {t['river']} river. "
                f"It is known for its old market square.",
            )
            for t in towns
        ]
        + [
            (o["name"], f"The {o['name']} was founded in {o['year']}. It is headquartered in {o['town']}.")
            for o in orgs
        ]
        + [
            (
                p["name"],
                f"{p['name']} (born {p['born']}) is a {p['profession']} born in {p['town']}. "
                f"{p['name']} founded the {p['org']['name']}.",
            )
            for p in people
        ]
    )
    return datasets.Dataset.from_dict(
        {
            "id": [f"demo-doc-{i}" for i in range(len(passages))],
            "title": [title for title, _ in passages],
            "text": [text for _, text in passages],
        }
    )


def _ask(rng: random.Random, person: dict, town_country: dict[str, str], two_hop_fraction: float) -> dict:
    """One question about ``person``: two-hop with probability ``two_hop_fraction``, else single-hop."""
    org = person["org"]
    if rng.random() < two_hop_fraction:
        question, answer = rng.choice(
            [
                (f"In which country was {person['name']} born?", town_country[person["town"]]),
                (f"In what year was the organisation founded by {person['name']} established?", str(org["year"])),
                (f"In which town is the organisation founded by {person['name']} headquartered?", org["town"]),
            ]
        )
    else:
        question, answer = rng.choice(
            [
                (f"In which town was {person['name']} born?", person["town"]),
                (f"Which organisation did {person['name']} found?", org["name"]),
                (f"In what year was {person['name']} born?", str(person["born"])),
                (f"In which town is the {org['name']} headquartered?", org["town"]),
            ]
        )
    return {"question": question, "golden_answers": [answer]}
