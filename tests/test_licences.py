"""docs/licences.md names every copyleft part of what `pip install "cutout[server]"` installs.

The dependencies are read from pyproject.toml and followed through the installed packages'
own requirements; a package whose metadata names a GPL-family licence (GPL, LGPL, AGPL) must
be named in docs/licences.md, and so must each native library that pillow-heif's binary wheel
bundles (its licence as a whole is GPL-2.0 for them).
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LICENCES = (ROOT / "docs/licences.md").read_text()


def installed_closure(extras: tuple[str, ...] = ("server",)) -> dict[str, Distribution]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"]]
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    todo = [Requirement(r) for r in wanted]
    found: dict[str, Distribution] = {}
    while todo:
        requirement = todo.pop()
        key = canonicalize_name(requirement.name)
        if key in found:
            continue
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:  # a requirement for another platform or Python
            continue
        found[key] = dist
        for text in dist.requires or []:
            nested = Requirement(text)
            chosen = requirement.extras or {""}
            if nested.marker is None or any(nested.marker.evaluate({"extra": e}) for e in chosen):
                todo.append(nested)
    return found


def licence_text(dist: Distribution) -> str:
    meta = dist.metadata.json  # keys in lower case, e.g. "license_expression"
    classifiers = [c for c in meta.get("classifier", []) if c.startswith("License")]
    declared = [str(meta.get(key, "")) for key in ("license_expression", "license")]
    return " ".join([*declared, *classifiers])


def test_every_copyleft_dependency_is_named_in_the_licences_page() -> None:
    closure = installed_closure()
    assert {"numpy", "openvino", "flask", "celery"} <= closure.keys()  # the walk works
    copyleft = {
        dist.metadata["Name"]
        for dist in closure.values()
        if re.search(r"\bA?L?GPL|General Public License", licence_text(dist), re.IGNORECASE)
    }
    assert "connected-components-3d" in copyleft  # LGPL-3.0-or-later: the check can see one
    missing = sorted(name for name in copyleft if f"`{name}`" not in LICENCES)
    assert not missing, f"copyleft dependencies not named in docs/licences.md: {missing}"


def test_the_libraries_inside_pillow_heifs_wheel_are_named() -> None:
    dist = distribution("pillow-heif")
    bundled = next((f for f in dist.files or [] if f.name == "LICENSES_bundled.txt"), None)
    if bundled is None:  # a build from source: nothing bundled
        return
    text = Path(str(dist.locate_file(bundled))).read_text()
    names = re.findall(r"^Name: (\S+)", text, re.MULTILINE)
    assert "x265" in names, names
    missing = [n for n in names if not n.startswith("MinGW") and f"`{n}`" not in LICENCES]
    assert not missing, f"pillow-heif's bundled libraries not in docs/licences.md: {missing}"
