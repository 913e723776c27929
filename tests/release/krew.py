"""Checks a krew plugin manifest (krew.googlecontainertools.github.com/v1alpha2, kind
Plugin) against the rules krew's index applies, and reads the archive it names."""

from __future__ import annotations

import fnmatch
import re
import tarfile
from pathlib import Path
from typing import Any

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_SHA256 = re.compile(r"^[a-f0-9]{64}$")
_SEMVER = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
_OSES = {"darwin", "linux", "windows"}
_ARCHES = {"amd64", "arm64", "386", "arm", "ppc64le", "s390x"}


def problems(
    manifest: dict[str, Any], *, filename: str, sha256_placeholder: str | None
) -> list[str]:
    """What makes `manifest` invalid; empty when valid. With `sha256_placeholder`, each
    platform's sha256 must be that placeholder (a template) instead of a digest."""
    found: list[str] = []
    if manifest.get("apiVersion") != API_VERSION:
        found.append(f"apiVersion is {manifest.get('apiVersion')!r}, not {API_VERSION}")
    if manifest.get("kind") != "Plugin":
        found.append(f"kind is {manifest.get('kind')!r}, not Plugin")
    name = str((manifest.get("metadata") or {}).get("name", ""))
    if not _NAME.match(name):
        found.append(f"metadata.name {name!r} is not a lowercase plugin name")
    if filename != f"{name}.yaml":
        found.append(f"the file {filename} is not named after the plugin ({name}.yaml)")
    spec = manifest.get("spec") or {}
    if not _SEMVER.match(str(spec.get("version", ""))):
        found.append(f"spec.version {spec.get('version')!r} is not a semantic version with 'v'")
    for field in ("shortDescription", "description", "homepage"):
        if not str(spec.get(field, "")).strip():
            found.append(f"spec.{field} is empty")
    if len(str(spec.get("shortDescription", ""))) > 50:
        found.append("spec.shortDescription is longer than 50 characters")
    if not str(spec.get("homepage", "")).startswith("https://"):
        found.append("spec.homepage is not an https URL")
    platforms = spec.get("platforms") or []
    if not platforms:
        found.append("spec.platforms is empty")
    for index, platform in enumerate(platforms):
        where = f"spec.platforms[{index}]"
        found += [f"{where}: {p}" for p in _selector_problems(platform.get("selector") or {})]
        if not str(platform.get("uri", "")).startswith("https://"):
            found.append(f"{where}.uri is not an https URL")
        sha = str(platform.get("sha256", ""))
        if sha_placeholder_mismatch(sha, sha256_placeholder):
            expected = sha256_placeholder or "64 lowercase hex digits"
            found.append(f"{where}.sha256 {sha!r} is not {expected}")
        bin_name = str(platform.get("bin", ""))
        if not bin_name or "/" in bin_name.removeprefix("./") or bin_name in (".", ".."):
            found.append(f"{where}.bin {bin_name!r} is not a file name")
        files = platform.get("files") or []
        if not files:
            found.append(f"{where}.files is empty")
        for entry in files:
            if not entry.get("from") or not entry.get("to"):
                found.append(f"{where}.files entry {entry!r} needs from and to")
    return found


def sha_placeholder_mismatch(sha: str, placeholder: str | None) -> bool:
    return sha != placeholder if placeholder is not None else not _SHA256.match(sha)


def _selector_problems(selector: dict[str, Any]) -> list[str]:
    labels = dict(selector.get("matchLabels") or {})
    expressions = selector.get("matchExpressions") or []
    if not labels and not expressions:
        return ["the selector is empty"]
    found = []
    values: dict[str, set[str]] = {key: {value} for key, value in labels.items()}
    for expression in expressions:
        if expression.get("operator") not in ("In", "NotIn", "Exists", "DoesNotExist"):
            found.append(f"selector operator {expression.get('operator')!r} is not known")
        values.setdefault(str(expression.get("key")), set()).update(expression.get("values") or [])
    for key, known in (("os", _OSES), ("arch", _ARCHES)):
        unknown = values.get(key, set()) - known
        if unknown:
            found.append(f"selector {key} values {sorted(unknown)} are not known to krew")
    if "os" not in values:
        found.append("the selector names no os")
    return found


def installed_files(archive: Path, platform: dict[str, Any]) -> dict[str, tarfile.TarInfo]:
    """What krew would install from `archive` by the platform's files rules (by path)."""
    with tarfile.open(archive) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
    chosen: dict[str, tarfile.TarInfo] = {}
    for entry in platform["files"]:
        matched = {name: m for name, m in members.items() if fnmatch.fnmatch(name, entry["from"])}
        if not matched:
            raise ValueError(f"files entry {entry['from']!r} matches nothing in {archive.name}")
        chosen.update(matched)
    return chosen
