"""GraphiQL served by us from pinned local assets, so it works with no network.

Strawberry's stock page loads React and GraphiQL from a CDN and renders blank
offline. Ours loads them from `/graphiql/static/`, which `graphiql_static_route()`
serves from `static/` beside this file. The files are not in the repository:
`make install` runs `python -m gptmini_graphql.graphiql.fetch` to download
them (see fetch.py). Without them the page says so instead of staying blank.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from string import Template

from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ._assets import STATIC_DIR, load_packages

__all__ = ["graphiql_assets_present", "graphiql_static_route", "render_graphiql_page"]

STATIC_URL = "/graphiql/static"
FETCH_COMMAND = "python -m gptmini_graphql.graphiql.fetch"

_PACKAGES = load_packages()
_FILES = [name for p in _PACKAGES for name in p.files.values()]
# The version in the query string makes each URL name one immutable file, so
# the long cache below can never serve a stale copy after a version bump.
_URLS = {
    name: f"{STATIC_URL}/{name}?v={p.version}"
    for p in _PACKAGES
    for name in p.files.values()
}

DEFAULT_QUERY = """\
# Welcome to gptmini-graphql.
#
# 1. Run Login (the play button, or Ctrl-Enter).
# 2. In Headers below, set
#    {"Authorization": "Bearer <accessToken>"}
#    with the token it returned (GraphiQL keeps it
#    across reloads).
# 3. Run Summarize.

mutation Login {
  login(username: "test_user", password: "1234") {
    accessToken
    expiresAt
  }
}

query Summarize {
  summarize(text: "GraphQL is a query language for APIs.", maxWords: 10) {
    text
    model
    usage { totalTokens costUsd }
  }
}
"""


class _PinnedStaticFiles(StaticFiles):
    async def check_config(self) -> None:
        # The assets may be fetched after the app starts: until then, 404s,
        # not the RuntimeError StaticFiles raises for a missing directory.
        return None

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def graphiql_assets_present(directory: Path = STATIC_DIR) -> bool:
    """True when every pinned asset file is in `directory`."""
    return all((directory / name).is_file() for name in _FILES)


def graphiql_static_route(directory: Path = STATIC_DIR) -> Mount:
    """The route that serves the assets at /graphiql/static/."""
    app = _PinnedStaticFiles(directory=directory, check_dir=False)
    return Mount(STATIC_URL, app=app, name="graphiql-static")


def _js(value: str) -> str:
    """A JS string literal that is also safe inside <script> (no `</`)."""
    return json.dumps(value).replace("<", "\\u003c")


_PAGE = Template("""\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gptmini-graphql · GraphiQL</title>
$css
<style>
  html, body, #graphiql { height: 100%; margin: 0; }
  .gm-missing { font: 16px/1.5 system-ui, sans-serif; max-width: 40em;
                margin: 0 auto; padding: 3em 1em 0; }
  .gm-missing code { background: #eee; padding: 0.1em 0.3em; }
</style>
</head>
<body>
<div id="graphiql">$body</div>
$scripts
</body>
</html>
""")

_MISSING = """\
<div class="gm-missing">
<h1>GraphiQL is not installed</h1>
<p>This server serves GraphiQL from local files, and they have not been
downloaded yet. Run <code>make install</code> (or <code>$command</code>)
and reload this page.</p>
<p>The GraphQL API itself works without them: POST to <code>$endpoint</code>.</p>
</div>"""

# Runs after the three scripts above it. If one failed to load (say a proxy
# dropped /graphiql/static), show the same message rather than a blank page.
_BOOT = """\
<script>
(function () {
  var root = document.getElementById("graphiql");
  if (!window.React || !window.ReactDOM || !window.GraphiQL) {
    root.innerHTML = $missing;
    return;
  }
  var http = new URL($endpoint, location.href);
  var ws = new URL(http.href);
  ws.protocol = http.protocol === "https:" ? "wss:" : "ws:";
  // HTTP for queries and mutations; graphql-transport-ws on the same path for
  // subscriptions (opened only when one runs; headers go as connectionParams).
  var fetcher = GraphiQL.createFetcher({ url: http.href, subscriptionUrl: ws.href });
  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: $query,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      defaultEditorToolsVisibility: "headers",
    })
  );
})();
</script>"""


def render_graphiql_page(
    endpoint: str = "/graphql", *, directory: Path = STATIC_DIR
) -> str:
    """Our GraphiQL HTML page, pointed at `endpoint` (a path or full URL).

    `directory` is where the assets are looked for (the static route's).
    """
    missing = Template(_MISSING).substitute(
        endpoint=html.escape(endpoint), command=FETCH_COMMAND
    )
    if not graphiql_assets_present(directory):
        return _PAGE.substitute(css="", body=missing, scripts="")
    css = f'<link rel="stylesheet" href="{_URLS["graphiql.min.css"]}">'
    scripts = [
        f'<script src="{_URLS[name]}"></script>'
        for name in (
            "react.production.min.js",
            "react-dom.production.min.js",
            "graphiql.min.js",
        )
    ]
    boot = Template(_BOOT).substitute(
        missing=_js(missing), endpoint=_js(endpoint), query=_js(DEFAULT_QUERY)
    )
    return _PAGE.substitute(
        css=css, body="Loading GraphiQL…", scripts="\n".join([*scripts, boot])
    )
