#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the real files in tests/data, so no corpus is committed
# (the seeds are already in the repository; libFuzzer adds its finds to the same folders,
# which .gitignore keeps out of git). Safe to rerun: existing files are overwritten.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="$here/../tests/data"
corpus="$here/corpus"
mkdir -p "$corpus"/{ct_slice,ct_frame,rtstruct,rtplan,rtrecord,config,spatial_registration}

# ct_slice: one slice per transfer syntax and vendor: native (GE, plastimatch), RLE,
# JPEG lossless, JPEG 2000 (Siemens).
cp "$data/STS_001/image/000000.dcm" "$corpus/ct_slice/sts001_native_000.dcm"
cp "$data/STS_001/image/000010.dcm" "$corpus/ct_slice/sts001_native_010.dcm"
cp "$data/encoded/STS_002_rle/000010.dcm" "$corpus/ct_slice/sts002_rle_010.dcm"
cp "$data/encoded/STS_002_jpegll/000010.dcm" "$corpus/ct_slice/sts002_jpegll_010.dcm"
cp "$(ls "$data"/totalseg_j2k/CT.* | head -n 1)" "$corpus/ct_slice/totalseg_j2k_0.dcm"
cp "$(ls "$data"/plans/lung_synth/ct/*.dcm | head -n 1)" "$corpus/ct_slice/lung_synth_0.dcm"

# ct_frame: records of [u32 little-endian length][slice bytes], as the target splits them.
frame() {
    local out="$1"
    shift
    : >"$out"
    for f in "$@"; do
        local n
        n=$(stat -c %s "$f")
        printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((n & 255)) $((n >> 8 & 255)) $((n >> 16 & 255)) $((n >> 24 & 255)))" >>"$out"
        cat "$f" >>"$out"
    done
}
frame "$corpus/ct_frame/sts001_native_x3" "$data"/STS_001/image/00000{0,1,2}.dcm
frame "$corpus/ct_frame/sts002_rle_x3" "$data"/encoded/STS_002_rle/0000{10,11,12}.dcm
frame "$corpus/ct_frame/sts002_jpegll_x4" "$data"/encoded/STS_002_jpegll/0000{10,11,12,13}.dcm
frame "$corpus/ct_frame/totalseg_j2k_x2" $(ls "$data"/totalseg_j2k/CT.* | head -n 2)
frame "$corpus/ct_frame/lung_synth_x2" $(ls "$data"/plans/lung_synth/ct/*.dcm | head -n 2)
frame "$corpus/ct_frame/sts002_jpegll_x1" "$data/encoded/STS_002_jpegll/000010.dcm"

# rtstruct: the two smaller real structure sets (STS_001/004 are the same kind, 3x larger,
# and the 2.3 MB plastimatch one is past max_len; large inputs slow every mutation).
cp "$data/STS_002/mask/RS.dcm" "$corpus/rtstruct/sts002_RS.dcm"
cp "$data/STS_003/mask/RS.dcm" "$corpus/rtstruct/sts003_RS.dcm"

# rtplan: every plan, raw (OpenTPS) and pydicom-normalized.
cp "$data"/plans/STS_001/*.dcm "$data"/plans/lung_synth/*.dcm "$corpus/rtplan/"

# spatial_registration: Spatial Registration objects written by dcmtk's dump2dcm from text
# dumps, as tests/spatial_registration.rs builds them (no real one is in tests/data). The
# planning Frame of Reference is ...7777.1 (PLANNING_FOR in the target), the room's ...7777.2.
# sro NAME REGISTERED ITEM... ; ITEM = "FoR_UID|TYPE=m1\m2...\m16|TYPE=..." (matrices in
# order); dump2dcm_flags=... before it passes options to dump2dcm.
sro() {
    local name="$1" registered="$2"
    shift 2
    local dump="$corpus/spatial_registration/$name.dump" class=1.2.840.10008.5.1.4.1.1.66.1
    {
        printf '(0002,0001) OB 00\\01\n(0002,0002) UI [%s]\n(0002,0003) UI [1.2.3.4.5]\n' "$class"
        printf '(0002,0010) UI [1.2.840.10008.1.2.1]\n(0008,0016) UI [%s]\n(0008,0018) UI [1.2.3.4.5]\n' "$class"
        printf '(0008,0060) CS [REG]\n(0010,0020) LO [STS_001]\n(0020,000d) UI [1.2.3.4.6]\n'
        printf '(0020,000e) UI [1.2.3.4.7]\n(0020,0052) UI [%s]\n(0070,0308) SQ (Sequence)\n' "$registered"
        local item uid m parts
        for item in "$@"; do
            IFS='|' read -r -a parts <<<"$item"
            uid="${parts[0]}"
            printf '(fffe,e000) na (Item)\n(0020,0052) UI [%s]\n(0070,0309) SQ (Sequence)\n' "$uid"
            printf '(fffe,e000) na (Item)\n(0070,030a) SQ (Sequence)\n'
            for m in "${parts[@]:1}"; do
                printf '(fffe,e000) na (Item)\n(3006,00c6) DS [%s]\n(0070,030c) CS [%s]\n' "${m#*=}" "${m%%=*}"
                printf '(fffe,e00d) na (ItemDelimitationItem)\n'
            done
            printf '(fffe,e0dd) na (SequenceDelimitationItem)\n(fffe,e00d) na (ItemDelimitationItem)\n'
            printf '(fffe,e0dd) na (SequenceDelimitationItem)\n(fffe,e00d) na (ItemDelimitationItem)\n'
        done
        printf '(fffe,e0dd) na (SequenceDelimitationItem)\n'
    } >"$dump"
    # shellcheck disable=SC2086 # extra dump2dcm options, word-split on purpose
    dump2dcm --quiet ${dump2dcm_flags:-} "$dump" "$corpus/spatial_registration/$name.dcm"
    rm "$dump"
}
planning=1.2.826.0.1.3680043.9.7777.1
room=1.2.826.0.1.3680043.9.7777.2
identity='1\0\0\0\0\1\0\0\0\0\1\0\0\0\0\1'
# room -> planning: a quarter turn about z and a shift (10, 20, 30) mm
quarter='0\-1\0\10\1\0\0\20\0\0\1\30\0\0\0\1'
# the planning CT registered; an identity item for it and the room mapped into it
sro planning_registered "$planning" "$planning|RIGID=$identity" "$room|RIGID=$quarter"
# the same in implicit VR little endian with undefined lengths, the other way to frame it
dump2dcm_flags="+ti -e" sro planning_registered_implicit_undefined "$planning" \
    "$planning|RIGID=$identity" "$room|RIGID=$quarter"
# the room registered (no item of its own); one item mapping the planning CT into it
sro room_registered "$room" "$planning|RIGID=0\1\0\-20\-1\0\0\10\0\0\1\-30\0\0\0\1"
# one item with two matrices applied in order: the turn, then the shift
sro two_matrices "$planning" \
    "$room|RIGID=0\-1\0\0\1\0\0\0\0\0\1\0\0\0\0\1|AFFINE=1\0\0\10\0\1\0\20\0\0\1\30\0\0\0\1"

# config: the minimal config of src/config.rs's unit test, and one that sets every section.
cat >"$corpus/config/minimal.toml" <<'TOML'
[planning]
ct = "ct"
structures = "RS.dcm"
roi = "GTV"
plan = "RP.dcm"

[source]
kind = "scp"
bind = "127.0.0.1:11112"

[link]
key_file = "link.key"

[audit]
path = "audit/session.audit"
TOML
cat >"$corpus/config/full.toml" <<'TOML'
[planning]
ct = "ct"
structures = "RS.dcm"
roi = "GTV_Mass_CT"
plan = "RP.dcm"
range_mode = "energy"
default_sad_mm = [6500.0, 6000.0]
patient_id = "STS_001"

[source]
kind = "spool"
dir = "ct"
expected_slices = 120
poll_ms = 20
assembly_timeout_ms = 2000

[link]
destination = "127.0.0.1:47800"
local = "127.0.0.1:0"
key_file = "link.key"
heartbeat_ms = 20
ack_timeout_ms = 100
max_datagram_bytes = 1400

[audit]
path = "audit/session.audit"
corrections = "full"

[timing]
budget_ms = 50.0
validity_ms = 200.0

[limits]
max_lateral_mm = 3.0
max_range_mm = 5.0
max_jump_mm = 2.0
min_ncc = 0.9

[registration]
margin_mm = 20.0
threads = 1

[resources]
max_slices = 512
max_frame_voxels = 67108864
max_object_bytes = 67108864
max_plan_spots = 100000
TOML

du -sh "$corpus"/*

# rtrecord: the small treatment record tests/rtrecord.rs keeps in step with the writer.
cp "$data/records/RT_small.dcm" "$corpus/rtrecord/rt_small.dcm"
