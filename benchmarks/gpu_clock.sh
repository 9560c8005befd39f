# Sourced by a device script after it sets $budget:  . benchmarks/gpu_clock.sh FOLDER
# Sets tag (h100, h200: the device's profile), dir=$OUT/FOLDER (made), and left(): the seconds of
# $budget left since this was sourced.
tag=$(python3 -m kvsim.runtime.environment)
dir=$OUT/$1
mkdir -p "$dir"
start=$SECONDS
left() { echo $(( budget - (SECONDS - start) )); }
