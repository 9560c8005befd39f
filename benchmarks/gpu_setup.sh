# Source on the device machine (after benchmarks/fetch_device_wheels.sh here): makes kvsim's pure-Python dependencies that the device image
# lacks (pydantic and its needs, carried as wheels in .whl/) importable, and prints the device.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu --format=csv,noheader
