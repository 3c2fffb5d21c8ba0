#!/usr/bin/env bash
# Regenerates the demo base model into a temp folder and prints wall/CPU time and the loss curve's end points.
# Usage: bench/pretrain-demo.sh [steps]   (the committed model uses the make-demo default)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-300}
out=$(mktemp -d)
dotnet build -c Release src/PeftSharp.Cli -v q -nologo >/dev/null
/usr/bin/time -f "wall %es, cpu %Us user" dotnet src/PeftSharp.Cli/bin/Release/net10.0/peft.dll make-demo --out "$out" --pretrain --steps "$steps" | tail -3
ls -la "$out/base"
rm -rf "$out"
