#!/usr/bin/env bash
# The planner against peaks that projects published for their own GPU runs (bench/plan-cases/*.json, each with its
# source): prints planned vs measured per case and the median / worst absolute error; exits 1 over the bars
# (median 10%, worst 25%). Pure arithmetic: a few seconds after the build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dotnet build "$root/bench/PlanVsPublished" -c Release -nologo -v quiet -clp:ErrorsOnly\;NoSummary >&2
dotnet "$root/bench/PlanVsPublished/bin/Release/net10.0/PlanVsPublished.dll" "$root/bench/plan-cases"
