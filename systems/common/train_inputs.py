"""What a training depends on, computed without PyTorch: the config's digest, the digest of the
prepared data it reads, the listings of the files it reads outside them, and the training stage's
stamp built on them.

The stamp (`EXP/.options.json`, core/stamps.py) is written when a training is complete and lists
every checkpoint file, the log and the resolved config at their sizes. `systems.train` reads it
before it imports torch, so that a re-run over a finished training (every re-run of the recipe,
every new test set) answers "nothing to do" in well under a second instead of the several seconds
that importing torch, SpeechBrain and the model takes; anything else falls through to the engine's
own check (engine.py), which inspects the checkpoints themselves.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from core.prepared_split import CODEC_FOLDER
from core.stamps import STAMP_NAME, folder_listing, options_digest, read_stamp, stage_is_current, write_stamp
from systems.common.config import LOADER_KEYS, SystemConfig, load_config

# training options added after the first release, with the value that means "off": a config that
# leaves one off hashes as before the option existed, so earlier checkpoints stay current
ADDED_OFF = {"regmixup_alpha": 0.0, "logitnorm_tau": 0.0, "am_margin": 0.0, "channels_last": False}
ADDED_AUGMENT_DEFAULTS = {"effects_on": "auto"}
# model keys added later, at the values every earlier config meant (the linear classifier of
# RawNet2 and LFCC-ResNet18)
ADDED_MODEL_DEFAULTS = {"classifier": "linear", "cosine_scale": 30.0}


# scoring settings that say how fast the trained model is run, not what it learned: the batch
# size (`systems.score --batch_size` overrides it too). Out of the digest, as the loader's are
RUN_ONLY_SCORE_KEYS = ("batch_size",)


def _digested_options(cfg: SystemConfig) -> dict:
    options = cfg.to_dict()
    options["train"] = {k: v for k, v in options["train"].items()
                        if k not in LOADER_KEYS and (k, v) not in ADDED_OFF.items()}
    options["augment"] = {k: v for k, v in options["augment"].items() if (k, v) not in ADDED_AUGMENT_DEFAULTS.items()}
    options["model"] = {k: v for k, v in options["model"].items() if (k, v) not in ADDED_MODEL_DEFAULTS.items()}
    return options


def config_digest(cfg: SystemConfig) -> str:
    """What makes a checkpoint belong to a config: every setting but the loader's (LOADER_KEYS)
    and scoring's batch size (RUN_ONLY_SCORE_KEYS), which change how fast batches come, not which,
    and the ADDED_OFF options at their off value (ADDED_AUGMENT_DEFAULTS likewise: `auto` places
    the effects by device, as bf16 does precision; ADDED_MODEL_DEFAULTS, written out in a config,
    as when it was left out)."""
    return options_digest(_training_options(cfg))


def _training_options(cfg: SystemConfig) -> dict:
    options = _digested_options(cfg)
    options["score"] = {k: v for k, v in options["score"].items() if k not in RUN_ONLY_SCORE_KEYS}
    return options


def earlier_config_digest(cfg: SystemConfig) -> str:
    """config_digest as kits before 2026-12-07 computed it, the scoring batch size included: the
    digest their checkpoints and training stamps hold."""
    return options_digest(_digested_options(cfg))


def fits_config(digest: str | None, cfg: SystemConfig) -> bool:
    """Whether a checkpoint's (or export's) recorded config digest is this config's, in the
    current form or the earlier one (so that an upgrade retrains nothing)."""
    return digest is not None and digest in (config_digest(cfg), earlier_config_digest(cfg))


def content_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_signature(folder: Path) -> dict:
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "newest_mtime_ns": max((p.stat().st_mtime_ns for p in files), default=0)}


def input_listings(cfg: SystemConfig) -> dict[str, str | None]:
    """File listings (core.stamps.listing_digest: names, sizes, times) of what training reads
    outside the prepared data, kept in the checkpoint's meta beside data_digest and compared only
    where a checkpoint holds them, so that checkpoints saved before they existed are not retrained
    by an upgrade:
    - bank_listing, the augmentation bank: noise files are drawn by their place in a sorted list, so
      a renamed one changes training, though it leaves the bank's count, bytes and newest time (in
      data_digest) as they were;
    - ssl_listing, the pretrained checkpoint (`model.ssl_ckpt`, a folder or a file): other weights
      at the same path change what is fine-tuned, though the config reads the same."""
    ssl = cfg.model.get("ssl_ckpt")
    ssl_path = Path(str(ssl)).expanduser() if ssl else None
    # no checkpoint, or a missing one (the model's build says so): nothing to list
    return {"bank_listing": folder_listing(cfg.augment.musan) if cfg.augment.musan else None,
            "ssl_listing": folder_listing(ssl_path) if ssl_path is not None and ssl_path.exists() else None}


# what each listing stands for, in the message that training starts again
LISTING_NAMES = {"bank_listing": "the augmentation bank's files", "ssl_listing": "the SSL checkpoint's files"}


def data_digest(cfg: SystemConfig, data_dir: Path) -> str:
    """What training read besides its config: the prepared train/dev splits (their manifests and
    offsets by content, and the stage-2 stamp that covers the source audio and load options) and
    the augmentation bank. Moving the experiment folder does not change it; new data does."""
    parts = {}
    for split in ("train", "dev"):
        folder = data_dir / split
        stamp = folder / STAMP_NAME
        parts[split] = {"manifest": content_digest(folder / "manifest.tsv"),
                        "offsets": content_digest(folder / "offsets.npy"),
                        "stamp": content_digest(stamp) if stamp.is_file() else None}
    if cfg.augment.musan:
        parts["musan"] = folder_signature(Path(cfg.augment.musan))
    codec_stamp = data_dir / "train" / CODEC_FOLDER / STAMP_NAME
    if cfg.augment.p_codec > 0 and codec_stamp.is_file():
        parts["codec_variants"] = content_digest(codec_stamp)
    return options_digest(parts)


TRAINED_STAMP_VERSION = 1


def training_fingerprint(cfg: SystemConfig, inputs: str, listings: dict[str, str | None]) -> dict:
    """Everything a finished training must still match to stand: its config, and the data_digest and
    input_listings of what it read (computed once by the caller, which compares them anyway)."""
    return {"config_digest": config_digest(cfg), "data_digest": inputs, **listings}


def write_trained_stamp(exp_dir: Path, fingerprint: dict, epochs: int, best_f1: float, best_epoch: int) -> None:
    """The stamp of a complete training in `exp_dir`: every file of its checkpoints, its log and its
    resolved config, at their sizes now, under `fingerprint`."""
    outputs = [p.relative_to(exp_dir).as_posix() for p in sorted((exp_dir / "ckpt").rglob("*")) if p.is_file()]
    outputs += [name for name in ("train_log.csv", "config.yaml") if (exp_dir / name).is_file()]
    write_stamp(exp_dir, {"fingerprint": fingerprint, "epochs": int(epochs), "best_f1": float(best_f1),
                          "best_epoch": int(best_epoch), "version": TRAINED_STAMP_VERSION}, outputs=outputs)


def trained_message(exp_dir: Path, epochs: int, best_f1: float, best_epoch: int) -> str:
    return (f"[train] {exp_dir}: already trained for {epochs} epochs (best dev F1 {best_f1:.4f} at epoch "
            f"{best_epoch}); nothing to do")


def drop_trained_stamp(exp_dir: Path) -> None:
    """Before anything changes the checkpoints: a training under way is never taken as complete."""
    (exp_dir / STAMP_NAME).unlink(missing_ok=True)


def finished_training(cfg: SystemConfig, data_dir: Path, exp_dir: Path) -> dict | None:
    """The stamp's summary (epochs, best_f1, best_epoch) when `exp_dir` holds a training completed
    with this config on this data, with every file it listed still there at its size; else None."""
    saved = read_stamp(exp_dir)
    if not saved or saved.get("version") != TRAINED_STAMP_VERSION:
        return None
    try:
        fingerprint = training_fingerprint(cfg, data_digest(cfg, data_dir), input_listings(cfg))
    except OSError:  # data not prepared, or unreadable: the engine's check names the problem
        return None
    earlier = dict(fingerprint, config_digest=earlier_config_digest(cfg))
    if saved.get("fingerprint") not in (fingerprint, earlier) or not stage_is_current(exp_dir, saved):
        return None
    return saved


def _flat(options: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in options.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(trained: SystemConfig, cfg: SystemConfig) -> list[str]:
    """The settings in which `cfg` differs from the config a system was `trained` with, as
    `key: trained → now`, leaving out those the digest leaves out (they need no training)."""
    before, after = _flat(_training_options(trained)), _flat(_training_options(cfg))
    missing = object()
    return [f"{key}: {before.get(key, '(unset)')} → {after.get(key, '(unset)')}"
            for key in sorted(set(before) | set(after)) if before.get(key, missing) != after.get(key, missing)]


def why_not_finished(cfg: SystemConfig, config_path: str, data_dir: Path, exp_dir: Path) -> str:
    """Why `exp_dir` holds no finished training of `cfg` (read from `config_path`) on `data_dir`,
    for a stage that would use its checkpoints as they are: one line, naming what differs."""
    saved = read_stamp(exp_dir)
    retrain = "run the train stage (3), which trains it again, or undo the change"
    if not saved or saved.get("version") != TRAINED_STAMP_VERSION:
        return (f"{exp_dir}: no finished training (no training stamp {STAMP_NAME}); run the train stage (3) "
                "first (over checkpoints that are complete it only writes the stamp)")
    trained_yaml = exp_dir / "config.yaml"
    if trained_yaml.is_file():
        changes = config_changes(load_config(trained_yaml, check_model=False), cfg)
        if changes:
            shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
            return f"{config_path}: {exp_dir} was trained with other settings ({shown}); {retrain}"
    if not stage_is_current(exp_dir, saved):
        return f"{exp_dir}: its checkpoints or log changed since the training finished; run the train stage (3)"
    return f"{exp_dir}: trained on other data or another augmentation bank than {data_dir} gives now; {retrain}"


def save_run_settings(cfg: SystemConfig, exp_dir: Path, done: dict) -> bool:
    """A finished training that `cfg` fits but whose saved config differs from it (only in what
    the digest leaves out: the loader's settings and scoring's batch size) gets `cfg` as its
    `config.yaml`, which the score stage reads, and its stamp written again around it. True when
    it was so."""
    if not cfg.save(exp_dir / "config.yaml"):
        return False
    write_trained_stamp(exp_dir, done["fingerprint"], done["epochs"], done["best_f1"], done["best_epoch"])
    return True
