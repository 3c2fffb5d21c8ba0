# Sourced by the bench scripts: `build_bench` builds bench/PeftSharp.Bench in Release (which also builds the CLI
# into the same folder); `bench ARGS` runs one of its benches; $bench_bin holds both dlls (peft.dll for /usr/bin/time).
# $lora_step_shape: issue 17's LoRA step (~16.7M-param Llama shape, r 8 on q/v), the flags lora-step.sh gives all its
# sides (ours, the PyTorch peer, the naive TorchSharp step), allocator.sh and lora-step-perf.sh.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench_bin="$root/bench/PeftSharp.Bench/bin/Release/net10.0"
build_bench() { dotnet build "$root/bench/PeftSharp.Bench" -c Release -nologo -v quiet -clp:ErrorsOnly\;NoSummary >&2; }
bench() { dotnet "$bench_bin/PeftSharp.Bench.dll" "$@"; }
lora_step_shape=(--vocab 4096 --hidden 512 --layers 4 --heads 8 --kv-heads 8 --seq 256 --batch 4 --r 8 --alpha 16 --targets q_proj,v_proj)
