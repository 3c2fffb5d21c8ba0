# Sourced by the bench scripts: `build_bench` builds bench/PeftSharp.Bench in Release (which also builds the CLI
# into the same folder); `bench ARGS` runs one of its benches; $bench_bin holds both dlls (peft.dll for /usr/bin/time).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench_bin="$root/bench/PeftSharp.Bench/bin/Release/net10.0"
build_bench() { dotnet build "$root/bench/PeftSharp.Bench" -c Release -nologo -v quiet -clp:ErrorsOnly\;NoSummary >&2; }
bench() { dotnet "$bench_bin/PeftSharp.Bench.dll" "$@"; }
