"""A seeded, generated corpus: ``sentences(n)`` is the same list on every machine."""

from __future__ import annotations

import random

_SUBJECTS = ["The river", "A quiet village", "The old library", "This small robot", "The orchestra",
             "A mountain pass", "The harbour town", "A young chemist", "The desert wind", "An ancient map"]
_VERBS = ["describes", "hides", "remembers", "follows", "celebrates", "questions", "measures", "echoes"]
_OBJECTS = ["the history of trade routes", "a forgotten winter festival", "the migration of birds",
            "the price of bread in 1820", "a theorem about prime numbers", "the first printed newspaper",
            "a recipe for saffron rice", "the rules of a card game", "a storm over the northern sea",
            "the design of suspension bridges", "an election in a coastal city", "the life of honeybees"]
_TAILS = ["", " in great detail", " for young readers", " according to local legend",
          " with surprising results", " during the long night", " before the war", " in three chapters"]


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` deterministic English-like sentences (article id suffix keeps them distinct)."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)} (article {i})."
        for i in range(n)
    ]
