"""Generate the coarse-label tables of Stanford Cars 196 and CUB-200-2011 from their class names.

    .venv/bin/python scripts/make_coarse_tables.py            # writes data/coarse/*.csv
    .venv/bin/python scripts/make_coarse_tables.py --check    # fails if the CSVs are stale

The paper ("22 coarse classes ... using the types of the cars") publishes no mapping. The three
vocabularies below are ours, each built by a rule stated here (docs/spec.md, "Data protocol"):

- suffix22: the last word of the class name before the year ("Sedan", "SUV", "Cab", "SS",
  "SRT-8", "Type-S", ...). Exactly 22 labels over the 196 classes, 17 of them in classes 1-98.
  This is our inference of the paper's mapping.
- body9: nine body types. Rule 1: the suffix when it is one of the nine. Rule 2: a suffix ending
  in "Cab" ("SuperCab") is "Cab". Rule 3: otherwise the last body-type word elsewhere in the name
  ("Infiniti G Coupe IPL" -> Coupe). The classes no rule reaches are decided by hand in
  BODY9_MANUAL, one line of reason each.
- make49: the manufacturer, the first word of the name, except the three makes written with two
  words (MULTI_WORD_MAKES). Hyphenated makes ("Rolls-Royce", "Mercedes-Benz") are one word
  already; "HUMMER" (GM's brand) and "AM General" (the Hummer H1's maker) stay apart, as do
  "Ram" and "Dodge", because the class names spell them apart. 49 makes.
- lastword58 (CUB-200-2011, which has no coarse labels either): the last word of the species
  name ("Black footed Albatross" -> Albatross, "Le Conte Sparrow" -> Sparrow), except the 15
  species of CUB_MANUAL whose last word is no group name of the list or whose group is named
  by other species (one line of reason each). 58 labels, 44 of them in species 1-100.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from qlib.data import cub200_class_names, stanford_class_names

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "data" / "coarse"

BODY9 = ("Sedan", "SUV", "Coupe", "Convertible", "Hatchback", "Wagon", "Minivan", "Van", "Cab")
MULTI_WORD_MAKES = ("AM General", "Aston Martin", "Land Rover")

# Classes whose name carries no body-type word: decided by hand from the production car.
BODY9_MANUAL = {
    "Acura TL Type-S 2008": ("Sedan", "the TL is a four-door sedan"),
    "Acura Integra Type R 2001": ("Coupe", "the US Integra Type R is the three-door sport coupe"),
    "Buick Regal GS 2012": ("Sedan", "the Regal is a four-door sedan"),
    "Chevrolet Corvette ZR1 2012": ("Coupe", "the ZR1 was built as a coupe only"),
    "Chevrolet Corvette Ron Fellows Edition Z06 2007": ("Coupe", "the Z06 is a fixed-roof coupe"),
    "Chevrolet HHR SS 2010": ("Wagon", "the HHR is a compact wagon"),
    "Chevrolet Cobalt SS 2010": ("Coupe", "the 2010 Cobalt SS was sold as a coupe"),
    "Chevrolet TrailBlazer SS 2009": ("SUV", "the TrailBlazer is an SUV"),
    "Chrysler 300 SRT-8 2010": ("Sedan", "the 300 is a four-door sedan"),
    "Dodge Challenger SRT8 2011": ("Coupe", "the Challenger is a two-door coupe"),
    "Dodge Charger SRT-8 2009": ("Sedan", "the Charger (2006-) is a four-door sedan"),
    "FIAT 500 Abarth 2012": ("Hatchback", "the 500 is a three-door hatchback"),
    "Jaguar XK XKR 2012": ("Coupe", "the XKR coupe; the convertible would say so"),
    "Lamborghini Gallardo LP 570-4 Superleggera 2012": ("Coupe", "the Superleggera is a coupe"),
}

# CUB species whose last word does not name their group: (coarse name, reason).
CUB_MANUAL = {
    "Chuck will Widow": ("Nightjar", "a nightjar; 'Widow' is part of its call-name"),
    "Whip poor Will": ("Nightjar", "a nightjar; 'Will' is part of its call-name"),
    "Nighthawk": ("Nightjar", "the Common Nighthawk is a nightjar"),
    "Green Violetear": ("Hummingbird", "a hummingbird"),
    "Sayornis": ("Flycatcher", "the phoebes' genus, tyrant flycatchers"),
    "Western Wood Pewee": ("Flycatcher", "a tyrant flycatcher"),
    "Geococcyx": ("Cuckoo", "the roadrunners' genus, in the cuckoo family"),
    "Red legged Kittiwake": ("Gull", "kittiwakes are gulls"),
    "Gadwall": ("Duck", "a dabbling duck"),
    "Mallard": ("Duck", "a dabbling duck"),
    "Ovenbird": ("Warbler", "a New World warbler"),
    "American Redstart": ("Warbler", "a New World warbler"),
    "Common Yellowthroat": ("Warbler", "a New World warbler"),
    "Northern Waterthrush": ("Warbler", "a New World warbler"),
    "Louisiana Waterthrush": ("Warbler", "a New World warbler"),
}

_YEAR = re.compile(r"^(19|20)\d\d$")


def suffix_label(name: str) -> str:
    """The last word before the year: 'Acura TL Type-S 2008' -> 'Type-S'."""
    words = name.split()
    if len(words) < 2 or not _YEAR.match(words[-1]):
        raise ValueError(f"class name {name!r} should end with a model year like 2012.")
    return words[-2]


def body9_label(name: str) -> tuple[str, str]:
    """(body type, the rule or manual decision that gave it)."""
    suffix = suffix_label(name)
    if suffix in BODY9:
        return suffix, "rule 1: suffix"
    if suffix.endswith("Cab"):
        return "Cab", "rule 2: suffix ends in Cab"
    body_words = [w for w in name.split()[:-2] if w in BODY9]
    if body_words:
        return body_words[-1], "rule 3: body word in the name"
    if name in BODY9_MANUAL:
        label, reason = BODY9_MANUAL[name]
        return label, f"manual: {reason}"
    raise ValueError(f"no body9 rule covers {name!r}: add it to BODY9_MANUAL with a reason.")


def make_label(name: str) -> str:
    """The manufacturer: the first word, or one of MULTI_WORD_MAKES."""
    for make in MULTI_WORD_MAKES:
        if name.startswith(make + " "):
            return make
    return name.split()[0]


def cub_label(name: str) -> tuple[str, str]:
    """(coarse name, the rule or manual decision that gave it) of a CUB species."""
    if name in CUB_MANUAL:
        label, reason = CUB_MANUAL[name]
        return label, f"manual: {reason}"
    return name.split()[-1], "last word"


def build_cub_tables(names: list[str]) -> dict[str, pd.DataFrame]:
    """{"lastword58"} -> DataFrame(class_id 1..200, class_name, coarse_name, rule)."""
    labels = [cub_label(n) for n in names]
    table = pd.DataFrame(
        {
            "class_id": range(1, len(names) + 1),
            "class_name": names,
            "coarse_name": [label for label, _ in labels],
            "rule": [rule for _, rule in labels],
        }
    )
    found, first_half = table["coarse_name"].nunique(), table[:100]["coarse_name"].nunique()
    if (found, first_half) != (58, 44):
        raise ValueError(
            f"lastword58 should have 58 labels, 44 in species 1-100: {found}, {first_half}."
        )
    return {"lastword58": table}


def build_tables(names: list[str]) -> dict[str, pd.DataFrame]:
    """{"suffix22", "body9", "make49"} -> DataFrame(class_id 1..196, class_name, coarse_name,
    rule)."""
    ids = list(range(1, len(names) + 1))
    body = [body9_label(n) for n in names]
    tables = {
        "suffix22": pd.DataFrame(
            {
                "class_id": ids,
                "class_name": names,
                "coarse_name": [suffix_label(n) for n in names],
                "rule": "last word before the year",
            }
        ),
        "body9": pd.DataFrame(
            {
                "class_id": ids,
                "class_name": names,
                "coarse_name": [b[0] for b in body],
                "rule": [b[1] for b in body],
            }
        ),
        "make49": pd.DataFrame(
            {
                "class_id": ids,
                "class_name": names,
                "coarse_name": [make_label(n) for n in names],
                "rule": [
                    "multi-word make" if make_label(n) in MULTI_WORD_MAKES else "first word"
                    for n in names
                ],
            }
        ),
    }
    check_tables(tables)
    return tables


def check_tables(tables: dict[str, pd.DataFrame]) -> None:
    """The label counts docs/spec.md promises."""
    expected = {"suffix22": 22, "body9": 9, "make49": 49}
    for name, n_labels in expected.items():
        found = tables[name]["coarse_name"].nunique()
        if found != n_labels:
            raise ValueError(f"{name} should have {n_labels} labels, the rules gave {found}.")
    first_half = tables["suffix22"].query("class_id <= 98")["coarse_name"].nunique()
    if first_half != 17:
        raise ValueError(f"suffix22 should have 17 labels in classes 1-98, found {first_half}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed CSVs")
    args = parser.parse_args(argv)
    tables = {**build_tables(stanford_class_names()), **build_cub_tables(cub200_class_names())}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, table in tables.items():
        path = OUT_DIR / f"{name}.csv"
        text = table.to_csv(index=False, lineterminator="\n")
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(
                f"{path.relative_to(REPO)}: {len(table)} classes, "
                f"{table['coarse_name'].nunique()} labels"
            )
    if stale:
        print("stale, rerun scripts/make_coarse_tables.py: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
