"""gptmini-graphql: an LLM behind summarize, translate, complete and analyze,
served as a GraphQL API."""

__version__ = "0.1.0"
