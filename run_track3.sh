#!/usr/bin/env bash
# ADD 2023 Track 3 (deepfake algorithm recognition) recipe. Every stage is one Python call that
# reads and writes files; a stage whose outputs exist with unchanged options is skipped.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$root"

stage=0
stop_stage=100
data_root=""
musan=""
exp=exp
systems=lfcc_resnet18,rawnet2
test_key=""
conditions=""
demo_dir=data/demo
demo_scale=1.0
demo_test_scale=""
seed=0
seeds=""
nj=2
ngpu=1
conf=""
conf_dir=""
submission_dir=submission
submission_name=track3
fusion_config=fusion/conf/fusion.yaml
skip_setup=false
deterministic=false
hubert_ckpt=""
test_dir=""
systems_given=false
test_labels=""
test_name=""
wav2vec2_ckpt=""

usage() {
  cat <<'EOF'
Usage: bash run_track3.sh [options]

With no options: set up, build the embedded demo corpus, and run every stage on it.

Stages (inputs -> outputs):
  0 setup     requirements.txt, Debian packages -> .venv/
  1 demo      Debian/PyPI packages -> data/demo/  (only without --data_root)
  2 prepare   data root (or data/demo) -> EXP/data/{train,dev,test}/ manifest.tsv, audio.f32, report.txt
              and train/codec_variants/ (codec round trips for augmentation); with a MUSAN folder
              dev is an augmented copy of the clean dev, kept as EXP/data/dev_clean
  3 train     EXP/data -> EXP/<system>/ckpt/ (SpeechBrain checkpoints: latest and best by dev F1), train_log.csv
  4 score     EXP/<system>/ckpt (best) -> EXP/<system>/scores/{train,dev,test}/ logits, embeddings, windows
  5 fuse      EXP/<system>/scores -> EXP/fusion/<method>/ (single systems, OpenMax, label, score and
              feature-level fusion; tau chosen on dev), summary.json
  6 submit    EXP/fusion/<submit_method>/test_pred.txt -> SUBMISSION_DIR/NAME.txt + .zip (validated)
  7 evaluate  EXP/fusion + answer key -> EXP/report/ README.md, results.json, figures; scores printed

Options:
  --stage N          first stage to run (default 0)
  --stop_stage N     last stage to run (default: all)
  --data_root DIR    ADD 2023 Track 3 data (ADD2023_Track3_{train,dev,test}/ or {train,dev,test}/);
                     without it the demo corpus is built and used
  --musan DIR        MUSAN folder (noise/ music/ speech/) for training augmentation
                     (default: the demo bank with the demo corpus, none with --data_root)
  --exp DIR          experiment folder (default exp)
  --systems LIST     comma-separated systems to train, score and fuse (default lfcc_resnet18,rawnet2)
  --conf NAME        config name: systems/<system>/conf/NAME.yaml (default: demo with the demo
                     corpus, paper with --data_root)
  --conf_dir DIR     take <system>.yaml from DIR instead (your own configs)
  --fusion_config F  fusion and threshold settings (default fusion/conf/fusion.yaml)
  --submission_dir D where stage 6 writes (default submission)
  --submission_name N  submission file name (default track3)
  --hubert_ckpt DIR  local HuBERT checkpoint (e.g. chinese-hubert-large) for hubert_ft
  --wav2vec2_ckpt DIR local wav2vec2 checkpoint (e.g. wav2vec2-xls-r-300m) for wav2vec2_ft, w2v_asdg
  --test_key FILE    answer key for the test split (the demo corpus provides its own)
  --conditions FILE  test conditions ("<id> <condition>" lines or a TSV with utt_id and condition
                     columns) for the report's per-condition table (the demo's meta.tsv is found
                     by itself)

A new test set on a trained experiment (nothing is retrained; EXP is left as it is):
  --test_dir DIR     audio folder of the new test set; with --exp EXP, stages 2-7 write only to
                     EXP/testsets/NAME/ (data/test, <system>/scores/test, fusion, submission, report;
                     the submission goes to --submission_dir instead when you give one)
  --test_labels FILE its answer key (optional): the report then scores it
  --test_name NAME   the folder name under EXP/testsets (default: the basename of --test_dir; of
                     the folder above it when that is wav)
  --seeds LIST       (an experiment of --seeds) every seed's run scores it in
                     EXP/seed_N/testsets/NAME, the seeds' ensemble fuses it, and EXP/testsets/NAME
                     gets the data (prepared once), the mean ± std and the ensemble's submission

Runs, seeds and machines:
  --demo_scale X     size multiplier for the demo corpus (default 1.0)
  --demo_test_scale X  size multiplier for the demo test split alone (>= demo_scale): e.g. 4.2 gives
                     1,008 test utterances for ranking methods, train and dev unchanged
  --seed N           random seed of the demo corpus and of training (default 0)
  --seeds LIST       train, score, fuse, submit and evaluate once per training seed (e.g. 1,2,3),
                     each in EXP/seed_N; EXP/report gets every method as mean ± std over the seeds;
                     with two or more seeds EXP/ensemble fuses every seed's systems as one ensemble,
                     and SUBMISSION_DIR gets its submission (--seed stays the corpus seed)
  --deterministic    deterministic kernels and one CPU thread in training and scoring (slower;
                     the same bits on another machine with the same libraries and device type)
  --nj N             worker processes for data preparation (default 2)
  --ngpu N           training and scoring processes, one per GPU, through torchrun (default 1);
                     each reads train.batch_size / N items per step, so the global batch is the
                     config's, and scores a contiguous share of each split's windows
  --skip_setup       do not touch Debian packages or .venv (use $PYTHON, else python3 on PATH)
  -h, --help         this text
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --skip_setup|--deterministic|-h|--help) ;;
    --*) [ $# -ge 2 ] || { echo "error: $1 needs a value (see --help)" >&2; exit 2; } ;;
  esac
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop_stage) stop_stage=$2; shift 2 ;;
    --data_root) data_root=$2; shift 2 ;;
    --musan) musan=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --systems) systems=$2; systems_given=true; shift 2 ;;
    --conf) conf=$2; shift 2 ;;
    --conf_dir) conf_dir=$2; shift 2 ;;
    --submission_dir) submission_dir=$2; shift 2 ;;
    --submission_name) submission_name=$2; shift 2 ;;
    --fusion_config) fusion_config=$2; shift 2 ;;
    --test_key) test_key=$2; shift 2 ;;
    --conditions) conditions=$2; shift 2 ;;
    --demo_scale) demo_scale=$2; shift 2 ;;
    --demo_test_scale) demo_test_scale=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    --ngpu) ngpu=$2; shift 2 ;;
    --skip_setup) skip_setup=true; shift ;;
    --deterministic) deterministic=true; shift ;;
    --hubert_ckpt) hubert_ckpt=$2; shift 2 ;;
    --test_dir) test_dir=$2; shift 2 ;;
    --test_labels) test_labels=$2; shift 2 ;;
    --test_name) test_name=$2; shift 2 ;;
    --wav2vec2_ckpt) wav2vec2_ckpt=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$stage" "$stop_stage" "$nj" "$seed" "$ngpu"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "error: '$n' is not a non-negative integer" >&2; exit 2; }
done
[ "$ngpu" -ge 1 ] || { echo "error: --ngpu $ngpu: at least 1" >&2; exit 2; }
[ "$stage" -le "$stop_stage" ] || { echo "error: --stage $stage is after --stop_stage $stop_stage: nothing would run" >&2; exit 2; }
[[ "$systems" =~ ^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$ ]] || { echo "error: --systems '$systems': expected comma-separated system names, e.g. lfcc_resnet18,rawnet2" >&2; exit 2; }
[ "$(tr , '\n' <<< "$systems" | sort | uniq -d)" = "" ] || { echo "error: --systems '$systems': a system is listed twice" >&2; exit 2; }
if [ -n "$seeds" ]; then
  [[ "$seeds" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "error: --seeds '$seeds': expected comma-separated non-negative integers, e.g. 1,2,3" >&2; exit 2; }
  [ "$(tr , '\n' <<< "$seeds" | sort | uniq -d)" = "" ] || { echo "error: --seeds '$seeds': a seed is listed twice" >&2; exit 2; }
fi

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
ngpu_note() { [ "$ngpu" -gt 1 ] && echo ", $ngpu processes (torchrun)"; true; }

# Stages 5-7 of one run in RUN: fuse MEMBERS (comma-separated) with FUSION_CONFIG, write the
# submission to OUT (and to ALSO, when given) and evaluate it on the test split of MANIFEST.
fuse_submit_evaluate() {
  local run=$1 manifest=$2 config=$3 members=$4 out=$5 also=${6:-} folder
  if run_stage 5; then
    log "Stage 5 (fuse): $run/{$members}/scores -> $run/fusion (every method, tau on dev; settings: $config)"
    "$python" -m fusion.run --exp "$run" --systems "$members" --config "$config"
  fi
  if run_stage 6; then
    for folder in "$out" ${also:+"$also"}; do
      log "Stage 6 (submit): $run/fusion (submit_method) -> $folder/$submission_name.{txt,zip}"
      "$python" -m submit.write --fusion "$run/fusion" --config "$config" ${members:+--systems "$members"} \
        --test_manifest "$manifest" --name "$submission_name" --out "$folder"
    done
  fi
  if run_stage 7; then
    log "Stage 7 (evaluate): $run/fusion + ${test_key:-no key} -> $run/report"
    # the submission scored is the one stage 6 made of this fusion, not an earlier one left in OUT
    if [ -n "$test_key" ] && [ -f "$out/$submission_name.txt" ] && [ "$out/$submission_name.txt" -ot "$run/fusion/summary.json" ]; then
      echo "error: $out/$submission_name.txt: older than $run/fusion, so made of another fusion; run stage 6 (submit) first" >&2
      exit 2
    fi
    "$python" -m eval.report --exp "$run" --test_manifest "$manifest" ${test_key:+--key "$test_key"} ${conditions:+--conditions "$conditions"}
    [ -z "$test_key" ] || "$python" eval/score.py "$out/$submission_name.txt" "$test_key"
  fi
}

# Stages 5-7 of the seeds' ensemble in ENSEMBLE: every seed's systems as members (fusion/seed_ensemble.py;
# its --testset NAME, when given, for a new test set); the submission goes to ENSEMBLE/submission
# and to SUBMISSION_DIR.
ensemble_stages() {
  local ensemble=$1 manifest=$2 config=$3 layout=("${@:4}") members=""
  if run_stage 5; then
    log "Stage 5 (fuse): the systems of seeds $seeds as one ensemble in $ensemble"
    members=$("$python" -m fusion.seed_ensemble --exp "$exp" --seeds "$seeds" --systems "$systems" "${layout[@]}")
  fi
  fuse_submit_evaluate "$ensemble" "$manifest" "$config" "$members" "$ensemble/submission" "$submission_dir"
}

# The seeds whose runs EXP holds fused (EXP/seed_N/fusion/summary.json), comma-separated, when EXP
# has no fusion of its own; empty otherwise
seeds_fused_in() {
  [ ! -f "$1/fusion/summary.json" ] || return 0
  (cd "$1" 2>/dev/null && compgen -G "seed_*/fusion/summary.json" | sed 's#^seed_##; s#/.*##' | sort -n | paste -sd, -)
  return 0
}

# Where the run of a single seed (--seeds N) also writes its submission: SUBMISSION_DIR, as the
# ensemble's does with two or more seeds
single_seed_copy() { if [ -n "$seeds" ] && [ "${#seed_list[@]}" = 1 ]; then echo "$submission_dir"; fi; }

if run_stage 0 && ! $skip_setup; then
  log "Stage 0 (setup): requirements.txt at the versions in constraints.txt -> .venv"
  bash data_prep/setup_env.sh
fi
if $skip_setup; then python=${PYTHON:-python3}; else python=$root/.venv/bin/python; fi
[ -x "$python" ] || command -v "$python" >/dev/null || { echo "error: $python not found; run stage 0 first" >&2; exit 2; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ -n "$test_dir" ]; then
  # a new test set on a trained experiment: the systems, their configs and the fusion settings
  # are the experiment's own, read back from it. With --seeds every seed's run scores it, the
  # seeds' ensemble fuses it, and EXP/testsets/NAME holds what they share: the data, prepared
  # once, the summary over the seeds and the submission (the ensemble's, as in training)
  [ -d "$test_dir" ] || { echo "error: --test_dir $test_dir: not a folder" >&2; exit 2; }
  [ -d "$exp" ] || { echo "error: --exp $exp: no such experiment; train it first" >&2; exit 2; }
  test_dir_real=$(cd "$test_dir" && pwd -P)
  # the challenge's layout is NAME/wav: a folder called wav is named by the one above it, so that
  # two test sets given as .../A/wav and .../B/wav do not share EXP/testsets/wav
  if [ -z "$test_name" ]; then
    test_name=$(basename "$test_dir_real")
    [ "$test_name" != wav ] || test_name=$(basename "$(dirname "$test_dir_real")")
  fi
  # the name is one folder under EXP/testsets: anything that leads elsewhere would overwrite EXP's own files
  [[ -n "$test_name" && "$test_name" != */* && "$test_name" != "." && "$test_name" != ".." ]] || {
    echo "error: --test_name '$test_name': must be one folder name, not a path" >&2; exit 2; }
  shared=$exp/testsets/$test_name
  # a name holds one folder's test set: another folder under the same name would replace it unseen
  recorded_dir=$(cat "$shared/test_dir.txt" 2>/dev/null || true)
  if [ -n "$recorded_dir" ] && [ "$recorded_dir" != "$test_dir_real" ]; then
    echo "error: --test_name $test_name: $shared holds the test set of $recorded_dir, not $test_dir_real; give another --test_name (or remove $shared)" >&2
    exit 2
  fi
  test_key=$test_labels
  runs=("$exp")
  if [ -n "$seeds" ]; then
    IFS=, read -r -a seed_list <<< "$seeds"
    runs=()
    for run_seed in "${seed_list[@]}"; do runs+=("$exp/seed_$run_seed"); done
  elif found=$(seeds_fused_in "$exp") && [ -n "$found" ]; then
    echo "error: $exp/fusion/summary.json: missing; $exp holds the runs of --seeds $found: add --seeds $found (or give --exp $exp/seed_N for one of them)" >&2
    exit 2
  fi
  for run in "${runs[@]}"; do
    [ -f "$run/fusion/summary.json" ] || { echo "error: $run/fusion/summary.json: missing; run the recipe on --exp${seeds:+ with --seeds $seeds} first" >&2; exit 2; }
  done
  if [ "${#runs[@]}" -gt 1 ]; then
    [ -f "$exp/ensemble/fusion/config.yaml" ] || { echo "error: $exp/ensemble/fusion/config.yaml: missing; fuse the seeds' ensemble first (run_track3.sh --seeds $seeds --stage 5)" >&2; exit 2; }
  fi
  [ -d "$exp/data/train" ] || { echo "error: $exp/data: missing; a new test set reads the experiment's prepared data (in a seed folder of an older run: ln -s ../data $exp/data)" >&2; exit 2; }
  [ -z "$test_key" ] || [ -f "$test_key" ] || { echo "error: --test_labels $test_key: no such file" >&2; exit 2; }
  # the key is read and matched with the folder's .wav files now, not after hours of scoring in stage 7
  [ -z "$test_key" ] || "$python" -c 'import sys; from core.errors import run_cli; from data_prep.prepare import check_test_key
run_cli(lambda: check_test_key(sys.argv[1], sys.argv[2]))' "$test_key" "$test_dir" || exit 2
  $systems_given || systems=$("$python" -c "import json, sys; print(','.join(json.load(open(sys.argv[1]))['systems']))" \
    "${runs[0]}/fusion/summary.json")
  IFS=, read -r -a system_list <<< "$systems"
  # a system the experiment did not train is refused before the test set is prepared
  for run in "${runs[@]}"; do
    for sys in "${system_list[@]}"; do
      [ -f "$run/$sys/config.yaml" ] || { echo "error: --systems: $run/$sys/config.yaml: missing; systems trained there: $(cd "$run" && ls -d */ckpt 2>/dev/null | sed 's,/ckpt,,' | paste -sd, -)" >&2; exit 2; }
    done
  done
  [ "$submission_dir" != submission ] || submission_dir=$shared/submission
  if run_stage 2; then
    log "Stage 2 (prepare): $test_dir -> $shared/data/test"
    "$python" -m data_prep.prepare --split test --wav_dir "$test_dir" --out "$shared/data" --nj "$nj"
    printf '%s\n' "$test_dir_real" > "$shared/.test_dir.txt.tmp" && mv "$shared/.test_dir.txt.tmp" "$shared/test_dir.txt"
  fi
  for run in "${runs[@]}"; do
    testset=$run/testsets/$test_name
    # with --seeds each seed's run keeps its own submission; SUBMISSION_DIR gets the ensemble's below
    if [ -n "$seeds" ]; then run_submission=$testset/submission; else run_submission=$submission_dir; fi
    if run_stage 2; then
      log "Stage 2 (prepare): links to the trained systems in $run$([ -n "$seeds" ] && echo " and to $shared/data") -> $testset"
      "$python" -m submit.new_test_set --exp "$run" --out "$testset" --systems "$systems" \
        ${seeds:+--data_from "$shared"}
    fi
    if run_stage 3; then
      for sys in "${system_list[@]}"; do
        log "Stage 3 (train): $run/$sys/config.yaml (as trained$(ngpu_note)) -> $run/$sys/ckpt"
        "$python" -m systems.train --config "$run/$sys/config.yaml" --data "$exp/data" --exp "$run/$sys" --ngpu "$ngpu"
      done
    fi
    if run_stage 4; then
      for sys in "${system_list[@]}"; do
        log "Stage 4 (score): $run/$sys/ckpt (best by dev F1)$(ngpu_note) -> $testset/$sys/scores/test"
        "$python" -m systems.score --exp "$testset/$sys" --data "$testset/data" --splits test --ngpu "$ngpu"
      done
    fi
    fuse_submit_evaluate "$testset" "$testset/data/test" "$run/fusion/config.yaml" "$systems" "$run_submission" \
      "$(single_seed_copy)"
  done
  if [ "${#runs[@]}" -gt 1 ]; then
    ensemble_stages "$exp/ensemble/testsets/$test_name" "$shared/data/test" "$exp/ensemble/fusion/config.yaml" \
      --testset "$test_name"
  fi
  if [ -n "$seeds" ] && run_stage 7; then
    log "Stage 7 (evaluate): $exp/seed_{$seeds}/testsets/$test_name/report -> $shared/report (mean ± std over seeds)"
    "$python" -m eval.seeds --exp "$exp" --seeds "$seeds" --testset "$test_name"
  fi
  log "done (stages $stage..$stop_stage, new test set $shared)"
  exit 0
fi

# an experiment of --seeds runs holds no systems of its own: a plain run there would train seed-0
# systems beside the seeds' and overwrite the summary over them in EXP/report
if [ -z "$seeds" ] && found=$(seeds_fused_in "$exp") && [ -n "$found" ]; then
  echo "error: --exp $exp holds the runs of --seeds $found: add --seeds $found (or choose another --exp)" >&2
  exit 2
fi

if [ -z "$data_root" ]; then
  corpus=$demo_dir
  [ -n "$musan" ] || musan=$demo_dir/musan_demo
  [ -n "$test_key" ] || test_key=$demo_dir/keys/test_label.txt
  [ -n "$conf" ] || conf=demo
  if run_stage 1; then
    log "Stage 1 (demo): packages -> $demo_dir"
    "$python" -m data_prep.demo_corpus --out "$demo_dir" --scale "$demo_scale" \
      ${demo_test_scale:+--test_scale "$demo_test_scale"} --seed "$seed" --nj "$nj"
  fi
else
  corpus=$data_root
  [ -n "$conf" ] || conf=paper
fi
IFS=, read -r -a system_list <<< "$systems"
config_of() { if [ -n "$conf_dir" ]; then echo "$conf_dir/$1.yaml"; else echo "systems/$1/conf/$conf.yaml"; fi; }
for sys in "${system_list[@]}"; do
  [ -f "$(config_of "$sys")" ] || { echo "error: $(config_of "$sys") not found (system '$sys')" >&2; exit 2; }
done

if run_stage 2; then
  log "Stage 2 (prepare): $corpus -> $exp/data/{train,dev,test}"
  # dev becomes an augmented copy (same training bank, fixed seed) and the clean one dev_clean
  "$python" -m data_prep.prepare --data_root "$corpus" --out "$exp/data" --nj "$nj" ${musan:+--augment_dev "$musan"}
fi

# SYS's training in the run of RUN_SEED in RUN_EXP, as stage 3 runs it; extra arguments go to systems.train
train_system() {
  local sys=$1 ckpt_override=()
  shift
  case "$sys" in
    hubert_ft) [ -z "$hubert_ckpt" ] || ckpt_override=(model.ssl_ckpt="$hubert_ckpt") ;;
    wav2vec2_ft|w2v_asdg) [ -z "$wav2vec2_ckpt" ] || ckpt_override=(model.ssl_ckpt="$wav2vec2_ckpt") ;;
  esac
  "$python" -m systems.train --config "$(config_of "$sys")" --data "$exp/data" --exp "$run_exp/$sys" \
    --ngpu "$ngpu" ${musan:+--musan "$musan"} "$@" \
    --set train.seed="$run_seed" train.deterministic="$deterministic" ${ckpt_override[@]+"${ckpt_override[@]}"}
}

# Stages 3-7 once per training seed: with --seeds, each seed is a whole experiment in EXP/seed_N on
# the one prepared data set, and stage 7 ends with the mean ± std over the seeds in EXP/report.
if [ -n "$seeds" ]; then IFS=, read -r -a seed_list <<< "$seeds"; else seed_list=("$seed"); fi
for run_seed in "${seed_list[@]}"; do
  if [ -n "$seeds" ]; then run_exp=$exp/seed_$run_seed; run_submission=$run_exp/submission
  else run_exp=$exp; run_submission=$submission_dir; fi
  if [ -n "$seeds" ] && [ -d "$exp/data" ]; then
    # EXP/seed_N/data links EXP/data, so that a seed folder is a trained experiment of its own
    # (submit.predict --exp, a new test set) like EXP/ensemble
    "$python" -c 'import sys; from pathlib import Path; from core.errors import run_cli; from core.links import link_parts
run_cli(lambda: link_parts(Path(sys.argv[1]), Path(sys.argv[2]), ("data",), "prepare the data first (stage 2)",
                           "move it away: a seed folder reads the prepared data of its experiment"))' "$exp" "$run_exp"
  fi

  if run_stage 3; then
    for sys in "${system_list[@]}"; do
      log "Stage 3 (train): $(config_of "$sys"), $exp/data, seed $run_seed$(ngpu_note) -> $run_exp/$sys/ckpt"
      train_system "$sys"
    done
  fi

  if run_stage 4; then
    for sys in "${system_list[@]}"; do
      # without stage 3, a system YAML edited since training would go unread: its training is
      # checked against it (and its run settings, such as the scoring batch size, taken from it)
      run_stage 3 || train_system "$sys" --trained_only
      log "Stage 4 (score): $run_exp/$sys/ckpt (best by dev F1)$(ngpu_note) -> $run_exp/$sys/scores/{train,dev,test}"
      "$python" -m systems.score --exp "$run_exp/$sys" --data "$exp/data" --ngpu "$ngpu"
    done
  fi

  fuse_submit_evaluate "$run_exp" "$exp/data/test" "$fusion_config" "$systems" "$run_submission" "$(single_seed_copy)"
done

# With two or more seeds, every seed's systems are also fused as one ensemble in EXP/ensemble (links
# to the seed folders, no retraining), and its submission is the one in the submission folder.
if [ "${#seed_list[@]}" -gt 1 ]; then
  ensemble_stages "$exp/ensemble" "$exp/data/test" "$fusion_config"
fi

if [ -n "$seeds" ] && run_stage 7; then
  log "Stage 7 (evaluate): $exp/seed_{$seeds}/report -> $exp/report (mean ± std over seeds)"
  "$python" -m eval.seeds --exp "$exp" --seeds "$seeds"
fi

log "done (stages $stage..$stop_stage)"
