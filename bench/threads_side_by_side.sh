#!/bin/bash
# Two --threads 1 training runs side by side against one alone (each command's own
# "trained in" time and its wall time): bash bench/threads_side_by_side.sh [CHECKOUT]
set -u
PP=$(realpath "${1:-.}")
run() { d=$(mktemp -d); (cd "$d" && /usr/bin/time -f "wall %e s" env PYTHONPATH=$PP python -m fmnumpy train --threads 1 --hidden 64,64 --steps 4000 --no-plots --no-progress 2>&1 | grep -E "trained|wall" | tr '\n' ' '); echo; rm -rf "$d"; }
run > /dev/null                             # fill the compile cache
echo "alone:"; run
echo "two side by side:"; run & run & wait
