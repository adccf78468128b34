#!/usr/bin/env bash
# The LLM at known quality: a noisy oracle on 127.0.0.1 (right with probability P, errors leaning to one class)
# reviews hard samples through the service's own routing, trust ledger, audit and budgets; beside it the plain vote
# and the same router with people reviewing. Streams of 3,000 items in stages of 500. Writes
# docs/eval/trust/<stream>-<reviewer>/results.{json,md}; bench/trust_summary.py tabulates them.
#
#   bench/trust_runs.sh [offensive|financial|tse ...]   (default: offensive financial)
#   TARGET=0.85 bench/trust_runs.sh financial           # + TARGET_ACCURACY with a 3 % random audit, P = 0.85 only
#   ORACLE=0 PS="0.85 0.95" bench/trust_runs.sh financial  # only those LLM runs
set -euo pipefail
cd "$(dirname "$0")/.."
D=${EVAL_DATA:?set EVAL_DATA to the folder of the labelled evaluation sets (not in the repository)}
CACHE=${EVAL_CACHE:-/tmp/autoannotator-eval-cache}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# What a team bringing an LLM sets: people see at most 5 % of the tasks, the LLM at most 20 %.
export HUMAN_MAX_SHARE=${HUMAN_MAX_SHARE:-0.05} REVIEW_MAX_SHARE=${REVIEW_MAX_SHARE:-0.2}
PS=(${PS:-0.55 0.7 0.85 0.95})
S=$D/semeval2017-task4a/Subtask_A__downloaded__twitter
FIN_MAP='{"negative": "Bearish", "positive": "Bullish", "neutral": "Neutral", "0": "Bearish", "1": "Bullish", "2": "Neutral"}'

run() {  # stream reviewer
  local args=()
  case "$1" in
    offensive)
      args=(--source $D/tweeteval-offensive/offensive__val_text.txt --stream $D/tweeteval-offensive/offensive__train_text.txt
            --test $D/tweeteval-offensive/offensive__test_text.txt --label-map '{"0": "not-offensive", "1": "offensive"}'
            --labels not-offensive,offensive) ;;
    financial)
      args=(--source "$S-2013train-A.tsv" "$S-2013dev-A.tsv" "$S-2013test-A.tsv" "$S-2014test-A.tsv" "$S-2015train-A.tsv"
            "$S-2016train-A.tsv" --source-text-col 2 --source-label-col 1
            --stream $D/twitter-financial-news-sentiment/sent_train.csv --test $D/twitter-financial-news-sentiment/sent_valid.csv
            --test-rows 2000 --label-map "$FIN_MAP" --labels Bearish,Bullish,Neutral --source-rows 20000) ;;
    tse)
      args=(--source "$S-2013train-A.tsv" "$S-2013dev-A.tsv" "$S-2013test-A.tsv" "$S-2014test-A.tsv" "$S-2015train-A.tsv"
            "$S-2016train-A.tsv" --source-text-col 2 --source-label-col 1
            --stream $D/tweet-sentiment-extraction/initial__train.csv --text-col text --label-col sentiment
            --test-split 0.3 --test-rows 2000 --labels negative,neutral,positive --source-rows 20000) ;;
    *) echo "unknown stream $1" >&2; exit 2 ;;
  esac
  local name="$1-${2//:/-}${TARGET:+-target}"
  .venv/bin/autoannotator evaluate --cache-dir "$CACHE" --reviewer "$2" --human-fallback --name "$name" \
    --out "docs/eval/trust/$name" --stream-rows 3000 --stage-size 500 --no-progress "${args[@]}" >/dev/null
  echo "$name done"
}

if [ -n "${TARGET:-}" ]; then
  export TARGET_ACCURACY=$TARGET REVIEW_AUDIT_SHARE=${REVIEW_AUDIT_SHARE:-0.03}
  for stream in "${@:-offensive financial}"; do run "$stream" noisy-llm:0.85; done
  exit 0
fi
for stream in "${@:-offensive financial}"; do
  [ "${ORACLE:-1}" = 0 ] || run "$stream" oracle
  for p in "${PS[@]}"; do run "$stream" "noisy-llm:$p"; done
done
