"""Where pretrained weights come from, and getting them onto this machine.

A name given to ``kseg.from_pretrained`` is, in this order:

1. a preset (:data:`kseg.pretrained.presets.PRESETS`), which names one of the sources below;
2. an existing local file or folder (any layout ``kseg.convert`` reads);
3. an ``http(s)://`` URL, downloaded once into ``$KSEG_HOME/downloads`` (streamed to a
   ``.part`` file, checked against its size and sha256, then renamed: an interrupted or
   corrupt download never stays in the cache). A checksum comes from the preset, or from
   the file name as torch.hub and mmsegmentation write it (``name-<first 8+ hex digits of
   the sha256>.pth``). Google Drive ``/file/d/<id>/view`` links are fetched through the
   direct-download endpoint;
4. ``hf:<repo id>[/<file>]`` or a bare ``<org>/<name>`` Hugging Face repo id, fetched with
   ``huggingface_hub`` (its own cache, ``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_ENDPOINT`` is
   honoured): the whole model folder (safetensors preferred) or one file of the repo.

Offline (``HF_HUB_OFFLINE=1`` or ``KSEG_OFFLINE=1``) nothing is fetched: what is not already
on disk is an :class:`OfflineError` naming it and where it was looked for.
"""

import dataclasses
import hashlib
import http.client
import os
import re
import urllib.parse
import urllib.request

from kseg.pretrained.presets import PRESETS
from kseg.utils.progress import ProgressTask

_TRUE = ("1", "true", "yes", "on")
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_GDRIVE = re.compile(r"^https://drive\.google\.com/file/d/([\w-]+)")


class OfflineError(FileNotFoundError):
    """Weights that are not on disk were asked for without network access."""


class DownloadError(OSError):
    """A download failed, was cut short, or does not match its checksum."""


def kseg_home():
    """``$KSEG_HOME``, default ``~/.cache/kseg``."""
    return os.path.expanduser(os.environ.get("KSEG_HOME") or os.path.join("~", ".cache", "kseg"))


def is_offline():
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "KSEG_OFFLINE"))


@dataclasses.dataclass
class Source:
    """A resolved name: ``kind`` is ``preset`` / ``local`` / ``url`` / ``hub``; ``location``
    the path, URL or ``repo[/file]``; ``preset`` the table entry (or None); ``sha256`` the
    expected checksum or hex prefix (or None); ``key`` the cache name of its conversion."""

    kind: str
    location: str
    name: str
    preset: dict = None
    sha256: str = None

    @property
    def key(self):
        if self.kind in ("preset",):
            return self.name
        if self.kind == "local":
            stat = os.stat(self.location)
            digest = hashlib.sha1(f"{os.path.abspath(self.location)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
            return f"local-{_slug(os.path.basename(self.location.rstrip('/')))}-{digest.hexdigest()[:10]}"
        return f"{self.kind}-{_slug(self.location)}"


def _slug(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "--", text).strip("-")[:120]


def resolve(name_or_path):
    """The :class:`Source` of a preset name, local path, URL or Hub id.

    Raises: ValueError for anything else, listing the forms accepted and close preset names.
    """
    name = os.fspath(name_or_path)
    if name in PRESETS:
        preset = PRESETS[name]
        inner = resolve(preset["source"])
        return Source(inner.kind, inner.location, name, preset, preset.get("sha256") or inner.sha256)
    if os.path.exists(name):
        return Source("local", name, name)
    if name.startswith(("http://", "https://")):
        match = _HASH_IN_NAME.search(urllib.parse.urlparse(name).path)
        return Source("url", name, name, sha256=match.group(1) if match else None)
    if name.startswith("hf:") or re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return Source("hub", name.removeprefix("hf:"), name)
    close = [p for p in PRESETS if name.split("_")[0] in p][:8]
    raise ValueError(
        f"{name!r} is not a kseg preset, an existing file or folder, an http(s) URL or a Hugging Face repo id "
        f"(org/name, or hf:org/name[/file]). "
        + (f"Presets of that family: {', '.join(close)}. " if close else "")
        + "kseg.pretrained.list_presets() lists them all.")


# --------------------------------------------------------------------------- fetching


def fetch(source, log=print):
    """A local path (file or folder) holding ``source``'s checkpoint, downloading it if needed.

    Returns: ``(path, sha256 or None, downloaded: bool)``.
    Raises: OfflineError (offline and not on disk), DownloadError (network failure, short
      read, checksum mismatch), FileNotFoundError (a Hub repo or file that does not exist).
    """
    if source.kind == "local":
        return source.location, None, False
    if source.kind == "url":
        return _download_url(source, log)
    return _download_hub(source)


def _url_and_name(source):
    match = _GDRIVE.match(source.location)
    if match:  # the direct-download endpoint; confirm=t skips the "cannot scan" page of big files
        url = f"https://drive.usercontent.google.com/download?id={match.group(1)}&export=download&confirm=t"
        return url, f"{_slug(source.name)}.pth"
    return source.location, os.path.basename(urllib.parse.urlparse(source.location).path) or "checkpoint.pth"


def _download_url(source, log):
    url, filename = _url_and_name(source)
    folder = os.path.join(kseg_home(), "downloads")
    dest = os.path.join(folder, filename)
    expected = (source.sha256 or "").lower() or None
    if os.path.isfile(dest):
        return dest, _recorded_sha(dest), False
    if is_offline():
        raise OfflineError(f"offline (HF_HUB_OFFLINE / KSEG_OFFLINE set) and {source.name!r} is not downloaded: "
                           f"expected {dest}. Run once with network access, or download {url} yourself and pass "
                           "the file's path")
    os.makedirs(folder, exist_ok=True)
    part = f"{dest}.part-{os.getpid()}"
    try:
        sha, size = _stream(url, part, source.name)
        if expected and not sha.startswith(expected):
            raise DownloadError(f"checksum mismatch for {url}: sha256 {sha} does not start with the expected "
                                f"{expected}; the file is corrupt or not the published one, nothing was kept")
        os.replace(part, dest)
    finally:
        if os.path.exists(part):
            os.remove(part)
    with open(dest + ".sha256", "w") as f:
        f.write(sha + "\n")
    log(f"kseg: downloaded {url} ({size / 2 ** 20:.1f} MiB, sha256 {sha[:12]}"
        f"{', matches the published ' + expected if expected else ''}) to {dest}")
    return dest, sha, True


def _stream(url, part, name):
    """Downloads ``url`` into ``part``; returns (sha256 hex, bytes). Raises DownloadError."""
    digest, size, total = hashlib.sha256(), 0, 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            with ProgressTask(f"downloading {name}", round(total / 2**20) if total else None, "MiB") as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(size // 2**20)
    except (OSError, http.client.HTTPException) as err:
        raise DownloadError(f"cannot download {url} for {name!r} ({type(err).__name__}: {err}); nothing was kept. "
                            "Check the network, or download the file yourself and pass its path") from err
    if total and size != total:
        raise DownloadError(f"download of {url} stopped at {size} of {total} bytes; nothing was kept, try again")
    return digest.hexdigest(), size


def _recorded_sha(path):
    try:
        with open(path + ".sha256") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _hub_kwargs():
    return {"cache_dir": os.environ.get("HF_HUB_CACHE") or None, "endpoint": os.environ.get("HF_ENDPOINT") or None,
            "local_files_only": is_offline()}


def _download_hub(source):
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError as err:
        raise ImportError("Hugging Face Hub sources need huggingface_hub (pip install huggingface-hub)") from err
    parts = source.location.split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
    kwargs = _hub_kwargs()
    try:
        if filename:
            return hf_hub_download(repo, filename, **kwargs), None, not kwargs["local_files_only"]
        patterns = ["*.json", "*.safetensors"]
        folder = snapshot_download(repo, allow_patterns=patterns, **kwargs)
        if not any(f.endswith(".safetensors") for f in os.listdir(folder)):  # older repos: PyTorch pickles
            folder = snapshot_download(repo, allow_patterns=["*.json", "pytorch_model*.bin", "*.pth"], **kwargs)
        return folder, None, not kwargs["local_files_only"]
    except LocalEntryNotFoundError as err:
        where = kwargs["cache_dir"] or "the Hugging Face cache (HF_HOME / HF_HUB_CACHE)"
        raise OfflineError(f"{source.name!r}: Hub repo {repo}{'/' + filename if filename else ''} is not in {where} "
                           f"and {'offline mode is on' if kwargs['local_files_only'] else 'the Hub cannot be reached'}."
                           " Run once with network access, or pass a local copy's path") from err
    except (RepositoryNotFoundError, EntryNotFoundError) as err:
        raise FileNotFoundError(f"{source.name!r}: {err}") from err
