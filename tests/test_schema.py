"""schema.graphql is what the code builds, and the CLI exports exactly that."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gptmini_graphql.schema import build_schema

SCHEMA_FILE = Path(__file__).parents[1] / "schema.graphql"


def test_schema_file_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == str(build_schema()) + "\n", (
        "schema.graphql is out of date: run `make schema` and commit it"
    )


def test_export_schema_command_prints_the_schema(tmp_path: Path) -> None:
    output = tmp_path / "schema.graphql"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gptmini_graphql",
            "export-schema",
            "--output",
            str(output),
        ],
        check=True,
    )
    assert output.read_text(encoding="utf-8") == SCHEMA_FILE.read_text(encoding="utf-8")


def test_the_readme_graphql_examples_are_valid_for_the_schema() -> None:
    """The README never shows an operation the server would refuse."""
    from graphql import build_schema as graphql_schema
    from graphql import parse, validate

    readme = (SCHEMA_FILE.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```graphql\n(.*?)```", readme, re.DOTALL)
    assert blocks
    schema = graphql_schema(build_schema().as_str())
    for block in blocks:
        assert validate(schema, parse(block)) == [], block


def test_every_field_answering_with_usage_counts_as_a_model_call() -> None:
    # A root field whose result reports model usage (an answer's `Usage`, not
    # a user's `UsageReport` from the ledger) calls the model; the rate limit
    # and MAX_LLM_FIELDS count exactly the fields declared as such.
    from graphql import build_schema as parse_sdl
    from graphql import get_named_type
    from strawberry.schema.config import StrawberryConfig

    from gptmini_graphql.schema.llm_fields import llm_field_names
    from gptmini_graphql.schema.mutation import Mutation
    from gptmini_graphql.schema.query import Query
    from gptmini_graphql.schema.subscription import Subscription

    sdl = parse_sdl(SCHEMA_FILE.read_text(encoding="utf-8"))
    with_usage = {
        name
        for root in (sdl.query_type, sdl.mutation_type, sdl.subscription_type)
        if root is not None
        for name, field in root.fields.items()
        if (usage := getattr(get_named_type(field.type), "fields", {}).get("usage"))
        and get_named_type(usage.type).name == "Usage"
    }
    declared = llm_field_names(Query, Mutation, Subscription, config=StrawberryConfig())
    assert (
        with_usage
        == declared
        == {
            "summarize",
            "translate",
            "complete",
            "analyze",
            "completeStream",
        }
    )
