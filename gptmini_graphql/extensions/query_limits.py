"""Refuses abusive documents at validation, each refusal with its own code:
too deep, too many aliases, too many LLM fields. (Too many tokens stops the
parser itself, QUERY_TOO_LARGE; too large a body never reaches it.)"""

from __future__ import annotations

from typing import Any

from graphql import (
    ASTValidationRule,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    ValidationRule,
)

from gptmini_graphql.errors import QUERY_TOO_DEEP, TOO_MANY_ALIASES, TOO_MANY_LLM_FIELDS
from gptmini_graphql.extensions.operation_shape import depth, root_field_counts


def query_limit_rules(
    *,
    max_depth: int,
    max_aliases: int,
    max_llm_fields: int,
    llm_fields: frozenset[str],
) -> list[type[ASTValidationRule]]:
    class DepthLimit(ValidationRule):
        def enter_operation_definition(
            self, node: OperationDefinitionNode, *_: Any
        ) -> None:
            levels = depth(node.selection_set, self.context.get_fragment)
            if levels > max_depth:
                self.report_error(
                    GraphQLError(
                        f"The operation nests {levels} levels deep; the limit is {max_depth}.",
                        node,
                        extensions={"code": QUERY_TOO_DEEP},
                    )
                )

    class AliasLimit(ValidationRule):
        aliases = 0

        def enter_field(self, node: FieldNode, *_: Any) -> None:
            if node.alias is not None:
                self.aliases += 1

        def leave_document(self, *_: Any) -> None:
            if self.aliases > max_aliases:
                self.report_error(
                    GraphQLError(
                        f"The document has {self.aliases} aliases; the limit is {max_aliases}.",
                        extensions={"code": TOO_MANY_ALIASES},
                    )
                )

    class LLMFieldLimit(ValidationRule):
        def enter_operation_definition(
            self, node: OperationDefinitionNode, *_: Any
        ) -> None:
            counts = root_field_counts(node.selection_set, self.context.get_fragment)
            asked = sum(counts[name] for name in llm_fields)
            if asked > max_llm_fields:
                self.report_error(
                    GraphQLError(
                        f"The operation asks the model {asked} times; the limit is "
                        f"{max_llm_fields} per operation.",
                        node,
                        extensions={"code": TOO_MANY_LLM_FIELDS},
                    )
                )

    return [DepthLimit, AliasLimit, LLMFieldLimit]
