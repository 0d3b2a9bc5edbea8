"""The OpenAPI description: valid, complete (every route), served with working interactive docs, and
true to the live server (schemathesis finds no 5xx and no response that breaks the documented schema).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
import yaml
from openapi_spec_validator import validate

from .support import MODELS, ROOT, GunicornServer

SPEC_FILE = ROOT / "service" / "openapi.yaml"
IGNORED_METHODS = {"HEAD", "OPTIONS"}
ADMIN_TOKEN = "schemathesis-admin-token"


def flask_path(rule: str) -> str:
    """'/v1/models/<name>:predict' -> '/v1/models/{name}:predict' (converters dropped)."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)


def spec_operations(spec: dict) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {(path, method.upper()) for path, item in spec["paths"].items()
            for method in item if method in methods}


def test_spec_file_is_valid_openapi():
    spec = yaml.safe_load(SPEC_FILE.read_text())
    validate(spec)
    assert spec["openapi"].startswith("3.")
    error = spec["components"]["schemas"]["Error"]
    assert (error["type"], error["required"], error["properties"]["error"]["type"]) == (
        "object", ["error"], "string")
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "The server's ADMIN_TOKEN."}


def test_served_document_is_the_file_and_valid(server):
    response = requests.get(server.url + "/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    served = response.json()
    validate(served)
    assert served == yaml.safe_load(SPEC_FILE.read_text())


def test_every_route_of_the_app_is_documented_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_DIR", str(tmp_path))
    from service.app import create_app

    app = create_app(start=False)
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):  # files under /static/
            continue
        routes |= {(flask_path(rule.rule), method) for method in rule.methods - IGNORED_METHODS}
    documented = spec_operations(yaml.safe_load(SPEC_FILE.read_text()))
    assert routes - documented == set(), "routes missing from service/openapi.yaml"
    assert documented - routes == set(), "documented operations the app does not have"
    # The public surface the issue lists is all there.
    for path in ("/v1/models", "/predict", "/v2/health/ready", "/v2/models/{name}/infer",
                 "/v1/models/{name}:predict", "/v2/repository/index", "/metrics", "/", "/docs"):
        assert any(p == path for p, _ in documented), path
    spec = yaml.safe_load(SPEC_FILE.read_text())
    for path in ("/v2/repository/index", "/v2/repository/models/{name}/load",
                 "/v2/repository/models/{name}/unload"):
        assert spec["paths"][path]["post"]["security"] == [{"bearerAuth": []}]
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert "Inference-Header-Content-Length" in infer["description"]  # the binary extension


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_docs_page_loads_its_assets_from_this_server(server):
    response = requests.get(server.url + "/docs")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    parser = _Assets()
    parser.feed(response.text)
    assert len(parser.urls) >= 3
    scripts = []
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is not served by this server"
        asset = requests.get(server.url + url)
        assert asset.status_code == 200, url
        assert asset.content, url
        if url.endswith(".js"):
            assert asset.headers["Content-Type"].startswith("text/javascript"), url
            scripts.append(asset.text)
    assert any("SwaggerUIBundle" in s and "/openapi.json" in s for s in scripts)  # our initializer
    assert any(len(s) > 100_000 and "SwaggerUIBundle" in s for s in scripts)  # the bundle itself
    # Anything not a Swagger UI asset stays unreachable, as a JSON 404.
    for name in ("index.j2", "..%2Fopenapi.yaml", "swagger-ui.js.map"):
        missing = requests.get(server.url + "/docs/" + name)
        assert missing.status_code == 404 and "error" in missing.json(), name


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """A server of its own: the admin API is exercised too (it unloads and loads models)."""
    root = tmp_path_factory.mktemp("schemathesis")
    env = {"ADMIN_TOKEN": ADMIN_TOKEN, "RUNTIME_DIR": str(root / "runtime"), "LOG_LEVEL": "WARNING",
           "FEEDBACK_DIR": str(root / "feedback")}  # the feedback route is fuzzed switched on
    with GunicornServer(MODELS, env=env, workers=2, log_path=root / "gunicorn.log") as srv:
        yield srv


def schemathesis(url: str, workdir: Path, *selection: str) -> tuple[int, str]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", url + "/openapi.json",
        "--checks", "not_a_server_error,response_schema_conformance",
        "--max-examples", "20",
        "--seed", "20240601",
        "--workers", "1",
        "--request-timeout", "10",
        "--generation-database", "none",
        "--header", f"Authorization: Bearer {ADMIN_TOKEN}",
        "--no-color",
        *selection,
    ]
    try:
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis ran past 150 s:\n{exc.stdout!r}"[-4000:])
    return result.returncode, result.stdout + result.stderr


def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzz_server, tmp_path):
    """Property-based run of every documented operation against the live server.

    Checks: no 5xx (``not_a_server_error``) and every response matches its documented schema
    (``response_schema_conformance``). Two runs: first everything but the admin API, then the admin
    API alone, with the right bearer token. They are apart because schemathesis' stateful phase
    chains index -> unload for every model it finds, after which GET /v2/health/ready rightly answers
    503 (nothing served), which would read as a server error. One schemathesis worker, so admin calls
    are never concurrent; both runs together take well under 2 minutes on 2 cores.
    """
    documented = spec_operations(yaml.safe_load(SPEC_FILE.read_text()))
    admin = {op for op in documented if op[0].startswith("/v2/repository/")}
    tested = 0
    for selection in (("--exclude-tag", "admin"), ("--include-tag", "admin")):
        code, output = schemathesis(fuzz_server.url, tmp_path, *selection)
        assert code == 0, output[-8000:] + "\n--- server log ---\n" + fuzz_server.log()[-4000:]
        count = re.search(r"Tested:\s+(\d+)", output)
        assert count, output[-3000:]
        tested += int(count.group(1))
    assert len(admin) == 3
    # Every documented operation ran, except GET /openapi.json (schemathesis skips the schema's own URL).
    assert tested == len(documented) - 1
