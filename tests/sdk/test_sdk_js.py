"""The SDK as a file: its Node unit tests pass, the served build is the source's, it fits the
size budget, the engine serves it with caching headers, and its README's userHash examples sign
as the engine checks."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from decisions.identity import Verifier, user_hash
from edge.routes.sdk import SDK_FILE, SNIPPET_FILE, VERSION
from tests.conftest import Engine

SDK = Path(__file__).resolve().parents[2] / "sdk-js"
BUDGET = 6 * 1024  # bytes, minified and gzipped


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("the SDK tests need Node.js (node and npm)")
    return found


@pytest.fixture(scope="module")
def terser() -> Path:
    """The pinned minifier, installed from npm on first use."""
    binary = SDK / "node_modules" / ".bin" / "terser"
    if not binary.exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=SDK,
                       check=True, timeout=600)  # fmt: skip
    return binary


def test_unit_tests_pass() -> None:
    done = subprocess.run([node(), "--test", "test/"], cwd=SDK, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout


def test_the_served_build_is_the_source_and_fits_the_budget(terser: Path, tmp_path: Path) -> None:
    built = tmp_path / "kairos.min.js"
    subprocess.run([str(terser), "src/kairos.js", "--compress", "--mangle", "--comments", "some",
                    "--output", str(built)], cwd=SDK, check=True, timeout=120)  # fmt: skip
    assert built.read_bytes() == SDK_FILE.read_bytes(), (
        "edge/routes/static/kairos.min.js is stale: run `npm run build` in sdk-js/"
    )
    assert (SDK / "snippet.html").read_text() == SNIPPET_FILE.read_text()
    size = len(gzip.compress(built.read_bytes(), 9))
    assert size <= BUDGET, f"{size} bytes gzipped, over the {BUDGET} budget"
    assert VERSION == "1.0.0" and f'"{VERSION}"' in (SDK / "src" / "kairos.js").read_text()


def test_the_engine_serves_it_with_caching(engine: Engine) -> None:
    latest = engine.client.get(f"{engine.url}/sdk/kairos.js")
    assert latest.status_code == 200 and latest.content == SDK_FILE.read_bytes()
    assert latest.headers["content-type"].startswith("application/javascript")
    assert latest.headers["cache-control"] == "public, max-age=300"
    major = engine.client.get(f"{engine.url}/sdk/v1/kairos.js", headers={"Accept-Encoding": "gzip"})
    assert major.headers["content-encoding"] == "gzip" and major.content == SDK_FILE.read_bytes()
    assert major.headers["cache-control"] == "public, max-age=3600"
    exact = engine.client.get(f"{engine.url}/sdk/{VERSION}/kairos.js")
    assert exact.headers["cache-control"] == "public, max-age=31536000, immutable"
    again = engine.client.get(f"{engine.url}/sdk/v1/kairos.js",
                              headers={"If-None-Match": major.headers["etag"]})  # fmt: skip
    assert again.status_code == 304 and again.content == b""
    assert engine.client.get(f"{engine.url}/sdk/v9/kairos.js").status_code == 404


def test_the_readmes_user_hash_examples_sign_as_the_engine_checks() -> None:
    """sdk-js/README.md's Python and Node examples, run as written, give the engine's userHash."""
    readme = (SDK / "README.md").read_text()
    python = re.search(r"```python\n(.*?)```", readme, re.S)
    js = re.search(r"```js\n(const crypto.*?)```", readme, re.S)
    assert python and js, "the README's userHash examples moved"
    env = {**os.environ, "KAIROS_IDENTITY_SECRET": "s3cret"}
    by_python = subprocess.run(
        [sys.executable, "-c", "user_id = 'u1'\n" + python.group(1) + "print(user_hash)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    by_node = subprocess.run(
        [node(), "-e", 'const userId = "u1";\n' + js.group(1) + "console.log(userHash)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert by_python == by_node == user_hash("s3cret", "u1")
    assert Verifier("s3cret").verified("u1", by_node)
