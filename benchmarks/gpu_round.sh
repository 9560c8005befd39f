# On the device machine: run several benchmarks/gpu_NAME.sh scripts in one call, each with its
# own time budget, and pack what they wrote into $OUT/results.tgz (the device returns few files).
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
done
names=$(for i in "$@"; do echo "${i%%:*}"; done)
(cd "$OUT" && tar czf results.tgz $names && rm -rf $names)
ls -la "$OUT"
