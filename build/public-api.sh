#!/usr/bin/env bash
# Regenerates the public API baselines of the three packed libraries (Microsoft.CodeAnalysis.PublicApiAnalyzers):
# every public symbol goes to PublicAPI.Unshipped.txt through the analyzer's own code fix (RS0016, RS0037), then,
# with --ship, into PublicAPI.Shipped.txt (what a release does), leaving Unshipped.txt empty.
#   build/public-api.sh          # after an intended public change: it appears in Unshipped.txt, review the diff
#   build/public-api.sh --ship   # start over from the current surface (first release, or after a big merge)
set -euo pipefail
cd "$(dirname "$0")/.."
ship=false; [ "${1:-}" = "--ship" ] && ship=true
for lib in PeftSharp.Memory PeftSharp PeftSharp.Serving; do
    dir=src/$lib
    if $ship; then printf '#nullable enable\n' > "$dir/PublicAPI.Shipped.txt"; fi
    printf '#nullable enable\n' > "$dir/PublicAPI.Unshipped.txt"
    # RS0016: a public symbol not in the files; RS0037: nullability annotations recorded too.
    dotnet format analyzers "$dir/$lib.csproj" --diagnostics RS0016 RS0037 --severity warn -v quiet
    if $ship; then
        { echo '#nullable enable'; { tail -n +2 "$dir/PublicAPI.Shipped.txt"; tail -n +2 "$dir/PublicAPI.Unshipped.txt"; } | LC_ALL=C sort -u; } > "$dir/PublicAPI.Shipped.txt.tmp"
        mv "$dir/PublicAPI.Shipped.txt.tmp" "$dir/PublicAPI.Shipped.txt"
        printf '#nullable enable\n' > "$dir/PublicAPI.Unshipped.txt"
    fi
    echo "$lib: $(($(wc -l < "$dir/PublicAPI.Shipped.txt") - 1)) shipped, $(($(wc -l < "$dir/PublicAPI.Unshipped.txt") - 1)) unshipped public symbols"
done
