"""Apps in other languages, unchanged: a Go app on Dapr's Go SDK (tests/apps/go) and a JavaScript
app on Dapr's JavaScript SDK (tests/apps/js), each a small CLI with examples/read_secrets.py's
arguments and JSON output, so the end-to-end tests hold all three to the same expectations.

Both are pinned (go.mod + go.sum, package.json + package-lock.json) and made ready here, once per
machine, in the cache daprd uses (`${XDG_CACHE_HOME:-~/.cache}/secretbridge`), in a folder named by a
hash of their inputs: the Go app built with the local Go toolchain from the Go module proxy, the
JavaScript app installed with `npm ci`. A lock makes concurrent runs build once; a build is done in a
temporary folder and renamed into place, so nobody sees half of one.

    python -m tests.apps          # what `make test` runs first: both ready, or why not

`app_command(name)` gives the command line of a ready app, or raises `AppUnavailable` saying how to
get what is missing (the tests skip on it, or fail under CI=true).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
GO_DIR = HERE / "go"
JS_DIR = HERE / "js"
#: What decides each build: a change to any of these makes a new folder.
GO_INPUTS = ("go.mod", "go.sum", "main.go")
JS_INPUTS = ("package.json", "package-lock.json", "app.js")
APPS = ("go", "js")


class AppUnavailable(Exception):
    """An app cannot be had here (a toolchain missing, the registry refusing): the text says why and how."""


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/secretbridge``, shared with tools/daprd."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "secretbridge"


def _digest(folder: Path, names: tuple[str, ...], *extra: str) -> str:
    sha = hashlib.sha256()
    for name in names:
        sha.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    for item in extra:
        sha.update(item.encode() + b"\0")
    return sha.hexdigest()[:12]


def _tool(name: str, how: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise AppUnavailable(f"`{name}` is not on PATH; {how}")
    return found


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise AppUnavailable(f"`{' '.join(argv[:2])}` failed (exit {done.returncode}):\n{tail}")


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ready(target: Path, make: Callable[[Path], None]) -> Path:
    """`target` once made: `make(scratch)` fills a scratch folder that is then renamed to `target`."""
    if target.is_dir():
        return target
    with _locked(target):
        if target.is_dir():  # made by another run while this one waited
            return target
        scratch = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
        try:
            make(scratch)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def go_app() -> Path:
    """The Go SDK app's binary, built once per set of inputs."""
    go = _tool("go", "install Go 1.26 (https://go.dev/dl/) or skip these tests")
    version = subprocess.run([go, "env", "GOVERSION", "GOOS", "GOARCH"], capture_output=True, text=True,
                             check=False).stdout.split()
    target = cache_root() / f"sdk-app-go-{_digest(GO_DIR, GO_INPUTS, *version)}"

    def make(scratch: Path) -> None:
        # -mod=readonly: go.sum must already hold every module (it is the pin); nothing is rewritten.
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly")
        _run([go, "build", "-trimpath", "-o", str(scratch / "readsecrets"), "."], GO_DIR, env)

    return _ready(target, make) / "readsecrets"


def js_app() -> Path:
    """The JavaScript SDK app's folder (app.js beside its node_modules), installed once per set of inputs."""
    node = _tool("node", "install Node.js 20 or newer (Debian: apt-get install nodejs npm) or skip these tests")
    npm = _tool("npm", "install npm (Debian: apt-get install npm) or skip these tests")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    target = cache_root() / f"sdk-app-js-{_digest(JS_DIR, JS_INPUTS, node_version)}"

    def make(scratch: Path) -> None:
        for name in JS_INPUTS:
            shutil.copy2(JS_DIR / name, scratch / name)
        # npm ci installs exactly package-lock.json; no install scripts are needed by the SDK's tree.
        _run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], scratch)

    return _ready(target, make)


def app_command(name: str) -> list[str]:
    """The command line that runs app `name` ("go" or "js"); its arguments follow."""
    if name == "go":
        return [str(go_app())]
    if name == "js":
        folder = js_app()
        return [_tool("node", "install Node.js"), str(folder / "app.js")]
    raise KeyError(f"no SDK app {name!r}; known: {', '.join(APPS)}")


def main() -> int:
    """Make every app ready; print where each is, or why it is not. Exit 1 if any is not."""
    failed = False
    for name in APPS:
        try:
            print(f"{name}: {' '.join(app_command(name))}")
        except AppUnavailable as err:
            failed = True
            print(f"{name}: not available: {err}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
