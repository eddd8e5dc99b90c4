#!/bin/sh
# ckpt-inspect export of a parameter leaf of the example trainer's checkpoint loads in NumPy with
# the dtype and shape that `ckpt-inspect show` reports. Exit 77 (skipped) without numpy.
# usage: inspect_numpy.sh CKPT_INSPECT CKPT_TRAIN
set -eu
inspect=$1
train=$2
py=
for p in python3 /usr/bin/python3; do
  if "$p" -c 'import numpy' >/dev/null 2>&1; then py=$p; break; fi
done
[ -n "$py" ] || { echo "python3 with numpy not found: skipped"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$train" --dir "$dir/d" --steps 20 --ckpt-every 10 >/dev/null
ckpt=$(find "$dir/d" -mindepth 4 -maxdepth 4 -type d -name 'step_*20' | head -n1)
[ -n "$ckpt" ] || { echo "no step 20 checkpoint under $dir/d"; exit 1; }
"$inspect" export "$ckpt" params/w1 -o "$dir/w1.npy"
want=$("$inspect" show "$ckpt" --leaf params/w1 --json | "$py" -c '
import json, sys
leaf = json.load(sys.stdin)["leaf"]
names = {"f32": "float32", "f64": "float64", "f16": "float16", "i32": "int32", "i64": "int64"}
print(names[leaf["dtype"]], tuple(leaf["shape"]))')
got=$("$py" -c 'import numpy, sys; a = numpy.load(sys.argv[1]); print(a.dtype, a.shape)' "$dir/w1.npy")
echo "show: $want; numpy: $got"
[ "$want" = "$got" ]
