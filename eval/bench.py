"""The kit's benchmark: every figure as a ratio measured in one run, with the device and commit.

    python -m eval.bench [--quick] [--systems lfcc_resnet18,rawnet2,se_res2net50] [--device auto]
                         [--json OUT.json]

Sections (each runs in a child process, so that its peak RSS is its own):
  loader   training samples/s of one DataLoader worker (each system's augmentation: MUSAN
           noise/music/babble and codec p = 0.3 from the prepare stage's codec cache) against the
           training step's samples/s of each system (forward, backward, Adam step at the config's
           crop length); the ratio says how many workers keep the step fed. Where training would
           apply the channel effects on the device (augment.effects_on, on CUDA), the step includes
           them, and the same figures with the effects in the workers are printed beside
  score    utterances/s of the score stage's path (windows at the model's input length, batched)
  fusion   feature-level fusion of the test split (window subspaces + geodesic distances, 3 × 256-d
           members) against its FLOP floor: the GEMM work it cannot avoid (window Gram matrices,
           projections of the windows onto the class bases, the small coefficient products)
           divided by the GEMM rate this machine reaches in the same run; beside it, the two parts
           no method avoids timed alone (the projection GEMM, the r x r eigenproblems)
  fusion_memory  peak RSS of feature fusion (train- and dev-statistics distances) at the real
           split sizes (22,400 / 8,400 / 79,490) and 1792-d members (3 × 256 + 1024), window
           embeddings read from disk as the stage does
Synthetic inputs (the augmentation benchmark's speech-like signals, a small synthetic MUSAN folder) keep it self-contained;
`--quick` shrinks every size so that the whole run takes under a minute on 2 CPU cores.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from core.errors import ArgumentParser, fail, run_cli
from core.provenance import commit_id, machine, machine_line, package_versions
from data_prep.bench_augment import speechlike

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
DEFAULT_SYSTEMS = ("lfcc_resnet18", "rawnet2", "se_res2net50")


def device_name(device: str, box: dict) -> str:
    """The GPU's name, or the CPU of the `machine()` record `box`."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return machine_line(box)


# ----------------------------------------------------------------------------- synthetic inputs

def write_split(folder: Path, utterances: list[np.ndarray], labels: list[int]) -> None:
    from core.prepared_split import PreparedSplitWriter

    folder.mkdir(parents=True, exist_ok=True)
    with PreparedSplitWriter(folder) as split:
        for i, (x, c) in enumerate(zip(utterances, labels)):
            split.add(f"utt{i:06d}", f"utt{i:06d}.wav", c, SR, len(x) / SR, x)


def write_musan(folder: Path, rng: np.random.Generator, files: int, seconds: float) -> None:
    import soundfile as sf

    for kind in ("noise", "music", "speech"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(files):
            x = speechlike(int(seconds * SR), rng) if kind == "speech" else (0.05 * rng.standard_normal(int(seconds * SR)))
            sf.write(folder / kind / f"{kind}{i}.wav", x.astype(np.float32), SR, subtype="PCM_16")


# ----------------------------------------------------------------------------- sections

def section_loader(args: dict) -> dict:
    import torch
    from torch.utils.data import default_collate

    from data_prep.codec_cache import build_codec_cache
    from systems.common.config import load_config
    from systems.common.device_effects import apply_channel
    from systems.common.engine import TrainCrops, build_augmenter, effects_on_device, make_optimizer
    from systems.common.inference import build_model, to_channels_last, window_length
    from core.prepared_split import PreparedSplit

    rng = np.random.default_rng(0)
    work = Path(args["work"])
    split_dir = work / "train"
    if not split_dir.is_dir():
        write_split(split_dir, [speechlike(int(s * SR), rng) for s in rng.uniform(2.0, 6.0, args["utterances"])],
                    list(rng.integers(0, 7, args["utterances"])))
        write_musan(work / "musan", rng, files=3, seconds=args["musan_seconds"])
    split = PreparedSplit(split_dir)
    cached: set[tuple] = set()
    out = {}
    for system in args["systems"]:
        cfg = load_config(ROOT / f"systems/{system}/conf/{args['conf']}.yaml",
                          {"augment.musan": str(work / "musan"), "augment.p_codec": 0.3, **args["overrides"]})
        torch.manual_seed(0)
        model = build_model(cfg)
        n = window_length(model)
        timings = {}
        codecs = (cfg.augment.codec_variants, tuple(cfg.augment.codecs))
        if codecs not in cached:  # what the prepare stage builds: the codec round trips, once
            build_codec_cache(split_dir, cfg.augment.codec_variants, tuple(cfg.augment.codecs), seed=0, nj=1)
            cached.add(codecs)
        augmenter = build_augmenter(cfg, split)
        device = torch.device(args["device"])
        # augment.effects_on as training resolves it: on a GPU the step below applies the channel
        # effects to its batch, and the workers do the rest
        defer = effects_on_device(cfg, augmenter, device, reads_own_data=False)
        for name, used in (("clean", None), ("augmented", augmenter)):
            crops = TrainCrops(split, n, used, seed=0, defer_effects=defer)
            warm = TrainCrops(split, n, used, seed=1, defer_effects=defer)  # warm-up: imports, first reads
            for i in range(min(len(warm), 8)):
                warm[i]
            t0 = time.perf_counter()
            for i in range(args["loader_items"]):
                crops[i % len(crops)]
            timings[name] = args["loader_items"] / (time.perf_counter() - t0)
        batch = min(args["batch"], cfg.train.batch_size)
        workers_rate = loader_workers_rate(TrainCrops(split, n, augmenter, seed=2, defer_effects=defer), batch,
                                           cfg.train, args["loader_workers"], args["loader_items"], args["device"])
        model = model.to(device).train()
        if cfg.train.channels_last:  # the layout training uses
            to_channels_last(model)
        opt = make_optimizer(cfg, model)
        items = [TrainCrops(split, n, augmenter, 0, defer_effects=defer)[i % len(split)] for i in range(batch)]
        collated = default_collate(items)  # what the training loader hands the step
        wave = collated[0].to(device)
        labels = torch.as_tensor(rng.integers(0, 7, batch), device=device)
        domains = torch.zeros(batch, dtype=torch.long, device=device)
        plan = collated[3] if defer else None

        def step(with_effects: bool):
            x = apply_channel(wave, plan) if with_effects else wave
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                enabled=device.type == "cuda" and cfg.train.bf16):
                loss, _ = model.training_loss(x, labels, domains, 0.5)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def timed_steps(with_effects: bool) -> tuple[float, float | None]:
            step(with_effects)  # warm-up: allocator, kernels, FFT plans
            if device.type == "cuda":
                torch.cuda.synchronize()
            with GpuUtilisation(device) as busy:
                t0 = time.perf_counter()
                for _ in range(args["steps"]):
                    step(with_effects)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = (time.perf_counter() - t0) / args["steps"]
            return seconds, busy.mean  # the mean exists once the block has closed

        step_seconds, busy = timed_steps(defer)
        step_rate = batch / step_seconds
        out[system] = {"loader_clean_per_s": timings["clean"], "loader_augmented_per_s": timings["augmented"],
                       "step_samples_per_s": step_rate, "step_ms": 1000 * step_seconds,
                       "batch": batch, "crop_samples": n, "loader_over_step": timings["augmented"] / step_rate,
                       "effects_on": "device" if defer else "loader",
                       "bf16": device.type == "cuda" and cfg.train.bf16, "gpu_utilisation": busy,
                       "loader_workers": args["loader_workers"], "loader_workers_per_s": workers_rate,
                       "workers_over_step": workers_rate / step_rate if workers_rate else None,
                       "shared_collate_per_s": shared_collate_rate([item[0] for item in items], args["loader_items"])}
        if defer:  # the same, with the effects in the loader workers, for the side-by-side ratio
            plain_seconds, _ = timed_steps(False)
            in_loader = loader_workers_rate(TrainCrops(split, n, augmenter, seed=2), batch, cfg.train,
                                            args["loader_workers"], args["loader_items"], args["device"])
            out[system].update(step_without_effects_ms=1000 * plain_seconds,
                               effects_in_loader_workers_per_s=in_loader,
                               effects_in_loader_workers_over_step=in_loader * plain_seconds / batch
                               if in_loader else None)
    return out


def shared_collate_rate(crops: list, items: int) -> float:
    """Items/s of stacking crops into a batch in fresh shared memory, as a DataLoader worker
    collates every batch it hands over: each batch faults in new pages (32 MB for 128 4 s crops),
    a cost per item no augmentation saving removes."""
    import torch

    batches = max(3, items // len(crops))
    storage = crops[0]._typed_storage()
    t0 = time.perf_counter()
    for _ in range(batches):
        out = crops[0].new(storage._new_shared(len(crops) * crops[0].numel(), device="cpu"))
        torch.stack(crops, out=out.view(len(crops), -1))
    return batches * len(crops) / (time.perf_counter() - t0)


def loader_workers_rate(crops, batch: int, train_cfg, workers: int, items: int, device: str) -> float | None:
    """Samples/s through a DataLoader with `workers` processes and the config's other loader options,
    built as training builds it (engine.loader_options), the workers' start and first batch
    excluded; None for 0 workers."""
    import dataclasses

    import torch
    from torch.utils.data import DataLoader

    from systems.common.engine import loader_options

    if workers < 1:
        return None
    # distinct (epoch, item) draws, so that no crop repeats however small the synthetic split
    keys = [(k // len(crops), k % len(crops)) for k in range(batch * (1 + max(2, items * workers // batch)))]
    options = loader_options(dataclasses.replace(train_cfg, num_workers=workers), torch.device(device))
    loader = DataLoader(crops, batch_size=batch, sampler=keys, **options)
    batches = iter(loader)
    next(batches)
    t0 = time.perf_counter()
    seen = sum(len(b[0]) for b in batches)
    return seen / (time.perf_counter() - t0)


class GpuUtilisation:
    """The mean of torch.cuda.utilization() (NVML's busy share of the last sample period) read
    every 50 ms while the block runs; `mean` stays None on CPU or without NVML."""

    def __init__(self, device):
        self.device, self.mean, self.samples = device, None, []

    def __enter__(self):
        import threading

        import torch

        self.stop = threading.Event()
        self.thread = None
        if self.device.type == "cuda":
            try:
                torch.cuda.utilization(self.device)
            except Exception:  # no NVML binding (pynvml) in this environment: no figure, not an error
                return self

            def sample():
                while not self.stop.wait(0.05):
                    self.samples.append(torch.cuda.utilization(self.device))

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
            self.mean = float(np.mean(self.samples)) if self.samples else None


def section_score(args: dict) -> dict:
    import torch

    from core.prepared_split import PreparedSplit
    from systems.common.config import load_config
    from systems.common.inference import build_model, inference_bf16, score_windows, window_hop, window_length
    from systems.common.windows import SplitWindows

    rng = np.random.default_rng(1)
    split_dir = Path(args["work"]) / "test"
    if not split_dir.is_dir():
        # the real test set's utterances last 1-10 s
        write_split(split_dir, [speechlike(int(s * SR), rng) for s in rng.uniform(1.0, 10.0, args["score_utterances"])],
                    [-1] * args["score_utterances"])
    split = PreparedSplit(split_dir)
    device = torch.device(args["device"])
    out = {}
    for system in args["systems"]:
        cfg = load_config(ROOT / f"systems/{system}/conf/{args['conf']}.yaml", args["overrides"])
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        windows = SplitWindows(split, window_length(model), window_hop(cfg))
        t0 = time.perf_counter()
        score_windows(model, windows, device, cfg.score.batch_size, cfg.train.bf16,
                      num_workers=cfg.train.num_workers, pin_memory=cfg.train.pin_memory)
        seconds = time.perf_counter() - t0
        out[system] = {"utterances_per_s": len(split) / seconds, "windows": len(windows),
                       "utterances": len(split), "seconds": seconds,
                       "bf16": inference_bf16(device, cfg.train.bf16)}
    return out


def gemm_rate(size: int = 1536, repeats: int = 12) -> float:
    """float64 GEMM FLOP/s this machine reaches now: the best of several, since one product can
    land on a slow moment (clock changes, a neighbour's burst) and a low rate flatters the ratio."""
    a = np.random.default_rng(0).standard_normal((size, size))
    a @ a
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        best = max(best, 2 * size ** 3 / (time.perf_counter() - t0))
    return best


def synthetic_windows(rng: np.random.Generator, n_utt: int) -> tuple[np.ndarray, np.ndarray]:
    """Window counts of 3-10 s utterances (3 s windows every 1 s: 1-8 windows) and their offsets."""
    counts = rng.integers(1, 9, size=n_utt)
    return counts, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def section_fusion(args: dict) -> dict:
    """The `feature` method's test-split work: window subspaces and their distances to 7 class
    subspaces of dimension 10, members 3 × 256-d (768-d), L2-normalised and fused as in the stage."""
    from fusion.manifold import class_columns, orthonormal_columns, project, subspace_distances
    from fusion.manifold_fusion import FUSION_THREADS, FeatureFusionConfig, WindowSource, scan_windows

    rng = np.random.default_rng(2)
    n_utt, d, widths = args["fusion_utterances"], 10, (256, 256, 256)
    counts, offsets = synthetic_windows(rng, n_utt)
    members = {f"m{k}": rng.standard_normal((int(offsets[-1]), w)).astype(np.float32) for k, w in enumerate(widths)}
    dim = sum(widths)
    classes = [orthonormal_columns(rng.standard_normal((dim, d))) for _ in range(7)]
    basis, _ = class_columns([classes])
    source = WindowSource(members, offsets, True)
    t0 = time.perf_counter()
    subspaces, projections = scan_windows(source, FeatureFusionConfig(d=d), True, basis)
    subspace_distances(subspaces, projections, [classes], FUSION_THREADS)
    seconds = time.perf_counter() - t0
    rank = np.minimum(counts, d).astype(np.float64)
    # the GEMM work no method avoids: window Gram matrices, projections of every window onto the
    # 7 × d class directions, and the small (r × n)·(n × 7d) products
    flops = float(np.sum(2 * counts ** 2 * dim + 2 * counts * dim * 7 * d + 2 * rank * counts * 7 * d))
    rate = gemm_rate()
    # the floor's largest term alone: every window's projection onto the class directions, as one
    # BLAS call per stream block on already fused contiguous float64 rows, as the kit computes it
    # (what a skinny GEMM of this shape reaches here, memory traffic included)
    projection_seconds = 0.0
    for u0, u1 in source.utterance_blocks():
        X = source.fuse(source.raw(int(offsets[u0]), int(offsets[u1])))
        t1 = time.perf_counter()
        project(X, basis)
        projection_seconds += time.perf_counter() - t1
    eigen_seconds = small_eigenproblem_seconds(rng, counts, d, FUSION_THREADS)
    floor = flops / rate
    return {"utterances": n_utt, "windows": int(offsets[-1]), "dim": dim, "seconds": seconds,
            "gflop": flops / 1e9, "gemm_gflop_per_s": rate / 1e9, "floor_seconds": floor,
            "over_floor": seconds / floor, "projection_gemm_seconds": projection_seconds,
            "projection_gemm_over_floor": projection_seconds / floor,
            "eigenproblem_seconds": eigen_seconds, "eigenproblem_over_floor": eigen_seconds / floor}


def small_eigenproblem_seconds(rng: np.random.Generator, counts: np.ndarray, d: int, threads: int) -> float:
    """Time of the distances' r x r symmetric eigenproblems alone (one per utterance and class, of
    rank r = min(n, d) >= 3; r <= 2 have closed forms), in the chunks and threads the kit uses: the
    part of the work that is no GEMM and so no part of the floor, but that no method avoids."""
    from fusion.manifold import DISTANCE_CHUNK

    chunks = []
    for r in range(3, d + 1):
        count = int(np.sum(np.minimum(counts, d) == r)) * 7
        for start in range(0, count, DISTANCE_CHUNK):
            blocks = rng.standard_normal((min(DISTANCE_CHUNK, count - start), r, d)) / np.sqrt(2 * d)
            chunks.append(blocks @ blocks.transpose(0, 2, 1))
    t0 = time.perf_counter()
    with threadpool_limits(1), ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(np.linalg.eigvalsh, chunks))
    return time.perf_counter() - t0


def write_npy_in_blocks(path: Path, rows: int, width: int, seed: int, block: int = 65536) -> None:
    """A float32 (rows, width) .npy of standard normals, written block by block (bounded memory)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (rows, width)})
        for start in range(0, rows, block):
            fh.write(rng.standard_normal((min(block, rows - start), width)).astype(np.float32).tobytes())


FUSION_MEMORY_WIDTHS = {"m0": 256, "m1": 256, "m2": 256, "ssl": 1024}


def write_fusion_exports(exp: Path, sizes: dict[str, int]) -> dict[str, int]:
    """Synthetic score exports of four members (FUSION_MEMORY_WIDTHS) in the score stage's format;
    the window counts per split."""
    from core.scores import write_scores

    rng = np.random.default_rng(4)
    widths = FUSION_MEMORY_WIDTHS
    offsets = {}
    for split, n in sizes.items():
        _, offsets[split] = synthetic_windows(rng, n)
        labels = np.arange(n) % 7 if split != "test" else np.full(n, -1)
        for k, (name, w) in enumerate(widths.items()):
            folder = exp / name / "scores" / split
            centres = rng.standard_normal((7, w)).astype(np.float32)
            embeddings = centres[np.arange(n) % 7] + rng.standard_normal((n, w)).astype(np.float32)
            write_scores(folder, [f"u{i}" for i in range(n)], labels, np.zeros((n, 7)), embeddings)
            if split != "train":
                # block by block: the writer never holds a split's windows, as the score stage doesn't
                write_npy_in_blocks(folder / "window_embeddings.npy", int(offsets[split][-1]), w, seed=10 * k + len(split))
                np.save(folder / "window_offsets.npy", offsets[split])
    return {s: int(o[-1]) for s, o in offsets.items()}


def section_fusion_memory(args: dict) -> dict:
    """Peak memory of feature fusion at the real split sizes with members 3 × 256 + 1024 (1792-d):
    window embeddings exported to disk as the score stage does, then the fusion stage's reader and
    the distances of `feature` / `feature_softmax` (train statistics) and `feature_devstats` (dev
    statistics, out of fold)."""
    from fusion.manifold_fusion import FeatureDistances, FeatureFusionConfig
    from fusion.members import load_members

    widths = FUSION_MEMORY_WIDTHS
    sizes = {"train": args["memory_train"], "dev": args["memory_dev"], "test": args["memory_test"]}
    exp = Path(args["work"]) / "fusion_memory"
    # written by another process: this one's peak RSS is the fusion's alone
    code = ("import json, sys; from pathlib import Path; from eval.bench import write_fusion_exports; "
            "print(json.dumps(write_fusion_exports(Path(sys.argv[1]), json.loads(sys.argv[2]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(exp), json.dumps(sizes)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    windows_per_split = json.loads(proc.stdout.strip().splitlines()[-1])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    fd = FeatureDistances(load_members(exp, list(widths)), FeatureFusionConfig(class_stats_from="train"))
    for stats_from, include_mean in (("train", True), ("dev", True)):
        fd.distances(stats_from, include_mean)
    seconds = time.perf_counter() - t0
    return {"dim": sum(widths.values()), "sizes": sizes, "windows_test": windows_per_split["test"],
            "window_gb_on_disk": (windows_per_split["dev"] + windows_per_split["test"]) * sum(widths.values()) * 4 / 1e9,
            "seconds": seconds, "peak_rss_before_fusion_mb": rss_before}


SECTIONS = {"loader": section_loader, "score": section_score, "fusion": section_fusion,
            "fusion_memory": section_fusion_memory}


def run_section(name: str, args: dict) -> dict:
    """The section in a child process: its figures and its own peak RSS."""
    code = ("import json, resource, sys; from eval.bench import SECTIONS; "
            f"r = SECTIONS[{name!r}](json.loads(sys.argv[1])); "
            "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
            "print('RESULT ' + json.dumps(r))")
    env = dict(os.environ, TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        fail(f"benchmark section {name} failed: {last}")
    return json.loads(lines[-1][len("RESULT "):])


def sizes(quick: bool) -> dict:
    if quick:
        return {"utterances": 16, "loader_items": 16, "loader_workers": 1, "musan_seconds": 10.0, "batch": 4,
                "steps": 1, "score_utterances": 6, "fusion_utterances": 4000, "conf": "demo",
                "memory_train": 140, "memory_dev": 70, "memory_test": 300}
    return {"utterances": 128, "loader_items": 128, "loader_workers": 4, "musan_seconds": 60.0, "batch": 32,
            "steps": 3, "score_utterances": 200, "fusion_utterances": 79490, "conf": "demo",
            "memory_train": 22400, "memory_dev": 8400, "memory_test": 79490}


SIZE_OPTIONS = {"conf": (str, "system configs (systems/<name>/conf/<conf>.yaml): demo, or paper for the real-size models"),
                "batch": (int, "training batch of the step timing, at most the config's"),
                "steps": (int, "timed training steps"),
                "loader_items": (int, "items each loader figure reads"),
                "loader_workers": (int, "DataLoader workers of the loader's many-worker figure (0: none)"),
                "score_utterances": (int, "utterances the score section scores")}


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: under a minute on 2 CPU cores")
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS))
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None, help="also write every figure to this file")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                    help="overrides of every system config the loader and score sections load")
    for name, (kind, text) in SIZE_OPTIONS.items():
        ap.add_argument(f"--{name}", type=kind, default=None, help=f"{text} (default: by --quick)")
    args = ap.parse_args()
    import torch

    from systems import REGISTRY
    from systems.common.config import parse_overrides
    from systems.common.inference import pick_device

    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in REGISTRY:
            fail(f"--systems: unknown system {s!r}; valid: {', '.join(sorted(REGISTRY))}")
    overrides = parse_overrides(args.set)
    sections = [s for s in args.sections.split(",") if s]
    for s in sections:
        if s not in SECTIONS:
            fail(f"--sections: unknown section {s!r}; valid: {', '.join(SECTIONS)}")
    device = str(pick_device(args.device))
    box = machine()
    results = {"device": device_name(device, box), "torch": torch.__version__, "commit": commit_id(),
               "packages": package_versions(), "machine": box, "quick": args.quick}
    print(f"device: {results['device']} ({device}); torch {results['torch']}; commit {results['commit']}"
          f"{'; quick sizes' if args.quick else ''}")
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kit_bench_") as work:
        common = dict(sizes(args.quick), work=work, systems=systems, device=device, overrides=overrides)
        common.update({k: getattr(args, k) for k in SIZE_OPTIONS if getattr(args, k) is not None})
        results["sizes"] = {k: common[k] for k in SIZE_OPTIONS}
        results["overrides"] = overrides
        for name in sections:
            r = run_section(name, common)
            results[name] = r
            if name == "loader":
                for s in systems:
                    f = r[s]
                    workers = (f"; DataLoader with {f['loader_workers']} workers {f['loader_workers_per_s']:.1f} samples/s: "
                               f"workers/step {f['workers_over_step']:.2f}") if f["loader_workers_per_s"] else ""
                    busy = f", GPU busy {f['gpu_utilisation']:.0f} %" if f["gpu_utilisation"] is not None else ""
                    print(f"loader   {s:14s} worker {f['loader_augmented_per_s']:7.1f} samples/s augmented "
                          f"(channel on the {f['effects_on']}) "
                          f"({f['loader_clean_per_s']:.1f} clean), step {f['step_samples_per_s']:6.1f} samples/s "
                          f"(batch {f['batch']}, {f['step_ms']:.1f} ms, {'bf16' if f['bf16'] else 'fp32'}{busy}): "
                          f"loader/step {f['loader_over_step']:.2f}{workers}")
                    print(f"loader   {s:14s} collating a batch into fresh shared memory, as each worker does: "
                          f"{f['shared_collate_per_s']:.0f} items/s (no worker hands over more at this crop size)")
                    if f.get("effects_in_loader_workers_per_s"):
                        print(f"loader   {s:14s} the same with the channel in the {f['loader_workers']} workers: "
                              f"{f['effects_in_loader_workers_per_s']:.1f} samples/s against the step without them "
                              f"({f['step_without_effects_ms']:.1f} ms): workers/step "
                              f"{f['effects_in_loader_workers_over_step']:.2f}")
            elif name == "score":
                for s in systems:
                    f = r[s]
                    print(f"score    {s:14s} {f['utterances_per_s']:7.1f} utterances/s "
                          f"({f['utterances']} utterances, {f['windows']} windows, {'bf16' if f['bf16'] else 'fp32'})")
            elif name == "fusion_memory":
                print(f"fusion   {r['dim']}-d, train/dev/test {r['sizes']['train']}/{r['sizes']['dev']}/"
                      f"{r['sizes']['test']} ({r['window_gb_on_disk']:.2f} GB of window embeddings on disk): "
                      f"every feature-fusion distance in {r['seconds']:.1f} s")
            else:
                print(f"fusion   {r['utterances']} utterances x {r['dim']}-d: {r['seconds']:.2f} s, FLOP floor "
                      f"{r['floor_seconds']:.2f} s ({r['gflop']:.1f} GFLOP at {r['gemm_gflop_per_s']:.1f} GFLOP/s): "
                      f"{r['over_floor']:.2f}x the floor; its projection GEMM alone "
                      f"{r['projection_gemm_seconds']:.2f} s ({r['projection_gemm_over_floor']:.2f}x), its r x r "
                      f"eigenproblems alone {r['eigenproblem_seconds']:.2f} s ({r['eigenproblem_over_floor']:.2f}x)")
            print(f"peak RSS {name:6s} {r['peak_rss_mb']:.0f} MB")
    results["seconds"] = time.perf_counter() - t_all
    print(f"total {results['seconds']:.1f} s")
    if args.json:
        from core.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    run_cli(main)
