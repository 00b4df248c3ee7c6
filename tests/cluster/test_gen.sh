#!/usr/bin/env bash
# The demo's test-data generators (scripts/gen-dicom, scripts/gen-fastq),
# run small: the same seed must give the same bytes and another seed other
# bytes; every DICOM file must pass dcmftest and parse whole in dcmdump with
# one study, its series and unique instance UIDs; the FASTQ must be accepted
# by samtools (fqidx and import) and be well-formed record by record; bad
# arguments and unwritable outputs must fail with a clear message.
# Usage: test_gen.sh   (needs dcmtk and samtools: scripts/bootstrap)
. "$(dirname "$0")/lib.sh"
SCRIPTS=$(cd "$(dirname "$0")/../../scripts" && pwd)
# A fresh cache, so this run also covers compiling gen-fastq.c.
export MSD_TOOL_CACHE=$WORK/toolcache

export LC_ALL=C # byte ranges in awk and sort

have() { command -v "$1" >/dev/null; }
for tool in dcmftest dcmdump samtools cc; do
  check "$tool is installed (scripts/bootstrap installs it)" have "$tool"
done
[ "$FAIL" -eq 0 ] || { finish; exit; }

gd() { "$SCRIPTS/gen-dicom" "$@" 2>>"$WORK/gen.log"; }
gf() { "$SCRIPTS/gen-fastq" "$@" 2>>"$WORK/gen.log"; }

# refuses NAME REGEX CMD...: CMD exits non-zero, says REGEX on stderr, and
# prints no Python traceback.
refuses() {
  local name=$1 re=$2 err rc; shift 2
  err=$("$@" 2>&1 >/dev/null); rc=$?
  echo "  $name -> exit $rc: $(grep -m 1 -E '^gen-[a-z]+:' <<<"$err")"
  if [ "$rc" -ne 0 ] && grep -Eq -- "$re" <<<"$err" && ! grep -q Traceback <<<"$err"; then
    ok "$name: refused with a clear message"
  else
    bad "$name: refused with a clear message (exit $rc, wanted /$re/): $err"
  fi
}

# tags FILES...: "study series sop number media-sop" per file, from dcmdump.
tags() {
  local f
  for f in "$@"; do
    dcmdump -q +P 0020,000d +P 0020,000e +P 0008,0018 +P 0020,0013 +P 0002,0003 "$f" |
      sed -E 's/^[^[]*\[([^]]*)\].*/\1/' | paste -sd' '
  done
}
distinct() { sort -u | wc -l; }

echo "== gen-dicom"
D=$WORK/dicom
check "gen-dicom: 20 instances in 3 series, seed 7" gd "$D/a" --instances 20 --series 3 --seed 7
check "gen-dicom: again with seed 7" gd "$D/b" --instances 20 --series 3 --seed 7
check "gen-dicom: seed 8" gd "$D/c" --instances 20 --series 3 --seed 8
check "20 .dcm files and a manifest of 20 lines" \
  test "$(compgen -G "$D/a/*.dcm" | wc -l)" -eq 20 -a "$(wc -l <"$D/a/MANIFEST.sha256")" -eq 20
check "MANIFEST.sha256 verifies with sha256sum -c" \
  bash -c "cd '$D/a' && sha256sum -c --quiet MANIFEST.sha256"
check "same seed: identical files (manifests equal)" cmp -s "$D/a/MANIFEST.sha256" "$D/b/MANIFEST.sha256"
check "same seed: identical files (bytes compared)" diff -r -q "$D/a" "$D/b"
check "other seed: no file in common" \
  test -z "$(comm -12 <(cut -d' ' -f1 "$D/a/MANIFEST.sha256" | sort) <(cut -d' ' -f1 "$D/c/MANIFEST.sha256" | sort))"
check "dcmftest accepts all 20 files" \
  test "$(dcmftest "$D/a"/*.dcm | grep -c '^yes: ')" -eq 20
# dump_all: dcmdump reads every file with no error and no warning (a wrong
# group length, for one, is only a warning).
dump_all() {
  local f err
  for f in "$D/a"/*.dcm; do
    if ! err=$(dcmdump "$f" 2>&1 >/dev/null) || [ -n "$err" ]; then
      echo "  $f: $err"
      return 1
    fi
  done
}
check "dcmdump parses every file without an error or a warning" dump_all
dcmdump -q "$D/a/CT_s02_i00003.dcm" >"$WORK/dump.txt"
for re in '\(0002,0010\) UI =LittleEndianExplicit' \
          '\(0008,0016\) UI =CTImageStorage' '\(0010,0010\) PN \[SYNTHETIC\^PATIENT\]' \
          '\(0020,0013\) IS \[3\]' '\(0020,0011\) IS \[2\]' '\(0028,0010\) US 256' \
          '\(0028,0100\) US 16' '\(7fe0,0010\) OW .*# 131072,'; do
  check "dcmdump shows /$re/" grep -Eq -- "$re" "$WORK/dump.txt"
done
tags "$D/a"/*.dcm >"$WORK/tags.txt"
check "tags read from all 20 files" test "$(awk 'NF == 5' "$WORK/tags.txt" | wc -l)" -eq 20
check "one StudyInstanceUID" test "$(cut -d' ' -f1 "$WORK/tags.txt" | distinct)" -eq 1
check "three SeriesInstanceUIDs" test "$(cut -d' ' -f2 "$WORK/tags.txt" | distinct)" -eq 3
check "20 distinct SOPInstanceUIDs" test "$(cut -d' ' -f3 "$WORK/tags.txt" | distinct)" -eq 20
check "InstanceNumber unique within each series" test "$(cut -d' ' -f2,4 "$WORK/tags.txt" | distinct)" -eq 20
check "MediaStorageSOPInstanceUID equals SOPInstanceUID" \
  test -z "$(awk '$3 != $5' "$WORK/tags.txt")"
uids() { cut -d' ' -f1,2,3,5 "$WORK/tags.txt" | tr ' ' '\n'; }
check "every UID is 2.25.<digits> and at most 64 characters" \
  test -z "$(uids | grep -Ev '^2\.25\.[1-9][0-9]*$'; uids | awk 'length > 64')"
check "pixel data differs in every instance" \
  test "$(for f in "$D/a"/*.dcm; do tail -c 131072 "$f" | sha256sum; done | distinct)" -eq 20
check "--rows 64 --cols 100: 12800-byte pixel data that dcmdump parses" \
  bash -c "'$SCRIPTS/gen-dicom' '$D/s' --instances 2 --series 1 --rows 64 --cols 100 2>/dev/null &&
           dcmdump -q '$D/s/CT_s01_i00001.dcm' | grep -Eq '\(7fe0,0010\) OW .*# 12800,'"

echo "== gen-dicom bad input"
: >"$WORK/afile"
refuses "gen-dicom into a path under a regular file" "cannot create output directory" \
  "$SCRIPTS/gen-dicom" "$WORK/afile/out" --instances 2
if [ "$(id -u)" -ne 0 ]; then
  mkdir -m 500 "$WORK/ro"
  refuses "gen-dicom into a read-only directory" "not writable" "$SCRIPTS/gen-dicom" "$WORK/ro" --instances 2
else
  echo "  (root ignores directory permissions: the read-only directory case is not run)"
fi
refuses "gen-dicom --instances 0" "argument --instances: must be in 1\.\." "$SCRIPTS/gen-dicom" "$D/x" --instances 0
refuses "gen-dicom --instances abc" "argument --instances: must be an integer" "$SCRIPTS/gen-dicom" "$D/x" --instances abc
refuses "gen-dicom --rows 0" "argument --rows: must be in 1\.\." "$SCRIPTS/gen-dicom" "$D/x" --rows 0
refuses "gen-dicom --series 5 --instances 3" "--series 5 is more than --instances 3" \
  "$SCRIPTS/gen-dicom" "$D/x" --series 5 --instances 3
refuses "gen-dicom without OUTDIR" "required: OUTDIR" "$SCRIPTS/gen-dicom"

echo "== gen-fastq"
F=$WORK/fq
mkdir -p "$F"
check "gen-fastq: 8 MiB, seed 7" gf "$F/a.fastq" --size 8M --seed 7
check "gen-fastq: again with seed 7" gf "$F/b.fastq" --size 8M --seed 7
check "gen-fastq: seed 8" gf "$F/c.fastq" --size 8M --seed 8
check "same seed: identical SHA-256" \
  test "$(sha256sum <"$F/a.fastq")" = "$(sha256sum <"$F/b.fastq")"
check "other seed: different SHA-256" \
  test "$(sha256sum <"$F/a.fastq")" != "$(sha256sum <"$F/c.fastq")"
size=$(stat -c %s "$F/a.fastq")
check "size within one record below 8 MiB ($size bytes)" \
  test "$size" -le 8388608 -a "$size" -gt $((8388608 - 400))
check "a 4 MiB file with the same seed is a prefix of the 8 MiB one" \
  bash -c "'$SCRIPTS/gen-fastq' '$F/p.fastq' --size 4M --seed 7 2>/dev/null &&
           cmp -s -n \$(stat -c %s '$F/p.fastq') '$F/p.fastq' '$F/a.fastq'"
check "- writes the same bytes to stdout" \
  bash -c "'$SCRIPTS/gen-fastq' - --size 8M --seed 7 2>/dev/null | cmp -s - '$F/a.fastq'"
reads=$(( $(wc -l <"$F/a.fastq") / 4 ))
check "samtools fqidx indexes all $reads reads" \
  bash -c "samtools fqidx '$F/a.fastq' && test \$(wc -l <'$F/a.fastq.fai') -eq $reads"
check "samtools import reads all $reads reads" \
  bash -c "samtools import -0 '$F/a.fastq' -o '$F/a.sam' 2>/dev/null &&
           test \$(samtools view -c '$F/a.sam') -eq $reads"
# well_formed FILE LEN: @name / [ACGTN]{LEN} / + / Phred+33 '#'..'J' of LEN.
well_formed() {
  awk -v len="$2" '
    NR % 4 == 1 && !/^@synthetic\.[0-9]+\.[0-9]+$/ { bad = NR; exit }
    NR % 4 == 2 && (!/^[ACGTN]+$/ || length != len) { bad = NR; exit }
    NR % 4 == 3 && $0 != "+" { bad = NR; exit }
    NR % 4 == 0 && (!/^[#-J]+$/ || length != len) { bad = NR; exit }
    END { if (bad || NR % 4) { print "malformed at line " bad; exit 1 } }' "$1"
}
check "every record well-formed, 150 bases, qualities '#'..'J'" well_formed "$F/a.fastq" 150
check "N bases are present and carry quality '#'" \
  bash -c "paste - - - - <'$F/a.fastq' | awk -F'\t' '{ n = index(\$2, \"N\"); if (n) { seen++; if (substr(\$4, n, 1) != \"#\") exit 1 } } END { exit !seen }'"
check "--read-length 100 --size 1M: well-formed 100-base reads" \
  bash -c "'$SCRIPTS/gen-fastq' '$F/r.fastq' --read-length 100 --size 1M 2>/dev/null"
check "  and its records have 100 bases" well_formed "$F/r.fastq" 100

echo "== gen-fastq bad input"
refuses "gen-fastq --size garbage" "--size garbage: not a size" "$SCRIPTS/gen-fastq" "$F/x.fastq" --size garbage
refuses "gen-fastq --size 8X" "--size 8X: not a size" "$SCRIPTS/gen-fastq" "$F/x.fastq" --size 8X
refuses "gen-fastq --size 10" "smaller than one record" "$SCRIPTS/gen-fastq" "$F/x.fastq" --size 10
refuses "gen-fastq --read-length 0" "--read-length 0: must be 1\.\." "$SCRIPTS/gen-fastq" "$F/x.fastq" --read-length 0
refuses "gen-fastq --seed -1" "--seed -1: not an unsigned integer" "$SCRIPTS/gen-fastq" "$F/x.fastq" --seed -1
refuses "gen-fastq without an output" "expected one output path" "$SCRIPTS/gen-fastq" --size 1M
refuses "gen-fastq into a path under a regular file" "cannot create .*afile/x.fastq" \
  "$SCRIPTS/gen-fastq" "$WORK/afile/x.fastq" --size 1M
check "refused runs left no output or temporary file" \
  test -z "$(compgen -G "$F/x.fastq*")"

finish
