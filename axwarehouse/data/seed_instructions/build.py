"""Build the seed instruction pools shipped with axwarehouse (run: ``python build.py`` in this folder).

AxBench samples instructions from databricks-dolly-15k (text), GSM8K (math) and python_code_instructions_18k (code);
those are not available offline, so these pools are written from scratch for axwarehouse: templates × topic lists
below, all original text, released with the project under Apache-2.0. Each genre is shuffled with a fixed seed and
split into halves: ``train`` (training positives/negatives) and ``test`` (latent evaluation), like AxBench's
``_train``/``_test`` split of each pool. The output is deterministic; the JSONL files are committed.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

TEXT_TEMPLATES = [
    "What are some good tips for {x}?",
    "Explain why {x} matters to many people",
    "Describe a typical day for someone who loves {x}",
    "What are the pros and cons of {x}?",
    "How would you explain {x} to a ten-year-old?",
    "Write a short paragraph about the history of {x}",
    "What mistakes do beginners make with {x}?",
    "Give three reasons someone might get interested in {x}",
]
TEXT_TOPICS = [
    "gardening", "learning a new language", "running a marathon", "baking bread", "birdwatching", "photography",
    "keeping a journal", "camping in the mountains", "playing chess", "recycling at home", "public libraries",
    "volunteering", "raising chickens", "traveling by train", "learning to swim", "painting with watercolors",
    "saving money", "cooking for a large family", "moving to a new city", "adopting a dog", "growing tomatoes",
    "studying for exams", "working from home", "visiting museums", "riding a bicycle to work", "knitting",
    "playing the guitar", "hiking alone", "writing letters by hand", "making pottery", "stargazing",
    "reading poetry", "fixing a leaky faucet", "planning a wedding", "keeping houseplants alive", "fishing",
]
MATH_TEMPLATES = [
    "{a} has {n} {things}. {b} has {m} more {things} than {a}. How many {things} do they have together?",
    "A shop sells {things} for ${p} each. {a} buys {n} of them and pays with a ${bill} bill. How much change does {a} get?",
    "{a} reads {n} pages a day. How many days does it take to finish a book of {total} pages?",
    "There are {n} {things} in a box. {a} gives away {k} of them and then buys {m} more. How many are in the box now?",
    "{a} saves ${p} every week. How many weeks until {a} has ${total}?",
    "A train travels {n} miles per hour for {k} hours. How far does it go?",
    "{a} splits {total} {things} equally among {k} friends. How many does each friend get, and how many are left?",
    "The price of {things} rose from ${p} to ${q}. By what percent did the price increase?",
]
NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Imani", "Jonas", "Kira", "Luis", "Maya",
         "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]
THINGS = ["apples", "marbles", "stickers", "pencils", "books", "cookies", "stamps", "shells", "cards", "plants"]
CODE_TEMPLATES = [
    "Write a Python function that {x}",
    "Create a Python program that {x}",
    "Write a Python script that {x} and prints the result",
    "Implement a Python class with a method that {x}",
]
CODE_TASKS = [
    "reverses a string", "checks whether a number is prime", "counts the vowels in a sentence",
    "returns the n-th Fibonacci number", "merges two sorted lists", "removes duplicates from a list",
    "finds the largest element in a list", "converts Celsius to Fahrenheit", "checks if a word is a palindrome",
    "computes the factorial of a number", "sorts a list of dictionaries by a key", "reads a CSV file and sums a column",
    "counts word frequencies in a text", "flattens a nested list", "validates an email address with a regex",
    "computes the average of a list of numbers", "finds the greatest common divisor of two numbers",
    "generates a random password", "transposes a matrix", "checks whether two strings are anagrams",
    "returns the second largest number in a list", "converts a decimal number to binary",
    "capitalizes the first letter of every word", "finds all pairs in a list that sum to a target",
    "implements binary search", "rotates a list by k positions", "counts the lines in a text file",
    "parses a date string and prints the weekday", "computes the median of a list", "builds a simple stack",
    "finds the longest word in a sentence", "removes punctuation from a string",
    "calculates compound interest", "checks whether a year is a leap year", "computes the dot product of two vectors",
    "groups a list of words by their first letter", "implements bubble sort", "finds the mode of a list",
    "converts a list of tuples into a dictionary", "checks whether parentheses in a string are balanced",
]


def text_pool() -> list[str]:
    return [t.format(x=x) for t, x in itertools.product(TEXT_TEMPLATES, TEXT_TOPICS)]


def math_pool(rng: random.Random) -> list[str]:
    out = []
    for t in MATH_TEMPLATES:
        for _ in range(36):
            a, b = rng.sample(NAMES, 2)
            n, m, k = rng.randint(3, 40), rng.randint(2, 30), rng.randint(2, 9)
            p = rng.randint(2, 20)
            out.append(t.format(a=a, b=b, n=n, m=m, k=k, p=p, q=p + rng.randint(1, 10), bill=(n * p // 10 + 1) * 10,
                                total=rng.randint(50, 500), things=rng.choice(THINGS)))
    return out


def code_pool() -> list[str]:
    return [t.format(x=x) for t, x in itertools.product(CODE_TEMPLATES, CODE_TASKS)]


def main() -> None:
    rng = random.Random(20250117)
    here = Path(__file__).resolve().parent
    for genre, pool in (("text", text_pool()), ("math", math_pool(rng)), ("code", code_pool())):
        pool = list(dict.fromkeys(pool))  # no duplicate instructions inside a pool
        rng.shuffle(pool)
        half = len(pool) // 2
        with open(here / f"{genre}.jsonl", "w", encoding="utf-8") as fh:
            for i, text in enumerate(pool):
                row = {"id": i, "split": "train" if i < half else "test", "instruction": text}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
