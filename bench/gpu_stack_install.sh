#!/usr/bin/env bash
# On the GPU machine, from the repo root: install the wheel chunk(s) this call carried
# (.carry/N from bench/gpu_stack_wheels.sh) into /tmp/site, which stays while the machine is warm.
# Idempotent; prints whether every chunk is now installed. Source it to get PYTHONPATH:
#   . bench/gpu_stack_install.sh && python3 bench/gpu_e2e.py ...
SITE=${SITE:-/tmp/site}
mkdir -p "$SITE/.chunks"
for chunk in .carry/[0-9]*/; do
  [ -f "$chunk/CHUNK" ] || continue
  read -r n total <"$chunk/CHUNK"
  if [ -f "$SITE/.chunks/$n" ]; then
    echo "chunk $n/$total already in $SITE"
    continue
  fi
  # Each chunk into its own folder, then merged: `pip --target` replaces a top-level folder it
  # installs into (bin/ too), so installing chunk after chunk into $SITE kept only the last bin/.
  rm -rf "$SITE/.chunk-$n"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$SITE/.chunk-$n" "$chunk"*.whl || { echo "chunk $n: pip install failed"; return 1 2>/dev/null || exit 1; }
  cp -a "$SITE/.chunk-$n/." "$SITE/" && rm -rf "$SITE/.chunk-$n"
  echo "$total" >"$SITE/.chunks/$n"
  echo "chunk $n/$total installed into $SITE ($(ls "$chunk"*.whl | wc -l) wheels)"
done
total=$(cat "$SITE"/.chunks/* 2>/dev/null | head -1)
have=$(ls "$SITE/.chunks" | wc -l)
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
if [ -n "$total" ] && [ "$have" -ge "$total" ]; then
  echo "stack complete: $have/$total chunks in $SITE"
else
  echo "stack incomplete: $have/${total:-?} chunks in $SITE (carry the others in the next calls)"
fi
