"""The four text tasks: each turns validated arguments into messages for the
model and the model's answer into a typed result."""

from gptmini_graphql.tasks import analyze, translate

# The JSON schemas the tasks constrain answers with: the embedded model
# prepares their grammars at start-up, not on a user's first request.
RESPONSE_SCHEMAS = [output.schema for output in (analyze.SENTIMENT, translate.LANGUAGE)]
