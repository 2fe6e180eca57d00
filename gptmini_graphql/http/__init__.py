"""The /graphql endpoint, split by the steps a request takes through it.

Read in this order (endpoint.py calls them in the same order):

1. `negotiation.py`: the request's `Accept` picks the media type (and, for
   a stream, the transport) of the answer, or none: 406.
2. `parameters.py`: the GET query string or the POST JSON body, checked,
   becomes the request's parameters (`query`, `variables`, ...).
3. `persisted.py`: a persisted query's hash becomes its text (APQ, or an
   allowlist), over HTTP here and over the WebSocket in `websocket.py`.
4. `operation_types.py`: GET runs queries only, POST mutations too, and a
   subscription needs a stream.
5. `status.py`: a request error's HTTP status, by media type and code.

`exchange.py` holds what one request learned on the way (its one piece of
state); `refusals.py` is how any step refuses a request; `websocket.py` is
the graphql-transport-ws side (connection auth, the subscription cap).
"""

from gptmini_graphql.http.endpoint import GraphQLEndpoint

__all__ = ["GraphQLEndpoint"]
