#!/usr/bin/env python3
"""Pair two models' `harness toyworld judge` runs image by image: the paired comparisons of docs/toyworld.md.

Each judge log holds one line per prompt, the prompt's seeds as marks (`+` the image matches its caption
exactly; `c` every named concept present but not an exact match; `.` neither) then two spaces and the prompt. Two runs over the same prompts and seeds
made the same images up to the model, so they are compared per image: how many are right only on A, only on
B, and the exact two-sided McNemar (binomial) test of those two counts; then the match rate by the number of
objects the prompt names.

Usage (standard library only; never needed by CI):
  pair_judges.py A.log[,A2.log...] B.log[,B2.log...]
e.g. the reference measure (400 held-out captions x 2 seeds, in two halves):
  $H toyworld judge --device tch --model M --captions 200 --seeds 2 > A1.log
  $H toyworld judge --device tch --model M --captions 200 --seeds 2 --first-caption 200 > A2.log
  (the same for the other model), then  pair_judges.py A1.log,A2.log B1.log,B2.log
"""
import math
import re
import sys

# a judge line (src/cli/toyworld.rs, `judge`): one mark per seed, two spaces, the prompt
LINE = re.compile(r"^([+c.]+)  (.+)$")


def load(spec):
    """(prompt, marks) per prompt line of the comma-separated logs, in order."""
    rows = []
    for path in spec.split(","):
        try:
            text = open(path, encoding="utf-8").read()
        except OSError as err:
            sys.exit(f"{path}: {err.strerror}")
        for line in text.splitlines():
            m = LINE.match(line)
            if m:
                rows.append((m.group(2), m.group(1)))
    if not rows:
        sys.exit(f"{spec}: no judge lines (`<marks>  <prompt>`) found")
    return rows


def mcnemar_exact(b, c):
    """Two-sided exact McNemar p-value for b and c discordant pairs."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def objects_named(prompt):
    return prompt.count(" and ") + prompt.count(", ") + 1


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    a, b = load(argv[1]), load(argv[2])
    if [p for p, _ in a] != [p for p, _ in b] or [len(s) for _, s in a] != [len(s) for _, s in b]:
        sys.exit("the two runs judged different prompts or seeds: nothing to pair")
    n = sum(len(s) for _, s in a)
    right_a = sum(s.count("+") for _, s in a)
    right_b = sum(s.count("+") for _, s in b)
    only_a = only_b = 0
    by_objects = {}
    for (prompt, sa), (_, sb) in zip(a, b):
        counts = by_objects.setdefault(objects_named(prompt), [0, 0, 0])
        for x, y in zip(sa, sb):
            only_a += x == "+" and y != "+"
            only_b += x != "+" and y == "+"
            counts[0] += x == "+"
            counts[1] += y == "+"
            counts[2] += 1
    print(f"A: {right_a}/{n} = {100 * right_a / n:.1f}%   B: {right_b}/{n} = {100 * right_b / n:.1f}%")
    print(f"right only on A: {only_a}, only on B: {only_b}, exact McNemar p = {mcnemar_exact(only_a, only_b):.3g}")
    for objects in sorted(by_objects):
        ka, kb, m = by_objects[objects]
        print(f"  {objects} objects named: A {ka}/{m} ({100 * ka / m:.1f}%), B {kb}/{m} ({100 * kb / m:.1f}%)")


if __name__ == "__main__":
    main(sys.argv)
