"""Which root fields call the model, declared where each field is defined.

    @llm_field(description=...)           a query that asks the model
    @llm_subscription(description=...)    a stream from the model

Their names, read back from the root types, are what the rate limit and
MAX_LLM_FIELDS count. A new task defined with plain `strawberry.field`
cannot escape them: its first call fails (RequestContext.authorized_llm
refuses an operation that asked for no model call), in its first test.
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.schema.config import StrawberryConfig
from strawberry.types.base import get_object_definition

CALLS_MODEL = "calls_model"


def llm_field(**options: Any) -> Any:
    return strawberry.field(metadata={CALLS_MODEL: True}, **options)


def llm_subscription(**options: Any) -> Any:
    return strawberry.subscription(metadata={CALLS_MODEL: True}, **options)


def llm_field_names(*roots: type, config: StrawberryConfig) -> frozenset[str]:
    """The GraphQL names of the fields of `roots` declared as calling the model."""
    return frozenset(
        config.name_converter.from_field(field)
        for root in roots
        for field in get_object_definition(root, strict=True).fields
        if field.metadata.get(CALLS_MODEL)
    )
