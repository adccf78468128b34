#!/usr/bin/env bash
# The evaluation runs of docs/benchmarks.md §5: the paper's annotation-stream protocol through `autoannotator
# evaluate`, on the labelled sets in $EVAL_DATA (not in the repository). Each run writes
# docs/eval/<run>/results.{json,md} and plots.
#
#   bench/eval_runs.sh [tse-vote|tse-audit|tse-paper|financial-vote|financial-paper|offensive-vote|offensive-audit|
#                       tweeteval-vote|llm ...]      (default: the four *-vote runs)
#
# Settings are the service's own, set here as a deployment would.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${EVAL_DATA:?set EVAL_DATA to the folder of the labelled evaluation sets (not in the repository)}
S=$D/semeval2017-task4a/Subtask_A__downloaded__twitter
SOURCE=("$S-2013train-A.tsv" "$S-2013dev-A.tsv" "$S-2013test-A.tsv" "$S-2014sarcasm-A.tsv" "$S-2014test-A.tsv"
        "$S-2015train-A.tsv" "$S-2015test-A.tsv" "$S-2016train-A.tsv" "$S-2016dev-A.tsv" "$S-2016devtest-A.tsv"
        "$S-2016test-A.tsv")
SOURCE_TEST=$D/semeval2017-task4a/Subtask_A__gold__SemEval2017-task4-test.subtask-A.english.txt
CACHE=${EVAL_CACHE:-/tmp/autoannotator-eval-cache}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# The gate compares against a holdout of reviewed (hard) items, ~100 after the first stage: 0.02 rejects for noise.
export GATE_MARGIN=${GATE_MARGIN:-0.05}
AUDIT=${AUDIT:-0.03}
# The *-paper runs route as the service does out of the box (the specialists disagreeing), not at confidence 0.9.
PAPER=(--rule disagreement_or_confidence --threshold 0)
# 20,000 SemEval rows: the replay size.
EVAL=(.venv/bin/autoannotator evaluate --cache-dir "$CACHE" --rule confidence --source-rows "${SOURCE_ROWS:-20000}"
      --specialists samples/specialists-finetuned.json ${KEEP_WORK:+--keep-work})
ROUTER=(--threshold "${THRESHOLD:-0.9}" --max-review-share "${MAX_SHARE:-0.25}")
FIN_MAP='{"negative": "Bearish", "positive": "Bullish", "neutral": "Neutral", "0": "Bearish", "1": "Bullish", "2": "Neutral"}'
SENT_MAP='{"0": "negative", "1": "neutral", "2": "positive"}'

run() {
  local audit=0 extra=()
  case "$1" in *-audit) audit=$AUDIT ;; *-paper) extra=("${PAPER[@]}") ;; esac
  local common=("${EVAL[@]}" "${ROUTER[@]}" "${extra[@]}" --name "$1" --out "docs/eval/$1")
  case "$1" in
    tse-*)  # the paper's MTEB-Sentiment: a 7:3 split of tweet-sentiment-extraction's train file
      REVIEW_AUDIT_SHARE=$audit "${common[@]}" \
        --source "${SOURCE[@]}" --source-text-col 2 --source-label-col 1 --source-test "$SOURCE_TEST" \
        --stream "$D/tweet-sentiment-extraction/initial__train.csv" --text-col text --label-col sentiment \
        --test-split 0.3 --test-rows 3000 --labels negative,neutral,positive --stage-size 2000 ;;
    financial-*)  # the paper's JPP-Sentiment: train as stream, valid as test
      REVIEW_AUDIT_SHARE=$audit "${common[@]}" \
        --source "${SOURCE[@]}" --source-text-col 2 --source-label-col 1 --source-test "$SOURCE_TEST" \
        --stream "$D/twitter-financial-news-sentiment/sent_train.csv" \
        --test "$D/twitter-financial-news-sentiment/sent_valid.csv" \
        --label-map "$FIN_MAP" --labels Bearish,Bullish,Neutral --test-rows 3000 --stage-size 1000 ;;
    tweeteval-*)  # in the source's own domain: TweetEval sentiment test (= SemEval-2017 gold), 7:3 split
      REVIEW_AUDIT_SHARE=$audit "${common[@]}" --source "${SOURCE[@]}" --source-text-col 2 --source-label-col 1 \
        --stream "$D/tweeteval-sentiment/sentiment__test_text.txt" --label-map "$SENT_MAP" \
        --test-split 0.3 --test-rows 3000 --labels negative,neutral,positive --stage-size 2000 ;;
    offensive-*)  # toxicity: cold start from TweetEval offensive val, stream its train, test its test
      REVIEW_AUDIT_SHARE=$audit "${common[@]}" --source "$D/tweeteval-offensive/offensive__val_text.txt" \
        --stream "$D/tweeteval-offensive/offensive__train_text.txt" \
        --test "$D/tweeteval-offensive/offensive__test_text.txt" \
        --label-map '{"0": "not-offensive", "1": "offensive"}' --labels not-offensive,offensive --stage-size 1000 ;;
    llm)  # a real (small, poor) LLM reviewer: SmolLM2-135M on llama-cpp-python; see bench/llm_cost.py
      .venv/bin/python bench/eval_llm.py ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

for name in "${@:-tse-vote financial-vote offensive-vote tweeteval-vote}"; do
  for n in $name; do run "$n"; done
done
