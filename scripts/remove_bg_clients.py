"""Run published remove.bg clients, unchanged, against a live ``cutout serve``; print a table.

    make clients            # or: .venv/bin/python scripts/remove_bg_clients.py [--keep]

Each client is installed at a pinned version from PyPI or npm into a throw-away folder, then
pointed at the server the way its users could: its own module variable where it has one,
otherwise (the URL hard-coded) by running it in a sealed network namespace where
``api.remove.bg`` is our server behind TLS (:mod:`tests.redirect`; needs root). The server is
fresh (its own data folder, a key made by ``cutout keys create``); URL inputs come from a local
HTTP server. Every call's output is opened and checked (format, mode, size); expected errors
must come back as the client reports remove.bg's. ``make test`` runs two of these clients on
its own (``remove-bg-api`` and the npm ``remove.bg``); this runs all of them (about a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live import LiveServer  # noqa: E402
from tests.redirect import TlsFront, can_isolate, redirected  # noqa: E402

PYPI = {
    "remove-bg-api": "0.2.1",
    "removebg": "0.4",  # published as 0.04
    "rembgpy": "1.0.1",
    "removebg-cli": "1.0.0",
    "RemoveBgPlus": "0.1.2",
}
NPM = {"removebg-wrapper": "1.0.3", "remove.bg": "1.3.0"}
PHOTO = Path(os.environ.get("CUTOUT_TESTDATA", ROOT.parent / "shared" / "testdata"))
PHOTO = PHOTO / "images" / "coco_microwave01_000000269866.jpg"  # 640x427, a subject in front
PREVIEW = 250_000


@dataclass(frozen=True)
class Expect:
    """What a call must give: an image (format, mode, size rule), or words (an error, a
    balance) containing *says*."""

    format: str = ""
    mode: str = ""
    size: str = "any"  # "preview" (<= 0.25 MP), "full" (the photo's size), "smaller", "any"
    says: str = ""


@dataclass
class Row:
    client: str
    pointed: str
    call: str
    ok: bool
    detail: str


class Session:
    """The server, the photo site, the TLS front and the installed clients, for one run."""

    def __init__(self, work: Path, server: LiveServer, site_url: str, front: TlsFront) -> None:
        self.work, self.server, self.site, self.front = work, server, site_url, front
        self.python = str(work / "venv" / "bin" / "python")
        self.key = make_key(server)
        self.rows: list[Row] = []

    def out(self, name: str) -> Path:
        folder = self.work / "out" / name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTO, folder / "photo.jpg")
        return folder

    def check(self, client: str, pointed: str, lines: str, expect: dict[str, Expect]) -> None:
        """Compare the JSON lines a driver printed (call, file | says) with *expect*."""
        seen = {r["call"]: r for r in (json.loads(x) for x in lines.splitlines() if x[:1] == "{")}
        for call, want in expect.items():
            got = seen.get(call)
            ok, detail = judge(got, want)
            self.rows.append(Row(client, pointed, call, ok, detail))

    def run(self, argv: list[str], cwd: Path, *, sealed: bool, **extra: str) -> str:
        """*argv*'s output (stdout, then stderr); *sealed*: where api.remove.bg is ours."""
        env = {**os.environ, "REMOVE_BG_API_KEY": self.key, "REMOVE_BG_KEY": self.key, **extra}
        if sealed:
            done = redirected(self.front, argv, env, cwd=cwd, timeout=300)
        else:
            done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
        return done.stdout + done.stderr


def judge(got: dict[str, str] | None, want: Expect) -> tuple[bool, str]:
    if got is None:
        return False, "no answer from the driver"
    says = got.get("says") or ""
    if want.says:
        return want.says in says, says[:90] or f"nothing said (wanted {want.says})"
    if says:
        return False, says[:90]
    path = Path(got["file"])
    if path.suffix == ".zip":
        import zipfile

        names = sorted(zipfile.ZipFile(path).namelist())
        return names == ["alpha.png", "color.jpg"], f"zip {names}"
    with Image.open(path) as image:
        size, fmt, mode = image.size, image.format or "", image.mode
    with Image.open(PHOTO) as photo:
        full = photo.size
    rule = {
        "preview": size[0] * size[1] <= PREVIEW,
        "full": size == full,
        "smaller": size[0] < full[0] or size[1] < full[1],
        "any": True,
    }[want.size]
    ok = rule and fmt == (want.format or fmt) and mode == (want.mode or mode)
    return ok, f"{fmt} {mode} {size[0]}x{size[1]}"


def make_key(server: LiveServer) -> str:
    argv = [sys.executable, "-m", "cutout", "keys", "create", "clients"]
    out = subprocess.run(argv, env=server.env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


# -- the drivers: each prints one JSON line per call: {"call", "file"} or {"call", "says"} ------

PY_PRELUDE = """
import base64, json, os, shutil, sys, traceback
server, key, photo, url = sys.argv[1:5]
b64 = base64.b64encode(open(photo, "rb").read()).decode()
def run(call, fn, made=None):
    try:
        result = fn()
        made = made or result
        keep = f"{call}{os.path.splitext(made)[1] or '.png'}"
        shutil.move(made, keep)
        print(json.dumps({"call": call, "file": os.path.abspath(keep)}))
    except BaseException as exc:
        print(json.dumps({"call": call, "says": f"{type(exc).__name__}: {exc}"}))
def save(data):
    open("r.png", "wb").write(data)
    return "r.png"
"""

REMOVE_BG_API = """
import remove_bg_api
remove_bg_api.API_URL = server + "/v1.0"
client = remove_bg_api.RemoveBg(key)
print(json.dumps({"call": "account", "says": f"balance {client.account.balance()}"}))
full = dict(size="full")
run("file full", lambda: save(client.remove_bg_file(photo, **full)))
run("bytes full", lambda: save(client.remove_bg_bytes(open(photo, "rb").read(), **full)))
run("base64 full", lambda: save(client.remove_bg_base64(b64, **full)))
run("url full", lambda: save(client.remove_bg_url(url, **full)))
run("file to out_path", lambda: client.remove_bg_file(photo, out_path="o.png", raw=False, **full))
options = {"size": "full", "format": "jpg", "bg_color": "white", "crop": "true"}
run("options via data", lambda: save(client.remove_bg_file(photo, data=options)))
run("preview (its int() of 0.25)", lambda: save(client.remove_bg_file(photo)))
run("not an image", lambda: save(client.remove_bg_bytes(b"nope", **full)))
run("bad key", lambda: remove_bg_api.RemoveBg("cut_wrong"))
"""

REMOVEBG = """
import removebg.removebg as module
from removebg import RemoveBg
module.API_ENDPOINT = server + "/v1.0/removebg"
rb = RemoveBg(key, "removebg.log")
done = photo + "_no_bg.png"
run("file (regular)", lambda: rb.remove_background_from_img_file(photo), done)
hd = dict(size="hd", bg_color="81d4fa")
run("file hd bg_color", lambda: rb.remove_background_from_img_file(photo, **hd), done)
u = rb.remove_background_from_img_url
run("url 4k", lambda: u(url, size="4k", new_file_name="u.png"), "u.png")
b = rb.remove_background_from_base64_img
run("base64 medium", lambda: b(b64, size="medium", new_file_name="b.png"), "b.png")
run("missing url", lambda: u(url + ".missing", new_file_name="m.png"), "m.png")
"""

REMBGPY = """
import rembgpy.bg as module
from rembgpy import RemBg
module.base_url = server + "/v1.0/removebg"
api = RemBg(key, "rembgpy.log")
run("url defaults", lambda: api.remove_img(url, nfn="1.png"), "1.png")
o = dict(size="full", type="product", type_level="2", format="jpg", crop="10%")
o.update(bg="00ff0080", bg_type="color", nfn="2.jpg")
run("url full crop 10% product jpg bg 8-digit", lambda: api.remove_img(url, **o), "2.jpg")
o = dict(size="full", format="png", channels="alpha", nfn="3.png")
run("url alpha channel", lambda: api.remove_img(url, **o), "3.png")
run("url zip", lambda: api.remove_img(url, size="full", format="zip", nfn="4.zip"), "4.zip")
o = dict(size="auto", scale="50%", position="center", roi="10% 0% 90% 100%")
o.update(bg=url, bg_type="url", nfn="5.png")
run("url scale position roi bg_image_url", lambda: api.remove_img(url, **o), "5.png")
run("base64 bytes", lambda: api.remove_b64(b64.encode(), nfn="6.png"), "6.png")
o = dict(size="hd", shadow=True, semitransparency=False, nfn="7.png")
run("base64 hd shadow no-semitransparency", lambda: api.remove_b64(b64, **o), "7.png")
"""

REMOVEBGPLUS = """
import removebgplus
client = removebgplus.RemoveBg(key)
run("file (auto)", lambda: client.remove_from_file(photo, "p1.png"))
run("url (auto)", lambda: client.remove_from_url(url, "p2.png"))
run("base64 as image_base64", lambda: client.remove_from_base64(b64, "p3.png"))
"""

WRAPPER_JS = """
const w = require("removebg-wrapper");
w.rbFromImageFile("photo.jpg", process.env.REMOVE_BG_KEY);
w.rbFromImageUrl(process.argv[2], process.env.REMOVE_BG_KEY);
"""


def python_client(
    s: Session, name: str, body: str, expect: dict[str, Expect], sealed: bool
) -> None:
    out = s.out(name)
    (out / "driver.py").write_text(PY_PRELUDE + textwrap.dedent(body))
    server = "https://api.remove.bg" if sealed else s.server.url
    argv = [s.python, "driver.py", server, s.key, str(out / "photo.jpg"), f"{s.site}/photo.jpg"]
    pointed = SEALED if sealed else "its module variable"
    s.check(f"{name} {PYPI[name]}", pointed, s.run(argv, out, sealed=sealed), expect)


SEALED = "hosts entry + TLS (URL hard-coded)"


def said(call: str, made: Path | None, text: str) -> str:
    """A driver's JSON line for a call that ran outside Python: its file, or what it said."""
    if made is not None and made.is_file():
        return json.dumps({"call": call, "file": str(made)})
    return json.dumps({"call": call, "says": text[-300:]})


def removebg_cli(s: Session) -> None:
    out = s.out("removebg-cli")
    cli = str(s.work / "venv" / "bin" / "removebg")
    url = f"{s.site}/photo.jpg"
    calls: dict[str, tuple[list[str], Expect]] = {
        "--account": (["--account"], Expect(says="999999")),
        "file (auto -> png)": (["photo.jpg", "-o", "c1.png"], Expect("PNG", "RGBA", "full")),
        "file preview webp": (
            ["photo.jpg", "-o", "c2.webp", "-s", "preview", "-f", "webp"],
            Expect("WEBP", "RGBA", "preview"),
        ),
        "url full jpg white crop": (
            [url, "-o", "c3.jpg", "-s", "full", "-f", "jpg", "-b", "white", "-c"],
            Expect("JPEG", "RGB", "smaller"),
        ),
        "file 50MP zip shadow": (
            ["photo.jpg", "-o", "c4.zip", "-s", "50MP", "-f", "zip", "--shadow"],
            Expect(),
        ),
        "file bg ff000080": (
            ["photo.jpg", "-o", "c5.png", "-b", "ff000080"],
            Expect("PNG", "RGBA", "full"),
        ),
    }
    lines = []
    for call, (args, _) in calls.items():
        text = s.run([cli, *args], out, sealed=True)
        made = out / args[2] if "-o" in args else None
        lines.append(said(call, made, text))
    expect = {call: want for call, (_, want) in calls.items()}
    s.check(f"removebg-cli {PYPI['removebg-cli']}", SEALED, "\n".join(lines), expect)


def npm_clients(s: Session) -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed for the npm clients"
    modules = str(s.work / "npm" / "node_modules")
    out = s.out("removebg-wrapper")
    (out / "driver.js").write_text(WRAPPER_JS)
    text = s.run([node, "driver.js", f"{s.site}/photo.jpg"], out, sealed=True, NODE_PATH=modules)
    made = {"file (size auto)": "output.png", "url (size auto)": "output-2.png"}
    lines = [said(call, out / name, text) for call, name in made.items()]
    expect = dict.fromkeys(made, Expect("PNG", "RGBA", "full"))
    s.check(f"removebg-wrapper {NPM['removebg-wrapper']}", SEALED, "\n".join(lines), expect)

    out = s.out("remove.bg")
    driver = str(ROOT / "tests" / "clients" / "remove_bg_npm.js")
    argv = [node, driver, str(PHOTO), f"{s.site}/photo.jpg", f"{s.site}/missing.jpg", str(out)]
    lines = []
    for line in s.run(argv, out, sealed=True, NODE_PATH=modules).splitlines():
        if not line.startswith("{"):
            continue
        call = json.loads(line)
        if call["ok"]:
            file = str(next(out.glob(call["name"] + ".*")))
            lines.append(json.dumps({"call": call["name"], "file": file}))
        else:
            lines.append(json.dumps({"call": call["name"], "says": json.dumps(call["errors"])}))
    s.check(f"remove.bg (npm) {NPM['remove.bg']}", SEALED, "\n".join(lines), REMOVE_BG_NPM_EXPECT)


def install(work: Path) -> None:
    """The clients at their pinned versions, from PyPI and npm, into *work*."""
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    pins = [f"{name}=={version}" for name, version in PYPI.items()]
    pip = [str(work / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", *pins]
    subprocess.run(pip, check=True)
    (work / "npm").mkdir()
    pins = [f"{name}@{version}" for name, version in NPM.items()]
    npm = ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *pins]
    subprocess.run(npm, cwd=work / "npm", check=True)


@contextlib.contextmanager
def photo_site(folder: Path) -> Iterator[http.server.ThreadingHTTPServer]:
    """The photo over HTTP, HEAD included (one client checks the URL itself first)."""
    folder.mkdir()
    shutil.copy(PHOTO, folder / "photo.jpg")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = partial(Quiet, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as site:
        threading.Thread(target=site.serve_forever, daemon=True).start()
        yield site
        site.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder (outputs)")
    args = parser.parse_args()
    if why := can_isolate():
        print(f"cannot run hard-coded clients here: {why}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="cutout-clients-"))
    install(work)
    env = {"CUTOUT_URL_ALLOWED_NETWORKS": "127.0.0.1/32", "CUTOUT_API_RATE_LIMIT": "1000/minute"}
    with (
        LiveServer(work / "data", env) as server,
        photo_site(work / "site") as site,
        TlsFront(server.port, work / "tls", [site.server_address[1]]) as front,
    ):
        url = f"http://127.0.0.1:{site.server_address[1]}"
        s = Session(work, server, url, front)
        runs: list[Callable[[], None]] = [
            lambda: python_client(s, "remove-bg-api", REMOVE_BG_API, REMOVE_BG_API_EXPECT, False),
            lambda: python_client(s, "removebg", REMOVEBG, REMOVEBG_EXPECT, False),
            lambda: python_client(s, "rembgpy", REMBGPY, REMBGPY_EXPECT, False),
            lambda: python_client(s, "RemoveBgPlus", REMOVEBGPLUS, REMOVEBGPLUS_EXPECT, True),
            lambda: removebg_cli(s),
            lambda: npm_clients(s),
        ]
        for run in runs:
            run()
    width = max(len(r.client) for r in s.rows)
    for row in s.rows:
        mark = "ok  " if row.ok else "FAIL"
        detail = " ".join(row.detail.split())
        print(f"{mark} {row.client:<{width}}  {row.call:<42} {detail}  [{row.pointed}]")
    failed = sum(not r.ok for r in s.rows)
    print(f"{len(s.rows) - failed} passed, {failed} failed")
    if args.keep:
        print(f"outputs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


REMOVE_BG_API_EXPECT = {
    "account": Expect(says="balance 999999"),
    "file full": Expect("PNG", "RGBA", "full"),
    "bytes full": Expect("PNG", "RGBA", "full"),
    "base64 full": Expect("PNG", "RGBA", "full"),
    "url full": Expect("PNG", "RGBA", "full"),
    "file to out_path": Expect("PNG", "RGBA", "full"),
    "options via data": Expect("JPEG", "RGB", "smaller"),
    # Its int() of X-Credits-Charged: remove.bg's own "0.25" breaks it the same way.
    "preview (its int() of 0.25)": Expect(says="invalid literal for int() with base 10: '0.25'"),
    "not an image": Expect(says="ApiErrorCode400"),
    "bad key": Expect(says="ApiErrorCode403"),
}
REMOVE_BG_NPM_EXPECT = {
    "file": Expect("PNG", "RGBA", "preview"),
    "file_full_crop": Expect("PNG", "RGBA", "smaller"),
    "url_bg_color": Expect("JPEG", "RGB", "preview"),
    "base64_alpha": Expect("PNG", "L", "full"),
    "url_scale_bg_image": Expect("JPEG", "RGB", "full"),
    "bad_key": Expect(says="auth_failed"),
    "not_an_image": Expect(says="failed_to_read_image"),
    "missing_url": Expect(says="failed_image_download"),
}
REMOVEBG_EXPECT = {
    "file (regular)": Expect("PNG", "RGBA", "preview"),
    "file hd bg_color": Expect("JPEG", "RGB", "full"),
    "url 4k": Expect("PNG", "RGBA", "full"),
    "base64 medium": Expect("PNG", "RGBA", "full"),
    "missing url": Expect(says="400 Client Error"),
}
REMBGPY_EXPECT = {
    "url defaults": Expect("PNG", "RGBA", "preview"),
    "url full crop 10% product jpg bg 8-digit": Expect("JPEG", "RGB", "smaller"),
    "url alpha channel": Expect("PNG", "L", "full"),
    "url zip": Expect(),
    "url scale position roi bg_image_url": Expect("JPEG", "RGB", "full"),
    "base64 bytes": Expect("PNG", "RGBA", "preview"),
    "base64 hd shadow no-semitransparency": Expect("PNG", "RGBA", "full"),
}
REMOVEBGPLUS_EXPECT = {
    "file (auto)": Expect("PNG", "RGBA", "full"),
    "url (auto)": Expect("PNG", "RGBA", "full"),
    # It posts image_base64, not remove.bg's image_file_b64: remove.bg answers the same.
    "base64 as image_base64": Expect(says="missing_source"),
}


if __name__ == "__main__":
    sys.exit(main())
