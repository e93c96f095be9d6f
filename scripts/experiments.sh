#!/usr/bin/env bash
# The long experiments, in the background, resumable: each finished run is a line of its suite's .jsonl,
# and a loop commits those lines every 5 minutes (README files are left to their authors' commits). Runs
# checkpoint every 250 steps in .partial/ (ignored by git), so a restart on this machine loses at most the last
# 250 steps of each run in progress. A new session's fresh checkout has no .partial/: `carry` commits each run
# in progress's latest checkpoint (~2 MB) under experiments/carry/, which `start` puts back, so the next
# session resumes it. The commit loop carries by itself at CARRY_AT minutes (default 150 and 170) after this
# session's first `start`, before a session's end (about three hours).
#
#   bash scripts/experiments.sh start            # the queue (QUEUE below): the first suites with a run left,
#                                                # one process per core, one thread each (rows record CPU time);
#                                                # the commit loop starts the next one whenever a core is free
#   bash scripts/experiments.sh start SUITE…     # these suites now, beside whatever runs
#   bash scripts/experiments.sh queue            # the queue, and what each suite in it has left (trains nothing)
#   bash scripts/experiments.sh hold             # no more refilling (the running suites go on) until `start`
#   bash scripts/experiments.sh pause            # SIGSTOP every suite and probe script (for CI or a benchmark);
#                                                # log the times
#   bash scripts/experiments.sh resume           # SIGCONT
#   bash scripts/experiments.sh status           # what runs, and the last lines of each log
#   bash scripts/experiments.sh carry            # commit the runs in progress for the next session, now
#   bash scripts/experiments.sh stop [SUITE…]    # every suite, the queue and the commit loop, or the suites named
#                                                # (with the queue on, a core a stopped suite frees is refilled
#                                                # within 5 minutes: `hold` first to keep it free)
#
# Suites (experiments/synthetic/*.yaml unless said): formal (HOPE with η_max = 2, hope_eta2), formal-hope (HOPE
# under D20's default bound), formal-baselines (transformer and delta: the paper's rows), formal-titans (titans),
# formal-variants (titans_lr2 and delta_beta2: each memory with its write's negative-eigenvalue range); mad-recall (HOPE, the Transformer and Titans on MAD's four recall and copying tasks, whose runs can
# stop once solved), mad-long (every model on compression and memorization, which run to the budget), mad-delta
# (the delta rule, not in the MAD target, on the four recall tasks): three disjoint parts of mad.yaml, and mad
# (all of it, one process: never beside those three); mqar, mqar-d128 (blocked: budget/README.md); budget-mad (the
# Transformer's asymptote on MAD: budget/mad.yaml), budget-mqar-zero and budget-mqar-k32 (its MQAR budget with token
# 0 as the filler, and with 32 keys); optimizers (the ViT experiment, experiments/optimizers);
# probe-shuffle2-no-decay (probes/no_decay_shuffle2.yaml: one probe run, resumed and carried as a suite's; finished
# 2026-12-01), probe-shuffle2-no-dgd (probes/no_dgd_shuffle2.yaml: the same run with plain gradient descent),
# probe-fuzzy-cms-static (probes/cms_static_fuzzy.yaml: HOPE's fuzzy recall with its CMS frozen in context),
# probe-compression-nope (probes/compression_nope.yaml: the Transformer's compression without rotary positions),
# probe-compression-eta (probes/compression_eta.yaml: HOPE's and Titans' compression with their write bound at 2),
# probe-compression-memory (probes/compression_memory.yaml: HOPE's compression with a linear memory; with chunks of 4;
# with a linear memory written by the exact delta step; that reduced to a delta-rule mixer beside the CMS; that
# step with its momentum, its self-generated k and v, or its retention decay alone off; HOPE with plain k and v).
# Logs: runs/experiments/<suite>.log, the queue's in queue.log. A suite already running is not started twice.
set -euo pipefail
cd "$(dirname "$0")/.."
LOGS=runs/experiments
mkdir -p "$LOGS"
# the suites, and the probe scripts (experiments/*/probes/*.py) run by hand beside them: each holds a core, and
# `pause` / `resume` / `stop` reach them too
PATTERN="nestlearn (synthetic experiments/synthetic/|optimizers)|python experiments/[a-z_]+/probes/[a-z_]+\.py"
# Every suite runs this checkout's code: `python -m` from the repository root imports ./nestlearn, whatever checkout
# an editable install of the `nestlearn` command points at (another checkout's would train, and record, its code).
RUN="python -m"
LOOP="scripts/experiments.sh commit-loop"  # how pgrep finds the commit loop

command_of() {
  case "$1" in
    optimizers) echo "nestlearn optimizers" ;;
    # the formal suite in two disjoint processes: HOPE's models (most of the compute), and the baselines, so
    # that the baselines' rows do not wait for HOPE's (--models before --threads: neither command line is
    # a substring of the other, which pgrep below relies on)
    formal) echo "nestlearn synthetic experiments/synthetic/formal.yaml --models hope_eta2 --threads 1" ;;
    formal-hope) echo "nestlearn synthetic experiments/synthetic/formal.yaml --models hope --threads 1" ;;
    formal-baselines) echo "nestlearn synthetic experiments/synthetic/formal.yaml --models transformer delta --threads 1" ;;
    # Titans' memory and its variant (the slowest baseline: ~26 CPU minutes per 10,000-step run at the formal
    # shape) in a process of their own, so that the target "Titans with no diverged run" does not wait for the
    # delta rule's rows
    formal-titans) echo "nestlearn synthetic experiments/synthetic/formal.yaml --models titans --threads 1" ;;
    # the two baselines' variants with the write's negative-eigenvalue range (not rows of the paper): after the
    # paper's rows and MAD, so that the delta rule's formal rows do not wait for them
    formal-variants) echo "nestlearn synthetic experiments/synthetic/formal.yaml --models titans_lr2 delta_beta2 --threads 1" ;;
    mad|mqar|mqar-d128) echo "nestlearn synthetic experiments/synthetic/$1.yaml --threads 1" ;;
    # the models the MAD target names (HOPE against the Transformer and Titans) on MAD's four recall and copying
    # tasks; the delta rule's MAD rows and the two budget-long tasks are mad-delta and mad-long
    mad-recall) echo "nestlearn synthetic experiments/synthetic/mad.yaml --models hope transformer titans --tasks in_context_recall noisy_in_context_recall fuzzy_in_context_recall selective_copying --threads 1" ;;
    # the rest of mad.yaml, disjoint from mad-recall (so that the queue can run them beside it): the two tasks that
    # run to the budget, for every model; and the delta rule on the four recall and copying tasks
    mad-long) echo "nestlearn synthetic experiments/synthetic/mad.yaml --models hope transformer titans delta --tasks compression memorization --threads 1" ;;
    # HOPE as it is (D20's bound, momentum on) on selective copying: its three seeds at the selected 3.16e-3, all three
    # selection runs having diverged: each seed retried once at half the rate if it diverges, and scored as it ended
    # (the protocol's rule); from 2026-12-03 04:25 UTC
    mad-copy-default) echo "nestlearn synthetic experiments/synthetic/mad.yaml --models hope --tasks selective_copying --threads 1" ;;
    # HOPE's variant hope_eta2_nomom on MAD's other five columns (does the form that learns selective copying cost
    # elsewhere?), from 2026-12-03 04:15 UTC; its selective copying is mad-copy-hope
    mad-variant) echo "nestlearn synthetic experiments/synthetic/mad.yaml --models hope_eta2_nomom --tasks compression in_context_recall noisy_in_context_recall fuzzy_in_context_recall memorization --threads 1" ;;
    mad-delta) echo "nestlearn synthetic experiments/synthetic/mad.yaml --models delta --tasks in_context_recall noisy_in_context_recall fuzzy_in_context_recall selective_copying --threads 1" ;;
    budget-mad) echo "nestlearn synthetic experiments/synthetic/budget/mad.yaml --threads 1" ;;  # MAD's step budget
    # the Transformer's MQAR budget with Zoology's Figure 2 filler (token 0 where no query is)
    budget-mqar-zero) echo "nestlearn synthetic experiments/synthetic/budget/mqar128_zero.yaml --threads 1" ;;
    budget-mqar-k32) echo "nestlearn synthetic experiments/synthetic/budget/mqar128_k32.yaml --threads 1" ;;  # 32 keys
    # a probe run as a suite, so that it resumes and is carried like one: HOPE's Shuffle-2 seed 0 with α = 1
    probe-shuffle2-no-decay) echo "nestlearn synthetic experiments/synthetic/probes/no_decay_shuffle2.yaml --threads 1" ;;
    # the same run with the self-modifying memories' rule plain gradient descent (no DGD erasure), α = 1
    probe-shuffle2-no-dgd) echo "nestlearn synthetic experiments/synthetic/probes/no_dgd_shuffle2.yaml --threads 1" ;;
    # does HOPE's CMS path keep its self-modifying memories from learning fuzzy recall? Its CMS frozen in context
    probe-fuzzy-cms-static) echo "nestlearn synthetic experiments/synthetic/probes/cms_static_fuzzy.yaml --threads 1" ;;
    # is a position signal what the memories lack on compression? The Transformer without rotary positions (NoPE)
    probe-compression-nope) echo "nestlearn synthetic experiments/synthetic/probes/compression_nope.yaml --threads 1" ;;
    # is the write's strength what they lack against the delta rule there? HOPE and Titans with η, θ bounded at 2
    probe-compression-eta) echo "nestlearn synthetic experiments/synthetic/probes/compression_eta.yaml --threads 1" ;;
    # or the memory's form, or the chunk its writes' gradients are taken at? HOPE with a linear memory; chunks of 4
    probe-compression-memory) echo "nestlearn synthetic experiments/synthetic/probes/compression_memory.yaml --threads 1" ;;
    # HOPE's selective copying with its momentum off, on the batches of the selection run that diverged (from
    # 2026-12-02 23:27 UTC)
    probe-selective-momentum) echo "nestlearn synthetic experiments/synthetic/probes/selective_copying_momentum.yaml --threads 1" ;;
    # the same with the momentum gate bounded at 0.75 (D30; from 23:35 UTC)
    probe-selective-beta) echo "nestlearn synthetic experiments/synthetic/probes/selective_copying_beta.yaml --threads 1" ;;
    # the same with η_max = 2 and the momentum off (from 2026-12-03 00:25 UTC)
    probe-selective-eta2) echo "nestlearn synthetic experiments/synthetic/probes/selective_copying_eta2.yaml --threads 1" ;;
    # the Transformer's and Titans' selective copying (mad-recall's last column without HOPE, whose runs diverge:
    # from 2026-12-02 23:27 UTC mad-recall waits out of the queue while the momentum probe runs)
    mad-copy-baselines) echo "nestlearn synthetic experiments/synthetic/mad.yaml --models transformer titans --tasks selective_copying --threads 1" ;;
    # HOPE's variant with η_max = 2 and the momentum off (mad.yaml's hope_eta2_nomom) on selective copying, from
    # 2026-12-03 04:00 UTC; its selection run at 3.16e-3 is the probe-selective-eta2 run, moved in at step 7,000
    mad-copy-hope) echo "nestlearn synthetic experiments/synthetic/mad.yaml --models hope_eta2_nomom --tasks selective_copying --threads 1" ;;
    *) echo "unknown suite '$1' (formal, formal-hope, formal-baselines, formal-titans, formal-variants, mad, mad-recall, mqar, mqar-d128, budget-mad, budget-mqar-zero, budget-mqar-k32, mad-long, mad-delta, optimizers, probe-shuffle2-no-decay, probe-shuffle2-no-dgd, probe-fuzzy-cms-static, probe-compression-nope, probe-compression-eta, probe-compression-memory, probe-selective-momentum, probe-selective-beta, probe-selective-eta2, mad-copy-baselines, mad-copy-hope, mad-variant, mad-copy-default)" >&2; return 1 ;;
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

# The queue: `start` without suites runs the first suites of QUEUE that have a run left, one per core (CORES), and the
# commit loop starts the next one whenever a core is free (a suite finished, or died). The priority order: first the
# probe runs (the Transformer's compression without rotary positions, probes/compression_nope.yaml, three runs of
# about 5 CPU minutes; HOPE's fuzzy recall with its CMS frozen in context, probes/cms_static_fuzzy.yaml, about two CPU
# hours, both from 2026-12-02; HOPE's and Titans' compression with the write bound at 2, probes/compression_eta.yaml,
# seed 0 each, about 75 CPU minutes, from 2026-12-02 10:36 UTC; HOPE's compression with a linear memory and with
# chunks of 4, probes/compression_memory.yaml, seed 0 each, about 2 CPU hours, from 11:43 UTC, and two runs more with
# the exact delta step, about 1 CPU hour, from 14:10 UTC, three with one part off each and HOPE with plain k and v,
# about 2 CPU hours, from 16:50 UTC; HOPE's Shuffle-2 with α = 1 and plain gradient descent, finished); then the rest of
# MAD's target columns (compression and memorization: since 2026-12-02 before the recall columns, so that Titans'
# compression seeds close that column while the probes take the other core); MAD's recall columns (the optimizer
# experiment, finished 2026-11-30, left the queue on 2026-12-02: on another CPU M3's stored fingerprints do not match
# and it would retrain M3's runs; experiments/optimizers/README.md); HOPE's formal rows (aⁿbⁿcⁿ's seeds and Shuffle-2
# left); Titans' formal rows (the target "no diverged run"); the other baselines (the paper's rows: the delta rule);
# HOPE under D20's default bound (since 2026-12-01 19:10 UTC before the delta rule's MAD rows, which no target reads);
# the delta rule's MAD rows; the baselines' negative-eigenvalue variants (titans_lr2 and delta_beta2, from 2026-12-01
# 13:45 UTC a suite of their own); and the Transformer's MAD budget rows. `hold` stops the refilling (the running
# suites go on); `start` turns it on again. From 2026-12-02 23:27 UTC, first: HOPE's selective copying with its momentum
# off (probes/selective_copying_momentum.yaml, one run on the batches of the selection run that diverged) and with it
# bounded at 0.75 (probes/selective_copying_beta.yaml, D30, from 23:35 UTC), then the
# Transformer's and Titans' selective copying (mad-copy-baselines); mad-recall (HOPE's selective-copying seeds, which
# diverge) is out of the queue until the probe says how HOPE's column is to be run (`start mad-recall` by hand).
# From 00:25 UTC the momentum-off run waits behind η_max = 2 with the momentum off (probes/selective_copying_eta2.yaml)
# and the baselines: at D20's bound neither stable form learned the task by step 1,500.
# From 2026-12-03 04:00 UTC: HOPE's variant (η_max = 2, momentum off: mad.yaml's hope_eta2_nomom) on selective copying
# under the protocol (mad-copy-hope), whose selection run at 3.16e-3 is the η_max = 2 probe's run (the same identity:
# its checkpoint moved into results/.partial, and probe-selective-eta2 left the queue), HOPE's own seeds there
# (mad-copy-default: its selection runs diverged; before Titans'), and the baselines' selective copying; then HOPE
# under D20's default bound on the formal languages (formal-hope: the target's model), the β ≤ 0.75 probe (stopped at
# step 7,000), the variant on MAD's other columns (mad-variant) and the momentum-off probe.
QUEUE=${QUEUE:-mad-copy-hope mad-copy-default mad-copy-baselines formal-hope probe-selective-beta mad-variant probe-selective-momentum probe-compression-nope probe-fuzzy-cms-static probe-compression-eta probe-compression-memory probe-shuffle2-no-dgd probe-shuffle2-no-decay mad-long formal formal-titans formal-baselines mad-delta formal-variants budget-mad}
CORES=${CORES:-$(nproc)}

# Every synthetic suite keeps its finished runs' scored weights under runs/weights/<family>/ (git ignores runs/), so
# that a probe loads them (nestlearn.experiments.synthetic.load_weights) instead of training the run again. The
# option changes no result and is not in the recorded command; pgrep finds a suite by $cmd alone.
KEEP="--keep-weights runs/weights"

launch() {  # start suite $1 in the background, unless it runs; 0 when it runs
  local s=$1 cmd pid extra=""
  cmd=$(command_of "$s")
  if pgrep -f "$cmd" > /dev/null; then echo "$s: already running"; return 0; fi
  [[ "$cmd" == "nestlearn synthetic "* ]] && extra=$KEEP
  date +%s > "$LOGS/.started_$s"
  OMP_NUM_THREADS=1 nohup $RUN $cmd $extra >> "$LOGS/$s.log" 2>&1 &
  pid=$!
  sleep 5  # a suite that cannot start (nestlearn not importable, a bad recipe) dies at once: say so
  if ! kill -0 "$pid" 2> /dev/null; then
    echo "$s: FAILED to start ($cmd); the end of $LOGS/$s.log:" >&2
    tail -n 5 "$LOGS/$s.log" >&2
    return 1
  fi
  echo "$s: started at $(date -u +%H:%M) UTC ($cmd), log $LOGS/$s.log"
}

has_work() {  # whether suite $1 has a run left (`--left` trains nothing); prints what
  local out
  out=$(OMP_NUM_THREADS=1 $RUN $(command_of "$1") --left 2>> "$LOGS/queue.log" | tail -n 1) || true
  echo "$1: ${out:-no answer (see $LOGS/queue.log)}"
  [[ "$out" == left:* ]]
}

refill() {  # start queued suites while a core is free
  local s cmd started
  for s in $QUEUE; do
    [ "$(pgrep -fc "$PATTERN")" -ge "$CORES" ] && return 0
    cmd=$(command_of "$s")
    pgrep -f "$cmd" > /dev/null && continue
    started=$(cat "$LOGS/.started_$s" 2> /dev/null || echo 0)
    if [ $(( $(date +%s) - started )) -lt 600 ]; then  # it stopped within 10 minutes of its start: not again
      echo "$s: stopped within 10 minutes of its start at $(date -u -d "@$started" +%H:%M) UTC; skipped (see $LOGS/$s.log)"
      continue
    fi
    if has_work "$s"; then launch "$s" || true; fi
  done
  return 0
}

new_session() {  # whether a \`start\` begins a new session: $1 the mark's age in minutes (-1: no mark), $2 whether
  # a commit loop is alive, $3 whether this session's full \`stop\` came after the mark. A session lasts about three
  # hours and the same machine may serve the next one (its runs/ kept, its processes gone): no commit loop alive
  # means a new session, unless a full \`stop\` of this one killed it; a mark older than SESSION_MIN minutes is a
  # past session's in any case. (The age alone missed a session that began 179 minutes after the last one began.)
  [ "$1" -lt 0 ] || [ "$1" -ge "${SESSION_MIN:-180}" ] || { [ "$2" = 0 ] && [ "$3" = 0 ]; }
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
    for d in experiments/synthetic/results experiments/synthetic/budget experiments/synthetic/eta experiments/optimizers \
      experiments/synthetic/probes/no_decay_shuffle2 experiments/synthetic/probes/no_dgd_shuffle2 \
      experiments/synthetic/probes/cms_static_fuzzy experiments/synthetic/probes/compression_nope \
      experiments/synthetic/probes/compression_eta experiments/synthetic/probes/compression_memory; do
      if [ -n "$(git status --porcelain -- "$d" ":(exclude)$d/README.md")" ]; then
        git add -- "$d" ":(exclude)$d/README.md" 2>/dev/null || true
        git commit -q -m "experiments: finished runs so far ($d)" -- "$d" ":(exclude)$d/README.md" \
          >> "$LOGS/commits.log" 2>&1 || echo "commit failed $(date -u)" >> "$LOGS/commits.log"
      fi
    done
    [ -f "$LOGS/.queue" ] && refill >> "$LOGS/queue.log" 2>&1
  done
}

case "${1:-status}" in
  start)
    shift
    mark="$LOGS/.first_start"
    alive=$(pgrep -f "$LOOP" > /dev/null && echo 1 || echo 0)
    stopped=$([ -f "$mark" ] && [ "$(cat "$LOGS/.stopped" 2> /dev/null || echo 0)" -gt "$(cat "$mark")" ] && echo 1 || echo 0)
    age=$([ -f "$mark" ] && echo $(( ($(date +%s) - $(cat "$mark")) / 60 )) || echo -1)
    if new_session "$age" "$alive" "$stopped"; then date +%s > "$mark"; fi
    python -m nestlearn.experiments.protocol restore experiments  # the runs a past session carried
    if [ $# -eq 0 ]; then  # the queue: the first suites with a run left, one per core, refilled by the commit loop
      touch "$LOGS/.queue"
      rm -f "$LOGS"/.started_*  # a new start forgives the suites that stopped early
      refill
    else
      for s in "$@"; do command_of "$s" > /dev/null && launch "$s" || true; done
    fi
    if [ "$alive" = 0 ]; then
      nohup bash "$0" commit-loop > /dev/null 2>&1 &
      echo "commit loop: started (every 5 minutes)"
    fi
    ;;
  commit-loop) commit_loop ;;
  new-session) new_session "$2" "$3" "$4" && echo new || echo same ;;  # the rule above, for its test
  carry) carry ;;
  queue)  # what each queued suite has left (trains nothing)
    echo "queue $([ -f "$LOGS/.queue" ] && echo on || echo held), $CORES cores: $QUEUE"
    for s in $QUEUE; do
      if pgrep -f "$(command_of "$s")" > /dev/null; then echo "$s: running"; else has_work "$s" || true; fi
    done
    ;;
  hold) rm -f "$LOGS/.queue" && echo "queue held at $(date -u +%H:%M) UTC: free cores stay free until \`start\`" ;;
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
    rm -f "$LOGS/.queue"
    pkill -f "$PATTERN" || true
    pkill -f "$LOOP" || true
    date +%s > "$LOGS/.stopped"  # this session's stop: the next \`start\` keeps the session's mark
    echo "stopped (finished runs are in the .jsonl files; a restart resumes them)"
    ;;
  status)
    echo "queue $([ -f "$LOGS/.queue" ] && echo on || echo held) ($CORES cores): $QUEUE"
    pgrep -af "$PATTERN" || echo "no suite running"
    for f in "$LOGS"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 3 "$f"; }; done
    echo "== runs in progress (their latest checkpoints; a restarted suite resumes them)"
    for d in experiments/synthetic/*/.partial/* experiments/synthetic/probes/*/.partial/* experiments/optimizers/.partial/*; do
      [ -f "$d/checkpoints/latest" ] && echo "$d: $(cat "$d/checkpoints/latest")"
    done
    ;;
  *) echo "usage: $0 start [SUITE…] | queue | hold | pause | resume | status | stop [SUITE…] | carry" >&2; exit 2 ;;
esac
