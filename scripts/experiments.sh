#!/usr/bin/env bash
# The long experiments, in the background, resumable: each finished run is a line of its suite's .jsonl,
# and a loop commits those lines every 5 minutes (README files are left to their authors' commits). Runs
# checkpoint every 250 steps in .partial/ (ignored by git), so a restart on this machine loses at most the last
# 250 steps of each run in progress. A new session's fresh checkout has no .partial/: `carry` commits each run
# in progress's latest checkpoint (~2 MB) under experiments/carry/, which `start` puts back, so the next
# session resumes it. The commit loop carries by itself at CARRY_AT minutes (default 150 and 170) after this
# session's first `start`, before a session's end (about three hours).
#
#   bash scripts/experiments.sh start [SUITE…]   # default: formal mad-recall (one thread each, one process per
#                                                # core; rows record CPU time): HOPE's formal rows (η_max = 2),
#                                                # and MAD's recall columns, the one target with no row yet.
#                                                # Waiting for a core, in this order: optimizers (m3-ema, then
#                                                # Fashion-MNIST: about 8 CPU hours close Fig. 11's target),
#                                                # formal-titans, formal-baselines, mad (compression,
#                                                # memorization, the delta rule), formal-hope (HOPE under D20's
#                                                # default bound), budget-mad
#   bash scripts/experiments.sh pause            # SIGSTOP every suite (for CI or a benchmark); note the times
#   bash scripts/experiments.sh resume           # SIGCONT
#   bash scripts/experiments.sh status           # what runs, and the last lines of each log
#   bash scripts/experiments.sh carry            # commit the runs in progress for the next session, now
#   bash scripts/experiments.sh stop [SUITE…]    # every suite and the commit loop, or only the suites named
#
# Suites: formal (HOPE with η_max = 2, hope_eta2), formal-hope (HOPE under D20's default bound),
# formal-baselines (transformer, delta and delta_beta2 of formal.yaml), formal-titans (titans and titans_lr2), mad, mad-recall (HOPE, the Transformer and Titans on MAD's four
# recall and copying tasks, whose runs can stop once solved; compression and memorization run to the budget,
# and the delta rule is not in the MAD target), mqar, mqar-d128
# (experiments/synthetic/*.yaml), budget-mad (the Transformer's asymptote on MAD: budget/mad.yaml), budget-mqar-zero
# (its MQAR budget with token 0 as the filler: budget/mqar128_zero.yaml), budget-mqar-k32 (with 32 keys) and
# optimizers (the ViT experiment).
# Logs: runs/experiments/<suite>.log. A suite already running is not started twice.
set -euo pipefail
cd "$(dirname "$0")/.."
LOGS=runs/experiments
mkdir -p "$LOGS"
PATTERN="nestlearn (synthetic experiments/synthetic/|optimizers)"

command_of() {
  case "$1" in
    optimizers) echo "nestlearn optimizers" ;;
    # the formal suite in two disjoint processes: HOPE's models (most of the compute), and the baselines, so
    # that the baselines' rows do not wait for HOPE's (--models before --threads: neither command line is
    # a substring of the other, which pgrep below relies on)
    formal) echo "nestlearn synthetic experiments/synthetic/formal.yaml --models hope_eta2 --threads 1" ;;
    formal-hope) echo "nestlearn synthetic experiments/synthetic/formal.yaml --models hope --threads 1" ;;
    formal-baselines) echo "nestlearn synthetic experiments/synthetic/formal.yaml --models transformer delta delta_beta2 --threads 1" ;;
    # Titans' memory and its variant (the slowest baseline: ~26 CPU minutes per 10,000-step run at the formal
    # shape) in a process of their own, so that the target "Titans with no diverged run" does not wait for the
    # delta rule's rows
    formal-titans) echo "nestlearn synthetic experiments/synthetic/formal.yaml --models titans titans_lr2 --threads 1" ;;
    mad|mqar|mqar-d128) echo "nestlearn synthetic experiments/synthetic/$1.yaml --threads 1" ;;
    # the models the MAD target names (HOPE against the Transformer and Titans) on MAD's four recall and copying
    # tasks; the delta rule's MAD rows and the two budget-long tasks come later, with the suite `mad`
    mad-recall) echo "nestlearn synthetic experiments/synthetic/mad.yaml --models hope transformer titans --tasks in_context_recall noisy_in_context_recall fuzzy_in_context_recall selective_copying --threads 1" ;;
    budget-mad) echo "nestlearn synthetic experiments/synthetic/budget/mad.yaml --threads 1" ;;  # MAD's step budget
    # the Transformer's MQAR budget with Zoology's Figure 2 filler (token 0 where no query is)
    budget-mqar-zero) echo "nestlearn synthetic experiments/synthetic/budget/mqar128_zero.yaml --threads 1" ;;
    budget-mqar-k32) echo "nestlearn synthetic experiments/synthetic/budget/mqar128_k32.yaml --threads 1" ;;  # 32 keys
    *) echo "unknown suite '$1' (formal, formal-hope, formal-baselines, formal-titans, mad, mad-recall, mqar, mqar-d128, budget-mad, budget-mqar-zero, budget-mqar-k32, optimizers)" >&2; return 1 ;;
  esac
}

carry() {
  python -m nestlearn.experiments.protocol carry experiments
  git add -A -- experiments/carry 2> /dev/null || true
  if [ -n "$(git status --porcelain -- experiments/carry)" ]; then
    git commit -q -m "experiments: runs in progress carried to the next session (experiments/carry)" \
      -- experiments/carry >> "$LOGS/commits.log" 2>&1 || echo "carry commit failed $(date -u)" >> "$LOGS/commits.log"
  fi
}

commit_loop() {
  local carried=""
  while true; do
    sleep 300
    if [ -f "$LOGS/.first_start" ]; then  # carry before the session ends
      local age=$(( ($(date +%s) - $(cat "$LOGS/.first_start")) / 60 ))
      for at in ${CARRY_AT:-150 170}; do
        if [ "$age" -ge "$at" ] && [[ " $carried " != *" $at "* ]]; then
          carry >> "$LOGS/commits.log" 2>&1
          carried="$carried $at"
        fi
      done
    fi
    for d in experiments/synthetic/results experiments/synthetic/budget experiments/synthetic/eta experiments/optimizers; do
      if [ -n "$(git status --porcelain -- "$d" ":(exclude)$d/README.md")" ]; then
        git add -- "$d" ":(exclude)$d/README.md" 2>/dev/null || true
        git commit -q -m "experiments: finished runs so far ($d)" -- "$d" ":(exclude)$d/README.md" \
          >> "$LOGS/commits.log" 2>&1 || echo "commit failed $(date -u)" >> "$LOGS/commits.log"
      fi
    done
  done
}

case "${1:-status}" in
  start)
    shift
    suites=("$@")
    [ ${#suites[@]} -eq 0 ] && suites=(formal mad-recall)
    # the session's first start: a session lasts about three hours, and the same machine may serve the next one
    # (its runs/ kept, its processes gone), so a mark older than SESSION_MIN minutes is a past session's
    mark="$LOGS/.first_start"
    if [ ! -f "$mark" ] || [ $(( ($(date +%s) - $(cat "$mark")) / 60 )) -ge "${SESSION_MIN:-180}" ]; then
      date +%s > "$mark"
    fi
    python -m nestlearn.experiments.protocol restore experiments  # the runs a past session carried
    for s in "${suites[@]}"; do
      cmd=$(command_of "$s")
      if pgrep -f "$cmd" > /dev/null; then echo "$s: already running"; continue; fi
      OMP_NUM_THREADS=1 nohup $cmd >> "$LOGS/$s.log" 2>&1 &
      pid=$!
      sleep 5  # a suite that cannot start (nestlearn not importable, a bad recipe) dies at once: say so
      if ! kill -0 "$pid" 2> /dev/null; then
        echo "$s: FAILED to start ($cmd); the end of $LOGS/$s.log:" >&2
        tail -n 5 "$LOGS/$s.log" >&2
        continue
      fi
      echo "$s: started ($cmd), log $LOGS/$s.log"
    done
    if ! pgrep -f "scripts/experiments.sh commit-loop" > /dev/null; then
      nohup bash "$0" commit-loop > /dev/null 2>&1 &
      echo "commit loop: started (every 5 minutes)"
    fi
    ;;
  commit-loop) commit_loop ;;
  carry) carry ;;
  pause) pkill -STOP -f "$PATTERN" && echo "paused at $(date -u +%H:%M) UTC" || echo "nothing running" ;;
  resume) pkill -CONT -f "$PATTERN" && echo "resumed at $(date -u +%H:%M) UTC" || echo "nothing running" ;;
  stop)
    shift
    if [ $# -gt 0 ]; then
      for s in "$@"; do
        cmd=$(command_of "$s")
        pkill -f "$cmd" && echo "$s: stopped at $(date -u +%H:%M) UTC" || echo "$s: not running"
      done
      exit 0
    fi
    pkill -f "$PATTERN" || true
    pkill -f "scripts/experiments.sh commit-loop" || true
    echo "stopped (finished runs are in the .jsonl files; a restart resumes them)"
    ;;
  status)
    pgrep -af "$PATTERN" || echo "no suite running"
    for f in "$LOGS"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 3 "$f"; }; done
    echo "== runs in progress (their latest checkpoints; a restarted suite resumes them)"
    for d in experiments/synthetic/*/.partial/* experiments/optimizers/.partial/*; do
      [ -f "$d/checkpoints/latest" ] && echo "$d: $(cat "$d/checkpoints/latest")"
    done
    ;;
  *) echo "usage: $0 start [SUITE…] | pause | resume | status | stop [SUITE…] | carry" >&2; exit 2 ;;
esac
