#!/usr/bin/env bash
# The evaluation runs quoted in docs/benchmarks.md §5: the paper's annotation-stream protocol on the data in
# ../shared/data, through `autoannotator evaluate`. Each run writes docs/eval/<name>/results.{json,md} and plots.
#
#   bench/eval_runs.sh [tse|tse-hw3|tse-ft|tse-gate|tse-gate-cut|tse-cal|tse-vote|tse-audit|tse-split|tse-fresh|tse-paper|financial|financial-ft|financial-ft-keep|financial-gate|financial-gate-cut|financial-cal|financial-vote|financial-audit|financial-split|financial-fresh|financial-paper|tweeteval|tweeteval-vote|tweeteval-audit|offensive|offensive-cal|offensive-vote|offensive-audit|offensive-fresh|financial-sweep|llm ...]
#   (default: the four oracle runs)
#
# Knobs are the service's own settings (HUMAN_WEIGHT, HOLDOUT_EVERY, ...), set here as a deployment would.
set -euo pipefail
cd "$(dirname "$0")/.."
D=../shared/data
S=$D/semeval2017-task4a/Subtask_A__downloaded__twitter
SOURCE=("$S-2013train-A.tsv" "$S-2013dev-A.tsv" "$S-2013test-A.tsv" "$S-2014sarcasm-A.tsv" "$S-2014test-A.tsv"
        "$S-2015train-A.tsv" "$S-2015test-A.tsv" "$S-2016train-A.tsv" "$S-2016dev-A.tsv" "$S-2016devtest-A.tsv"
        "$S-2016test-A.tsv")
SOURCE_TEST=$D/semeval2017-task4a/Subtask_A__gold__SemEval2017-task4-test.subtask-A.english.txt
CACHE=${EVAL_CACHE:-/tmp/autoannotator-eval-cache}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export HUMAN_WEIGHT=${HUMAN_WEIGHT:-10}
# The gate compares against a holdout of reviewed (hard) items, ~100 after the first stage: 0.02 rejects for noise.
export GATE_MARGIN=${GATE_MARGIN:-0.05}
# Runs quoted from before the domain gate existed keep it off, so that they reproduce; the *-gate runs use the
# service's default (DOMAIN_GATE=hard).
export DOMAIN_GATE=${DOMAIN_GATE:-off}
# The cutoff the *-gate runs were quoted at (the service's default was 0.5 then); the *-gate-cut runs use 0.7, the
# default since.
export DOMAIN_GATE_CUTOFF=${DOMAIN_GATE_CUTOFF:-0.5}
# Runs quoted from before the temperature was fitted on the held-out corrections keep it on the replayed rows; the
# *-cal runs use the service's default (CALIBRATE_ON=project).
export CALIBRATE_ON=${CALIBRATE_ON:-replay}
# Runs quoted from before the voting weights were fitted keep the recipe's (equal) weights; the *-vote runs use the
# service's default (VOTE_WEIGHTS=fitted).
export VOTE_WEIGHTS=${VOTE_WEIGHTS:-recipe}
# Runs quoted from before the audit existed review none; the *-audit runs spend AUDIT of each stage (inside the same
# 25%) on a random spot check that the temperature is fitted on (REVIEW_AUDIT_SHARE).
export REVIEW_AUDIT_SHARE=${REVIEW_AUDIT_SHARE:-0}
# Runs quoted from before the split temperature keep one for all tasks; the *-split runs fit one where the specialists
# agree and one where they do not (CALIBRATE_SPLIT=agreement).
export CALIBRATE_SPLIT=${CALIBRATE_SPLIT:-off}
# Runs quoted from before FINETUNE_ROWS retrain the fine-tuned member on every correction at every stage; the *-fresh
# runs on the new ones first, the rest of its 6,000 rows a random rehearsal (FINETUNE_ROWS=new).
export FINETUNE_ROWS=${FINETUNE_ROWS:-all}
AUDIT=${AUDIT:-0.03}
# The *-paper runs route as the service does out of the box (REVIEW_RULE=disagreement_or_confidence at
# REVIEW_CONFIDENCE_THRESHOLD 0: the paper's hard samples, the specialists disagreeing), not at the 0.9 threshold;
# the later --rule/--threshold win over the ones every run gets.
PAPER=(--rule disagreement_or_confidence --threshold 0)
# 20,000 SemEval rows: the replay size, and what the data README's simulation cold-started from.
EVAL=(.venv/bin/autoannotator evaluate --cache-dir "$CACHE" --rule confidence --source-rows "${SOURCE_ROWS:-20000}"
      ${KEEP_WORK:+--keep-work})  # KEEP_WORK=1 keeps every stage's bundles and database in <out>/work
ROUTER=(--threshold "${THRESHOLD:-0.9}" --max-review-share "${MAX_SHARE:-0.25}")
# The *-ft runs add a fourth specialist (samples/specialists-finetuned.json): MiniLM fine-tuned end to end (hf,
# mode full), bf16 on the CPU, at most 6,000 rows a fit (the corrections first, then replay), from the served weights.
FT=samples/specialists-finetuned.json
FIN_MAP='{"negative": "Bearish", "positive": "Bullish", "neutral": "Neutral", "0": "Bearish", "1": "Bullish", "2": "Neutral"}'

run() {
  case "$1" in
    tse|tse-hw3|tse-ft|tse-gate|tse-gate-cut|tse-cal|tse-vote|tse-audit|tse-split|tse-fresh|tse-paper)  # the paper's MTEB-Sentiment: a 7:3 split of tweet-sentiment-extraction's train file
      # tse-hw3: the service's default HUMAN_WEIGHT 3 instead of 10 (levers_sim: less forgetting, more accuracy here)
      local out=docs/eval/tse name=tweet-sentiment-extraction hw=$HUMAN_WEIGHT extra=() gate=$DOMAIN_GATE cutoff=
      local cal=$CALIBRATE_ON vote=$VOTE_WEIGHTS audit=$REVIEW_AUDIT_SHARE split=$CALIBRATE_SPLIT rows=$FINETUNE_ROWS
      if [ "$1" = tse-hw3 ]; then hw=3 out=docs/eval/tse-hw3 name="tweet-sentiment-extraction, HUMAN_WEIGHT 3"; fi
      if [ "$1" = tse-ft ]; then
        hw=3 out=docs/eval/tse-ft name="tweet-sentiment-extraction, HUMAN_WEIGHT 3, fine-tuned MiniLM"
        extra=(--specialists "$FT")
      fi
      if [ "$1" = tse-gate ]; then
        hw=3 out=docs/eval/tse-gate name="tweet-sentiment-extraction, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate"
        extra=(--specialists "$FT") gate=hard
      fi
      if [ "$1" = tse-gate-cut ]; then  # the project's models answer only where P(project) >= 0.7
        hw=3 out=docs/eval/tse-gate-cut extra=(--specialists "$FT") gate=hard cutoff=0.7
        name="tweet-sentiment-extraction, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7"
      fi
      if [ "$1" = tse-cal ]; then  # ... and the temperature fitted on the held-out corrections
        hw=3 out=docs/eval/tse-cal extra=(--specialists "$FT") gate=hard cutoff=0.7 cal=project
        name="tweet-sentiment-extraction, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project"
      fi
      if [ "$1" = tse-vote ]; then  # ... and the voting weights fitted with the temperature
        hw=3 out=docs/eval/tse-vote extra=(--specialists "$FT") gate=hard cutoff=0.7 cal=project vote=fitted
        name="tweet-sentiment-extraction, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project, fitted vote"
      fi
      if [ "$1" = tse-audit ]; then  # ... and the temperature fitted on a random audit instead of the hard holdout
        hw=3 out=docs/eval/tse-audit extra=(--specialists "$FT") gate=hard cutoff=0.7 cal=project vote=fitted audit=$AUDIT
        name="tweet-sentiment-extraction, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, fitted vote, audit $AUDIT"
      fi
      if [ "$1" = tse-split ]; then  # tse-vote with a temperature for where the specialists agree, one for the rest
        hw=3 out=docs/eval/tse-split extra=(--specialists "$FT") gate=hard cutoff=0.7 cal=project vote=fitted split=agreement
        name="tweet-sentiment-extraction, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, fitted vote, split temperature"
      fi
      if [ "$1" = tse-fresh ]; then  # tse-vote with the fine-tuned member trained on each correction once, not every stage
        hw=3 out=docs/eval/tse-fresh extra=(--specialists "$FT") gate=hard cutoff=0.7 cal=project vote=fitted rows=new
        name="tweet-sentiment-extraction, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project, fitted vote, new rows first"
      fi
      if [ "$1" = tse-paper ]; then  # tse-vote routed by the service's default rule
        hw=3 out=docs/eval/tse-paper extra=(--specialists "$FT" "${PAPER[@]}") gate=hard cutoff=0.7 cal=project vote=fitted
        name="tweet-sentiment-extraction, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project, fitted vote, the paper's rule"
      fi
      FINETUNE_ROWS=$rows CALIBRATE_SPLIT=$split REVIEW_AUDIT_SHARE=$audit VOTE_WEIGHTS=$vote CALIBRATE_ON=$cal DOMAIN_GATE=$gate DOMAIN_GATE_CUTOFF=${cutoff:-$DOMAIN_GATE_CUTOFF} HUMAN_WEIGHT=$hw "${EVAL[@]}" "${ROUTER[@]}" "${extra[@]}" --name "$name" --out "$out" \
        --source "${SOURCE[@]}" --source-text-col 2 --source-label-col 1 --source-test "$SOURCE_TEST" \
        --stream $D/tweet-sentiment-extraction/initial__train.csv --text-col text --label-col sentiment \
        --test-split 0.3 --test-rows 3000 --labels negative,neutral,positive --stage-size 2000 ;;
    financial|financial-ft|financial-ft-keep|financial-gate|financial-gate-cut|financial-cal|financial-vote|financial-audit|financial-split|financial-fresh|financial-paper)  # the paper's JPP-Sentiment: train as stream, valid as test; names
      # mapped to Bearish/Bullish/Neutral. financial-ft-keep: the forgetting trade-off, HUMAN_WEIGHT 3 and no project
      # specialist (it knows nothing but the project).
      local out=docs/eval/financial name=twitter-financial-news-sentiment extra=() knobs=()
      if [ "$1" = financial-ft ]; then
        out=docs/eval/financial-ft name="twitter-financial-news-sentiment, fine-tuned MiniLM"
        extra=(--specialists "$FT")
      fi
      if [ "$1" = financial-ft-keep ]; then
        out=docs/eval/financial-ft-keep extra=(--specialists "$FT") knobs=(HUMAN_WEIGHT=3 PROJECT_SPECIALIST_MIN=0)
        name="twitter-financial-news-sentiment, fine-tuned MiniLM, HUMAN_WEIGHT 3, no project specialist"
      fi
      if [ "$1" = financial-gate ]; then  # tasks unlike the project's are answered by the cold-start bundle
        out=docs/eval/financial-gate extra=(--specialists "$FT") knobs=(DOMAIN_GATE=hard)
        name="twitter-financial-news-sentiment, fine-tuned MiniLM, domain gate"
      fi
      if [ "$1" = financial-gate-cut ]; then  # ... and only where P(project) >= 0.7 (levers_sim: at_cut)
        out=docs/eval/financial-gate-cut extra=(--specialists "$FT") knobs=(DOMAIN_GATE=hard DOMAIN_GATE_CUTOFF=0.7)
        name="twitter-financial-news-sentiment, fine-tuned MiniLM, domain gate at 0.7"
      fi
      if [ "$1" = financial-cal ]; then  # ... and the temperature fitted on the held-out corrections
        out=docs/eval/financial-cal extra=(--specialists "$FT")
        knobs=(DOMAIN_GATE=hard DOMAIN_GATE_CUTOFF=0.7 CALIBRATE_ON=project)
        name="twitter-financial-news-sentiment, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project"
      fi
      if [ "$1" = financial-vote ]; then  # ... and the voting weights fitted with the temperature
        out=docs/eval/financial-vote extra=(--specialists "$FT")
        knobs=(DOMAIN_GATE=hard DOMAIN_GATE_CUTOFF=0.7 CALIBRATE_ON=project VOTE_WEIGHTS=fitted)
        name="twitter-financial-news-sentiment, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project, fitted vote"
      fi
      if [ "$1" = financial-audit ]; then  # ... and the temperature fitted on a random audit
        out=docs/eval/financial-audit extra=(--specialists "$FT")
        knobs=(DOMAIN_GATE=hard DOMAIN_GATE_CUTOFF=0.7 CALIBRATE_ON=project VOTE_WEIGHTS=fitted REVIEW_AUDIT_SHARE=$AUDIT)
        name="twitter-financial-news-sentiment, fine-tuned MiniLM, domain gate at 0.7, fitted vote, audit $AUDIT"
      fi
      if [ "$1" = financial-split ]; then  # financial-vote with the split temperature
        out=docs/eval/financial-split extra=(--specialists "$FT")
        knobs=(DOMAIN_GATE=hard DOMAIN_GATE_CUTOFF=0.7 CALIBRATE_ON=project VOTE_WEIGHTS=fitted CALIBRATE_SPLIT=agreement)
        name="twitter-financial-news-sentiment, fine-tuned MiniLM, domain gate at 0.7, fitted vote, split temperature"
      fi
      if [ "$1" = financial-fresh ]; then  # financial-vote with the fine-tuned member trained on each correction once
        out=docs/eval/financial-fresh extra=(--specialists "$FT")
        knobs=(DOMAIN_GATE=hard DOMAIN_GATE_CUTOFF=0.7 CALIBRATE_ON=project VOTE_WEIGHTS=fitted FINETUNE_ROWS=new)
        name="twitter-financial-news-sentiment, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project, fitted vote, new rows first"
      fi
      if [ "$1" = financial-paper ]; then  # financial-vote routed by the service's default rule
        out=docs/eval/financial-paper extra=(--specialists "$FT" "${PAPER[@]}")
        knobs=(DOMAIN_GATE=hard DOMAIN_GATE_CUTOFF=0.7 CALIBRATE_ON=project VOTE_WEIGHTS=fitted)
        name="twitter-financial-news-sentiment, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project, fitted vote, the paper's rule"
      fi
      env "${knobs[@]}" "${EVAL[@]}" "${ROUTER[@]}" "${extra[@]}" --name "$name" --out "$out" \
        --source "${SOURCE[@]}" --source-text-col 2 --source-label-col 1 --source-test "$SOURCE_TEST" \
        --stream $D/twitter-financial-news-sentiment/sent_train.csv --test $D/twitter-financial-news-sentiment/sent_valid.csv \
        --label-map "$FIN_MAP" --labels Bearish,Bullish,Neutral --test-rows 3000 --stage-size 1000 \
        ${SWEEP:+--sweep "$SWEEP"} ;;
    tweeteval)  # in-domain stream: TweetEval sentiment test (= SemEval-2017 gold), 7:3 split
      "${EVAL[@]}" "${ROUTER[@]}" --name tweeteval-sentiment --out docs/eval/tweeteval \
        --source "${SOURCE[@]}" --source-text-col 2 --source-label-col 1 \
        --stream $D/tweeteval-sentiment/sentiment__test_text.txt --label-map '{"0": "negative", "1": "neutral", "2": "positive"}' \
        --test-split 0.3 --test-rows 3000 --labels negative,neutral,positive --stage-size 2000 ;;
    tweeteval-vote|tweeteval-audit)  # the same with the service's defaults of now and the fine-tuned member, as tse-vote
      local out=docs/eval/tweeteval-vote audit=0 name="tweeteval-sentiment, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project, fitted vote"
      if [ "$1" = tweeteval-audit ]; then
        out=docs/eval/tweeteval-audit audit=$AUDIT
        name="tweeteval-sentiment, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, fitted vote, audit $AUDIT"
      fi
      REVIEW_AUDIT_SHARE=$audit VOTE_WEIGHTS=fitted CALIBRATE_ON=project DOMAIN_GATE=hard DOMAIN_GATE_CUTOFF=0.7 HUMAN_WEIGHT=3 \
        "${EVAL[@]}" "${ROUTER[@]}" --specialists "$FT" --out "$out" --name "$name" \
        --source "${SOURCE[@]}" --source-text-col 2 --source-label-col 1 \
        --stream $D/tweeteval-sentiment/sentiment__test_text.txt --label-map '{"0": "negative", "1": "neutral", "2": "positive"}' \
        --test-split 0.3 --test-rows 3000 --labels negative,neutral,positive --stage-size 2000 ;;
    offensive)  # toxicity: cold start from TweetEval offensive val, stream its train, test its test
      "${EVAL[@]}" "${ROUTER[@]}" --name tweeteval-offensive --out docs/eval/offensive \
        --source $D/tweeteval-offensive/offensive__val_text.txt --stream $D/tweeteval-offensive/offensive__train_text.txt \
        --test $D/tweeteval-offensive/offensive__test_text.txt \
        --label-map '{"0": "not-offensive", "1": "offensive"}' --labels not-offensive,offensive --stage-size 1000 ;;
    offensive-vote|offensive-audit|offensive-cal|offensive-fresh)  # the same with the service's defaults of now and the fine-tuned member, as tse-vote
      local out=docs/eval/offensive-vote audit=0 vote=fitted rows=all name="tweeteval-offensive, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project, fitted vote"
      if [ "$1" = offensive-cal ]; then  # offensive-vote with the recipe's equal vote: which of the two fits moves the hard share
        out=docs/eval/offensive-cal vote=recipe
        name="tweeteval-offensive, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project"
      fi
      if [ "$1" = offensive-audit ]; then
        out=docs/eval/offensive-audit audit=$AUDIT
        name="tweeteval-offensive, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, fitted vote, audit $AUDIT"
      fi
      if [ "$1" = offensive-fresh ]; then  # offensive-vote with the fine-tuned member trained on each correction once
        out=docs/eval/offensive-fresh rows=new
        name="tweeteval-offensive, HUMAN_WEIGHT 3, fine-tuned MiniLM, domain gate at 0.7, calibrated on the project, fitted vote, new rows first"
      fi
      FINETUNE_ROWS=$rows REVIEW_AUDIT_SHARE=$audit VOTE_WEIGHTS=$vote CALIBRATE_ON=project DOMAIN_GATE=hard DOMAIN_GATE_CUTOFF=0.7 HUMAN_WEIGHT=3 \
        "${EVAL[@]}" "${ROUTER[@]}" --specialists "$FT" --out "$out" --name "$name" \
        --source $D/tweeteval-offensive/offensive__val_text.txt --stream $D/tweeteval-offensive/offensive__train_text.txt \
        --test $D/tweeteval-offensive/offensive__test_text.txt \
        --label-map '{"0": "not-offensive", "1": "offensive"}' --labels not-offensive,offensive --stage-size 1000 ;;
    financial-sweep)  # the trade-off across thresholds, on 3,000 financial items (each point is a run)
      "${EVAL[@]}" --max-review-share "${MAX_SHARE:-0.25}" --threshold 0.9 --sweep 0.5,0.9 \
        --name "twitter-financial-news-sentiment, threshold sweep" --out docs/eval/financial-sweep \
        --source "${SOURCE[@]}" --source-text-col 2 --source-label-col 1 \
        --stream $D/twitter-financial-news-sentiment/sent_train.csv --test $D/twitter-financial-news-sentiment/sent_valid.csv \
        --label-map "$FIN_MAP" --labels Bearish,Bullish,Neutral --stream-rows 3000 --stage-size 1000 ;;
    llm)  # a real (small, poor) LLM reviewer: SmolLM2-135M on llama-cpp-python; see bench/llm_cost.py
      .venv/bin/python bench/eval_llm.py ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

for name in "${@:-tse financial tweeteval offensive}"; do
  for n in $name; do run "$n"; done
done
