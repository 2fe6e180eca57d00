"""Languages a user may name: ISO 639-1 codes or their English names.

The table comes from pycountry's copy of Debian's iso-codes data, so we never
keep a language list of our own. Only validated names ever reach a prompt.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _two_letter_languages() -> list[tuple[str, str]]:
    """(ISO 639-1 code, English name) of each language that has such a code,
    from pycountry's data file. Not through `pycountry.languages`: it keeps
    all ~7,900 ISO 639-3 languages as objects (6 MB resident in every API
    process) for the 184 we use; here each other entry is dropped as parsed."""
    spec = importlib.util.find_spec("pycountry")  # its folder, not importing it
    assert spec is not None and spec.submodule_search_locations is not None
    data = Path(spec.submodule_search_locations[0], "databases", "iso639-3.json")

    def entry(pairs: list[tuple[str, Any]]) -> Any:
        fields = dict(pairs)
        if "alpha_3" not in fields:  # the top level: {"639-3": [entries]}
            return fields
        code = fields.get("alpha_2")
        return (code, fields["name"]) if code is not None else None

    entries = json.loads(data.read_bytes(), object_pairs_hook=entry)["639-3"]
    return [row for row in entries if row is not None]


def _build_index() -> tuple[dict[str, Language], dict[str, Language]]:
    by_code: dict[str, Language] = {}
    by_name: dict[str, Language] = {}
    for code, full_name in _two_letter_languages():
        name = _PARENTHESIS.sub("", full_name)
        language = Language(code=code, name=name)
        by_code[code] = language
        by_name[name.lower()] = language
        by_name[full_name.lower()] = language
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
