#!/bin/sh
# Run every libFuzzer target in BUILD_DIR for SECONDS each on its seed corpus.
# Crashes are written to fuzz/artifacts/ and fail the run; add them to the
# target's corpus (fuzz/corpus/NAME/) once fixed, as regression seeds.
set -eu
build=$1
secs=${2:-10}
mkdir -p fuzz/artifacts
status=0
found=0
for bin in "$build"/fuzz-*; do
	[ -x "$bin" ] || continue
	found=1
	name=$(basename "$bin")
	corpus=fuzz/corpus/$name
	work=$(mktemp -d)
	echo "fuzz: $name for ${secs}s"
	if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix=fuzz/artifacts/"$name"- "$work" "$corpus" >"$work.log" 2>&1; then
		tail -n 40 "$work.log"
		status=1
	else
		grep -E '^(#[0-9]+ *DONE|Done)' "$work.log" | tail -n 1 || true
	fi
	rm -rf "$work" "$work.log"
done
[ "$found" -eq 1 ] || { echo "fuzz: no targets built" >&2; exit 1; }
exit $status
