# On the device machine: run several benchmarks/gpu_NAME.sh scripts in one call, each with its
# own time budget, each script's folder packed into $OUT/NAME.tgz as soon as it ends (the device
# returns few files, and what a cut-off call leaves must come back too).
#   bash benchmarks/gpu_round.sh split:100 eager:90 ...
. benchmarks/gpu_setup.sh
for item in "$@"; do
  name=${item%%:*}; budget=${item##*:}
  mkdir -p "$OUT/$name"
  echo "== $name ($budget s)"
  start=$(date +%s)
  timeout $((budget + 30)) bash "benchmarks/gpu_$name.sh" "$budget" > "$OUT/$name/log.txt" 2>&1
  echo "   exit $? after $(( $(date +%s) - start )) s"
  grep -v -i warn "$OUT/$name/log.txt" | tail -${TAIL:-14}
  (cd "$OUT" && tar czf "$name.tgz" "$name" && rm -rf "$name")
done
ls -la "$OUT"
