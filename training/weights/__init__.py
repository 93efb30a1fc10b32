"""The authors' released weights: found on the Hugging Face Hub, pinned by a lock, verified, converted into the store.

`pull(name)` fetches a release and the MobileFaceNet landmark weights it needs, checks the bytes, converts the
checkpoint to our model and exports it into the model store with a card (classes of its dataset, licence, source
sha256, reported metrics). `import_file(path, name)` does the same from a file the user fetched by hand, which is how
an offline machine gets real weights.

Where the files come from:

- S2D checkpoints: the Hugging Face repository `cyinen/S2D`, through `huggingface_hub` (its cache, `$HF_ENDPOINT` for
  mirrors, `$HF_HUB_OFFLINE`). The authors do not publish the fine-tuned files' names, so a pull lists the repository
  and maps names to dataset and fold (`release_of`); `file=` (`--file`) picks one by hand.
- MobileFaceNet: `landmark/mobilefacenet_model_best.pth.tar` inside the authors' GitHub repository, pinned by commit
  and git blob id (`$S2D_WEIGHTS_BASE_URL` replaces the host with a mirror of the same layout).

Pinning: the registry pins nothing on the Hub, because nothing could be read from it when this project was written
(it is built offline). The first pull trusts what the Hub lists (its commit, and the LFS sha256 or git blob id of the
file: trust on first use) and writes `weights.lock.json` in the store root with repo, commit, file, size and sha256.
Every later pull given that lock fetches exactly that commit and file and refuses other bytes. A file that fails a
check is removed: neither the Hub cache nor the model store keeps it.

A registry of other entries can be given as a JSON file (`--registry FILE`, `$S2D_WEIGHTS_REGISTRY`): a list of
`WeightsEntry` fields.

One module per part: `registry` (the released files, their licences, which repository file is which release),
`lock` (the lock and the checks of bytes against a pin), `fetch` (the Hub, pinned URLs, offline errors) and
`convert` (into the model store: `pull`, `import_file`).
"""

from s2d.training.weights.convert import PullResult, convert, describe_pin, import_file, pull
from s2d.training.weights.fetch import (
    Fetched,
    download,
    fetch,
    hub_cache_dir,
    hub_endpoint,
    offline,
    place,
    weights_dir,
)
from s2d.training.weights.lock import Digests, Expected, Lock, Pin, check, default_lock_path, digests
from s2d.training.weights.registry import (
    DATA_TERMS,
    DEFAULT_REGISTRY,
    HF_REPO,
    LICENCE_S2D,
    LOCK_FILE,
    MOBILEFACENET_BLOB,
    MOBILEFACENET_FILE,
    S2D_COMMIT,
    S2D_GITHUB,
    TIMEOUT_S,
    Release,
    WeightsEntry,
    WeightsError,
    load_registry,
    pick_file,
    release_of,
)

__all__ = [
    "DATA_TERMS",
    "DEFAULT_REGISTRY",
    "HF_REPO",
    "LICENCE_S2D",
    "LOCK_FILE",
    "MOBILEFACENET_BLOB",
    "MOBILEFACENET_FILE",
    "S2D_COMMIT",
    "S2D_GITHUB",
    "TIMEOUT_S",
    "Digests",
    "Expected",
    "Fetched",
    "Lock",
    "Pin",
    "PullResult",
    "Release",
    "WeightsEntry",
    "WeightsError",
    "check",
    "convert",
    "default_lock_path",
    "describe_pin",
    "digests",
    "download",
    "fetch",
    "hub_cache_dir",
    "hub_endpoint",
    "import_file",
    "load_registry",
    "offline",
    "pick_file",
    "place",
    "pull",
    "release_of",
    "weights_dir",
]
