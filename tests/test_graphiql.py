"""GraphiQL: our page, the static route, and the pinned, verified asset fetch.

The fetch tests never reach the registry: they build tarballs in tmp_path and
put a stand-in `npm` executable first on PATH, which is the seam fetch.py uses.
"""

from __future__ import annotations

import io
import re
import sys
import tarfile
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from gptmini_graphql.graphiql import (
    graphiql_assets_present,
    graphiql_static_route,
    render_graphiql_page,
)
from gptmini_graphql.graphiql._assets import Package, load_packages
from gptmini_graphql.graphiql.fetch import (
    FetchError,
    fetch,
    install_tarball,
    integrity_of,
    main,
)

ASSET_NAMES = [name for p in load_packages() for name in p.files.values()]


def make_app(directory: Path | None = None) -> Starlette:
    kwargs = {} if directory is None else {"directory": directory}

    async def page(request):
        return HTMLResponse(render_graphiql_page("/graphql", **kwargs))

    return Starlette(routes=[Route("/graphql", page), graphiql_static_route(**kwargs)])


@pytest.fixture
def fake_assets(tmp_path: Path) -> Path:
    for name in ASSET_NAMES:
        (tmp_path / name).write_text(f"/* {name} */\n")
    return tmp_path


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html)


# --- the page ---------------------------------------------------------------


def test_page_loads_only_local_assets(fake_assets: Path) -> None:
    html = TestClient(make_app(fake_assets)).get("/graphql").text
    urls = asset_urls(html)
    assert len(urls) == len(ASSET_NAMES)
    assert all(url.startswith("/graphiql/static/") for url in urls), urls
    assert not re.search(r"https?://|//cdn|unpkg|jsdelivr", html)


def test_page_enables_persisted_headers_and_explains_login(fake_assets: Path) -> None:
    html = render_graphiql_page("/graphql", directory=fake_assets)
    assert "isHeadersEditorEnabled: true" in html
    assert "shouldPersistHeaders: true" in html
    assert "login" in html
    assert "Bearer" in html
    assert 'new URL("/graphql", location.href)' in html
    assert "subscriptionUrl" in html


def test_endpoint_cannot_break_out_of_the_script(fake_assets: Path) -> None:
    html = render_graphiql_page("/x</script><script>alert(1)//", directory=fake_assets)
    assert "<script>alert(1)" not in html


def test_page_without_assets_says_how_to_install(tmp_path: Path) -> None:
    assert not graphiql_assets_present(tmp_path)
    response = TestClient(make_app(tmp_path)).get("/graphql")
    assert response.status_code == 200
    assert "make install" in response.text
    assert "python -m gptmini_graphql.graphiql.fetch" in response.text
    assert "<script" not in response.text


# --- the static route -------------------------------------------------------


def test_static_route_serves_js_and_css_with_long_cache(fake_assets: Path) -> None:
    client = TestClient(make_app(fake_assets))
    js = client.get("/graphiql/static/graphiql.min.js?v=3.8.3")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert "immutable" in js.headers["cache-control"]
    css = client.get("/graphiql/static/graphiql.min.css")
    assert css.headers["content-type"].startswith("text/css")


def test_static_route_answers_404_when_assets_were_never_fetched(
    tmp_path: Path,
) -> None:
    client = TestClient(make_app(tmp_path / "not-fetched"))
    assert client.get("/graphiql/static/graphiql.min.js").status_code == 404


@pytest.mark.skipif(
    not graphiql_assets_present(),
    reason="GraphiQL assets not fetched: run python -m gptmini_graphql.graphiql.fetch",
)
def test_real_assets_are_served_from_the_page_urls() -> None:
    client = TestClient(make_app())
    urls = asset_urls(client.get("/graphql").text)
    assert len(urls) == len(ASSET_NAMES)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        kind = "css" if ".css" in url else "javascript"
        assert kind in response.headers["content-type"], url
        assert len(response.content) > 1000, url


# --- fetch: verify and extract ----------------------------------------------


def make_tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    return make_tarball(
        tmp_path / "graphiql-9.9.9.tgz",
        {
            "package/graphiql.min.js": b"window.GraphiQL = 1;",
            "package/README.md": b"not wanted",
            "../escape.js": b"never extracted",
        },
    )


def package_for(tarball: Path, integrity: str | None = None) -> Package:
    return Package(
        name="graphiql",
        version="9.9.9",
        integrity=integrity or integrity_of(tarball.read_bytes()),
        files={"package/graphiql.min.js": "graphiql.min.js"},
    )


def test_install_tarball_extracts_only_the_listed_files(
    tarball: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "static"
    hashes = install_tarball(package_for(tarball), tarball, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["graphiql.min.js"]
    assert (dest / "graphiql.min.js").read_bytes() == b"window.GraphiQL = 1;"
    assert list(hashes) == ["graphiql.min.js"]
    assert not (tmp_path / "escape.js").exists()


def test_install_tarball_refuses_an_integrity_mismatch(
    tarball: Path, tmp_path: Path
) -> None:
    other = integrity_of(b"some other tarball")
    dest = tmp_path / "static"
    with pytest.raises(FetchError, match="integrity mismatch") as excinfo:
        install_tarball(package_for(tarball, other), tarball, dest)
    assert other in str(excinfo.value)
    assert not dest.exists()


def test_install_tarball_names_a_missing_member(tarball: Path, tmp_path: Path) -> None:
    files = {"package/graphiql.min.js": "graphiql.min.js", "package/nope.js": "x.js"}
    package = Package("graphiql", "9.9.9", integrity_of(tarball.read_bytes()), files)
    with pytest.raises(FetchError, match=r"no file 'package/nope\.js'"):
        install_tarball(package, tarball, tmp_path / "static")


def test_integrity_must_be_sha512(tarball: Path, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="sha512"):
        install_tarball(package_for(tarball, "sha1-abc"), tarball, tmp_path)


# --- fetch end to end, with a stand-in npm ----------------------------------

FAKE_NPM = """\
#!{python}
# Stand-in for `npm pack SPEC... --pack-destination DIR --json`: copies
# prepared tarballs from its own folder, logs each call, prints npm's JSON.
import json, shutil, sys
from pathlib import Path

here = Path(__file__).parent
args = sys.argv[1:]
with open(here / "calls.log", "a") as log:
    log.write(" ".join(args) + "\\n")
if (here / "fail").exists():
    sys.exit("npm error 404 Not Found - GET graphiql")
dest = Path(args[args.index("--pack-destination") + 1])
out = []
for spec in args[1 : args.index("--pack-destination")]:
    name, version = spec.rsplit("@", 1)
    filename = f"{{name}}-{{version}}.tgz"
    shutil.copy(here / filename, dest / filename)
    out.append({{"name": name, "version": version, "filename": filename}})
print(json.dumps(out))
"""


@pytest.fixture
def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM.format(python=sys.executable))
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir), prepend=":")
    return bin_dir


def npm_calls(bin_dir: Path) -> int:
    log = bin_dir / "calls.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_fetch_installs_then_skips_until_a_file_changes(
    fake_npm: Path, tmp_path: Path
) -> None:
    tgz = make_tarball(fake_npm / "demo-1.0.0.tgz", {"package/demo.js": b"ok();"})
    integrity = integrity_of(tgz.read_bytes())
    pins = [Package("demo", "1.0.0", integrity, {"package/demo.js": "demo.js"})]
    dest = tmp_path / "static"

    assert fetch(dest, packages=pins) is True
    assert (dest / "demo.js").read_bytes() == b"ok();"
    assert fetch(dest, packages=pins) is False  # stamp matches: npm not called
    assert npm_calls(fake_npm) == 1

    (dest / "demo.js").write_text("tampered();")
    assert fetch(dest, packages=pins) is True
    assert (dest / "demo.js").read_bytes() == b"ok();"
    assert npm_calls(fake_npm) == 2


def test_fetch_reports_npm_failure(fake_npm: Path, tmp_path: Path) -> None:
    (fake_npm / "fail").touch()
    pins = [Package("graphiql", "3.8.3", "sha512-x", {})]
    with pytest.raises(FetchError, match="404 Not Found"):
        fetch(tmp_path / "static", packages=pins)


def test_cli_fails_loudly_on_a_tampered_download(
    fake_npm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Tarballs with the pinned names but not the pinned bytes.
    for p in load_packages():
        members = {member: b"evil();" for member in p.files}
        make_tarball(fake_npm / f"{p.name}-{p.version}.tgz", members)
    dest = tmp_path / "static"

    assert main(["--dest", str(dest)]) == 1
    err = capsys.readouterr().err
    assert "integrity mismatch" in err
    assert "refusing" in err
    assert not dest.exists()


def test_the_default_query_is_valid_for_our_schema() -> None:
    from graphql import build_schema as graphql_schema
    from graphql import parse, validate

    from gptmini_graphql.graphiql import DEFAULT_QUERY
    from gptmini_graphql.schema import build_schema

    schema = graphql_schema(build_schema().as_str())
    assert validate(schema, parse(DEFAULT_QUERY)) == []
