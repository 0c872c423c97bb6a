#!/bin/bash
# The README's main job (fmnumpy train, every default, --no-plots) with two checkouts,
# alternated in one window: bash bench/ab_cli.sh OLD_DIR NEW_DIR [PAIRS]
# (a checkout: a folder holding fmnumpy/, e.g. `git archive 512da34 fmnumpy | tar -x -C OLD`)
set -u
OLD=$(realpath "$1"); NEW=$(realpath "$2"); PAIRS=${3:-3}
for PP in "$OLD" "$NEW"; do                # fill both compile caches first
  d=$(mktemp -d); (cd "$d" && PYTHONPATH=$PP python -m fmnumpy train --steps 100 --no-plots --no-progress > /dev/null 2>&1); rm -rf "$d"
done
for i in $(seq "$PAIRS"); do
  for who in old new; do
    if [ $who = old ]; then PP=$OLD; else PP=$NEW; fi
    d=$(mktemp -d)
    (cd "$d" && /usr/bin/time -f "$who: command %e s, peak RSS %M KB" env PYTHONPATH=$PP python -m fmnumpy train --no-plots --no-progress 2>&1 | grep -E "trained|command" | sed "s/^trained/$who: trained/")
    rm -rf "$d"
  done
done
