#!/usr/bin/env bash
# Vendor the offline wheels for the Kaggle notebook: `make wheels`.
#
# From wheels/requirements.lock (exact pins + sha256, enforced by pip --require-hashes) download
# binary wheels for CPython 3.12 (the Kaggle image) and 3.11 (this repository's simulation),
# manylinux x86_64; build vesukit's own wheel reproducibly; check every wheel's tags against
# the targets and the lock; write wheels/ ready for
#     kaggle datasets create -p wheels      (first time; then: kaggle datasets version -p wheels)
# wheels/ holds only what the Kaggle image can use (cp312, abi3 and pure wheels); the cp311-only
# wheels go to a local folder (build/wheels-cp311, $LOCAL_OUT) that `make kaggle-sim` adds to
# its simulated dataset and that is never uploaded.
# Same lock -> same files: the folders are rebuilt from scratch and each SHA256SUMS lists every
# file of its folder.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
OUT=${OUT:-wheels}
LOCAL_OUT=${LOCAL_OUT:-build/wheels-cp311}
LOCK=wheels/requirements.lock
PYTHONS=${PYTHONS:-"3.12 3.11"}
GLIBC=${GLIBC:-2.35}   # the Kaggle image is Ubuntu 22.04

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# pip takes --platform literally: list every manylinux tag the image's glibc accepts.
platforms=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for minor in $(seq 5 "${GLIBC#*.}"); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done

for version in $PYTHONS; do
    echo "build_wheels: downloading pinned wheels for CPython $version"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --require-hashes --implementation cp --python-version "$version" \
        "${platforms[@]}" \
        -r "$LOCK" -d "$stage/wheels"
done

# vesukit itself, from a clean copy of the sources (no stale build/ files can slip in), with
# every timestamp pinned to the last commit so the same commit gives the same wheel.
echo "build_wheels: building the vesukit wheel"
mkdir -p "$stage/src"
tar --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md src \
    | tar -xf - -C "$stage/src"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 315532800)}
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$stage/wheels" "$stage/src"

# The notebook loads the installer by path, before anything is installed.
cp src/vesukit/bootstrap.py "$stage/wheels/vesukit_bootstrap.py"

pythons=()
for version in $PYTHONS; do pythons+=(--python "$version"); done
"$PY" src/vesukit/bootstrap.py check-tags "$stage/wheels" "${pythons[@]}" --glibc "$GLIBC" \
    --lock "$LOCK"

# Wheels built for CPython 3.11 alone serve only this repository's simulation: set them apart.
mkdir -p "$stage/cp311"
for wheel in "$stage/wheels"/*-cp311-cp311-*.whl; do
    [ -e "$wheel" ] && mv "$wheel" "$stage/cp311/"
done

# Replace the old wheels only now that the new set is complete and checked, holding the folder's
# lock: a running `make kaggle-sim` snapshots the folders under the same lock.
mkdir -p "$OUT" "$LOCAL_OUT"
exec 9<"$OUT"
flock 9
rm -f "$OUT"/*.whl "$OUT"/vesukit_bootstrap.py "$OUT"/SHA256SUMS "$LOCAL_OUT"/*.whl "$LOCAL_OUT"/SHA256SUMS
cp "$stage/wheels"/*.whl "$stage/wheels/vesukit_bootstrap.py" "$OUT"/
[ "$OUT/requirements.lock" -ef "$LOCK" ] || cp "$LOCK" "$OUT"/
(cd "$OUT" && sha256sum -- *.whl vesukit_bootstrap.py > SHA256SUMS)
if compgen -G "$stage/cp311/*.whl" >/dev/null; then
    cp "$stage/cp311"/*.whl "$LOCAL_OUT"/
    (cd "$LOCAL_OUT" && sha256sum -- *.whl > SHA256SUMS)
fi
PYTHONPATH=src "$PY" -m vesukit.kernelgen dataset-metadata "$OUT"
echo "build_wheels: $(ls "$LOCAL_OUT"/*.whl 2>/dev/null | wc -l) cp311-only wheels in $LOCAL_OUT (local, for make kaggle-sim)"
echo "build_wheels: $(ls "$OUT"/*.whl | wc -l) wheels in $OUT ($(du -sh "$OUT" | cut -f1)); upload:"
echo "    kaggle datasets create -p $OUT   (or: kaggle datasets version -p $OUT -m 'new wheels')"
