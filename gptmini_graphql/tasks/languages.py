"""Languages a user may name: ISO 639-1 codes or their English names.

The table comes from pycountry (Debian's iso-codes data), so we never keep a
language list of our own. Only validated names ever reach a prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pycountry

from gptmini_graphql.errors import BadUserInput


@dataclass(frozen=True, slots=True)
class Language:
    code: str  # ISO 639-1, lower case
    name: str  # English name, as a prompt says it


# Names people use that the standard spells otherwise.
ALIASES = {
    "castilian": "es",
    "farsi": "fa",
    "filipino": "tl",
    "flemish": "nl",
    "gaelic": "gd",
    "greek": "el",
    "haitian creole": "ht",
    "kyrgyz": "ky",
    "maldivian": "dv",
    "mandarin": "zh",
    "odia": "or",
    "punjabi": "pa",
    "uyghur": "ug",
    "valencian": "ca",
}

_PARENTHESIS = re.compile(r"\s*\(.*\)\s*$")
# A region or script subtag ("pt-BR", "zh_Hant") names the same base language.
_SUBTAG = re.compile(r"^([a-z]{2})[-_][a-z0-9]{2,8}$")


def _build_index() -> tuple[dict[str, Language], dict[str, Language]]:
    by_code: dict[str, Language] = {}
    by_name: dict[str, Language] = {}
    for entry in pycountry.languages:
        code = getattr(entry, "alpha_2", None)
        if code is None:
            continue
        name = _PARENTHESIS.sub("", entry.name)
        language = Language(code=code, name=name)
        by_code[code] = language
        by_name[name.lower()] = language
        by_name[entry.name.lower()] = language
    for alias, code in ALIASES.items():
        by_name.setdefault(alias, by_code[code])
    return by_code, by_name


BY_CODE, BY_NAME = _build_index()
CODES = sorted(BY_CODE)


def resolve_language(value: str, argument: str) -> Language:
    """The language a user named, or BAD_USER_INPUT naming the argument."""
    key = " ".join(value.split()).lower()
    if match := _SUBTAG.match(key):
        key = match.group(1)
    language = BY_CODE.get(key) or BY_NAME.get(key)
    if language is None:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise BadUserInput(
            f"{argument}: unknown language {shown!r}; use an ISO 639-1 code "
            "such as 'fr' or an English name such as 'French'."
        )
    return language
